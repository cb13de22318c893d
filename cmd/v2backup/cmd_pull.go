package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/jobs/nightly"
	"github.com/softxs/v2backup/jobs/pull"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
)

type pullOptions struct {
	FullVerify bool
}

func init() { commands = append(commands, newPullCommand) }

func newPullCommand(g *globalOptions) *cobra.Command {
	var o pullOptions
	c := &cobra.Command{
		Use:   "pull [SERVER...]",
		Short: "On a backup server: pull hosts' remote views over ssh, verify, snapshot",
		Long: `Runs on a backup server (--server). For each host the inventory gives it
(or those named), rsyncs the host's read-only remote view over ssh (host keys
checked) into a staging tree hard-linked to the previous copy, verifies every
file against the pulled SHA256SUMS, and only then switches it into
{partition}/remote/{server} atomically: a failed or partial pull never
replaces the last good copy. Records each pull in the catalog, snapshots the
remote tier, writes history files per host and application, and applies
the remote tier's retention. Exits 1 if any host failed.`,
		RunE: func(cmd *cobra.Command, args []string) error { return runPull(cmd.Context(), g, o, args) },
	}
	c.Flags().BoolVar(&o.FullVerify, "full-verify", false, "re-read every file, also those hard-linked to the last verified copy")
	return c
}

func runPull(ctx context.Context, g *globalOptions, o pullOptions, args []string) error {
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return err
	}
	if !inv.IsBackupServer(server) {
		return usagef("pull: %s is not a backup server in %s (use --server)", server, inv.File)
	}
	var only []tiers.Server
	for _, a := range args {
		s, err := tiers.ParseServer(a)
		if err != nil {
			return usagef("pull: %v", err)
		}
		only = append(only, s)
	}
	opts, err := pull.FromInventory(inv, server, only)
	if err != nil {
		return usagef("pull: %v", err)
	}
	db, err := openCatalog(g, inv, server)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.UpsertApplications(ctx, catalogApps(inv)); err != nil {
		return err
	}
	opts.DB, opts.Logger, opts.FullVerify = db, g.log, o.FullVerify
	rep, err := pull.Run(ctx, opts)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSNAPSHOT\tFILES\tSIZE\tREAD\tTIME\tRESULT")
	failed := 0
	for _, r := range rep.Results {
		res := "ok"
		if !r.OK() {
			failed++
			res = r.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\n", r.Server, r.Snapshot, r.Files, report.HumanBytes(r.Bytes), r.Hashed, r.Duration.Round(time.Millisecond), res)
	}
	tw.Flush()
	if rep.Snapshot != "" {
		fmt.Fprintf(g.stdout, "remote tier snapshot %s\n", rep.Snapshot)
		ro := nightly.Options{Inv: inv, Server: server, Tier: tiers.Remote, DB: db, Logger: g.log}
		pruned, err := nightly.Retain(ctx, ro, false)
		if err != nil {
			return err
		}
		for _, p := range pruned {
			fmt.Fprintf(g.stdout, "pruned %s\n", p.Name)
		}
		if len(pruned) > 0 {
			if _, err := nightly.Purge(ctx, inv, server, tiers.Remote); err != nil {
				return err
			}
		}
	}
	if failed > 0 {
		return exitCodeError{code: exitFailed, err: fmt.Errorf("%d of %d pulls failed; the last good copies are kept", failed, len(rep.Results))}
	}
	return nil
}
