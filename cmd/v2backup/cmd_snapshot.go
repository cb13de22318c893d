package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/jobs/nightly"
	"github.com/softxs/v2backup/jobs/report"
)

type snapshotOptions struct {
	Tier   string
	Wait   bool
	DryRun bool
}

func init() { commands = append(commands, newSnapshotCommand) }

func newSnapshotCommand(g *globalOptions) *cobra.Command {
	var o snapshotOptions
	c := &cobra.Command{
		Use:   "snapshot [--tier local|remote] [--wait] [--dry-run]",
		Short: "Take a snapshot of a tier now, write history files and apply retention",
		Long: `Makes a hard-link snapshot of the tier directory ({partition}/local on a
host, {partition}/remote on a backup server) as
{partition}/snapshots/{tier}/{yyyy-mm-ddTHHMMSS}, built under a temporary name
and renamed into place once complete and synced. Its manifest goes into the
catalog, reusing known hashes; history files are written for each
application; retention prunes old snapshots. --dry-run takes no snapshot
and only lists what retention would delete.

An application whose backup job is still running or failed, or that was
written to within the quiet time, is taken from its last complete state and
marked so. With --wait the command first waits for such applications until
the inventory's deadline, as the daemon's nightly run does.
Two runs never overlap: the second waits for the first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runSnapshot(cmd.Context(), g, o) },
	}
	c.Flags().StringVar(&o.Tier, "tier", "", "local or remote (default: local on a host, remote on a backup server)")
	c.Flags().BoolVar(&o.Wait, "wait", false, "wait for unfinished backups until the deadline")
	c.Flags().BoolVar(&o.DryRun, "dry-run", false, "list the snapshots retention would delete, delete none")
	return c
}

func runSnapshot(ctx context.Context, g *globalOptions, o snapshotOptions) error {
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return err
	}
	tier, err := tierFor(inv, server, o.Tier)
	if err != nil {
		return err
	}
	db, err := openCatalog(g, inv, server)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.UpsertApplications(ctx, catalogApps(inv)); err != nil {
		return err
	}
	opts := nightly.Options{Inv: inv, Server: server, Tier: tier, DB: db, Wait: o.Wait, Logger: g.log}
	if o.DryRun {
		pruned, err := nightly.Retain(ctx, opts, true)
		for _, p := range pruned {
			fmt.Fprintf(g.stdout, "would prune %s\n", p.Name)
		}
		if err == nil && len(pruned) == 0 {
			fmt.Fprintln(g.stdout, "retention keeps every snapshot")
		}
		return err
	}
	rep, err := nightly.Run(ctx, opts)
	if rep != nil {
		printSnapshotReport(g, rep)
	}
	if err != nil {
		return err
	}
	if len(rep.Pruned) > 0 {
		if _, err := nightly.Purge(ctx, inv, server, tier); err != nil {
			return err
		}
	}
	return nil
}

func printSnapshotReport(g *globalOptions, rep *nightly.Report) {
	if r := rep.Result; r != nil {
		fmt.Fprintf(g.stdout, "snapshot %s: %d files, %s, %d hashes reused, %d files hashed, in %s\n",
			rep.Snapshot, r.Files, report.HumanBytes(r.Bytes), r.Reused, r.Hashed, r.Elapsed.Round(time.Millisecond))
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tSTATE\tFILES\tSIZE\tCHANGED\tWHY")
	for _, a := range rep.Apps {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", a.App, a.State, a.Files, report.HumanBytes(a.Bytes), a.Changed, a.Why)
	}
	tw.Flush()
	for _, p := range rep.Pruned {
		fmt.Fprintf(g.stdout, "pruned %s\n", p.Name)
	}
}
