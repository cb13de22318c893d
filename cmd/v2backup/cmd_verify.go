package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/jobs/verify"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

type verifyOptions struct {
	Snapshot string
	Live     bool
	Tier     string
}

func init() { commands = append(commands, newVerifyCommand) }

func newVerifyCommand(g *globalOptions) *cobra.Command {
	var o verifyOptions
	c := &cobra.Command{
		Use:   "verify [--snapshot NAME | --live] [--tier local|remote] [APP]",
		Short: "Re-read backup files and compare them with the catalog's hashes",
		Long: `Re-reads every file of a snapshot (default: the latest of the tier) and
compares it with the snapshot's manifest in the catalog, or with --live the
live local tier with the catalog's live-file rows. Reports missing, changed,
unreadable, unhashed and uncataloged files, one per line, and exits 1 if
there is any. With APP only that application's files are checked. The tier
defaults to local on a host and remote on a backup server.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runVerify(cmd.Context(), g, o, args) },
	}
	c.Flags().StringVar(&o.Snapshot, "snapshot", "", "snapshot name (default: the latest)")
	c.Flags().BoolVar(&o.Live, "live", false, "verify the live local tier instead of a snapshot")
	c.Flags().StringVar(&o.Tier, "tier", "", "local or remote")
	return c
}

func runVerify(ctx context.Context, g *globalOptions, o verifyOptions, args []string) error {
	if o.Live && o.Snapshot != "" {
		return usagef("verify: --live and --snapshot exclude each other")
	}
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return err
	}
	tier, err := tierFor(inv, server, o.Tier)
	if err != nil {
		return err
	}
	if o.Live && tier != tiers.Local {
		return usagef("verify: --live is for the local tier of a host")
	}
	prefix := ""
	if len(args) == 1 {
		if prefix, err = appTierPrefix(inv, server, tier, args[0]); err != nil {
			return err
		}
	}
	db, err := openCatalog(g, inv, server)
	if err != nil {
		return err
	}
	defer db.Close()
	part := inv.Partition(server)
	opts := verify.Options{Prefix: prefix}
	var snapID int64 // the snapshot verified, 0 for --live
	if o.Live {
		opts.Root = part.LocalRoot()
		opts.Walk = verify.LiveFiles(db, prefix)
	} else {
		snap, ok, err := db.LatestSnapshot(ctx, tier, string(server))
		if o.Snapshot != "" {
			snap, err = db.SnapshotByName(ctx, tier, string(server), o.Snapshot)
			ok = err == nil
		}
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("verify: no %s snapshot of %s in the catalog yet", tier, server)
		}
		opts.Root = part.Snapshot(tier, snap.Name)
		opts.Walk = verify.SnapshotFiles(db, snap.ID, prefix)
		snapID = snap.ID
	}
	rep, err := verify.Run(ctx, opts)
	if err != nil {
		return err
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(g.stdout, p.String())
	}
	fmt.Fprintln(g.stdout, rep.Summary())
	if !rep.OK() {
		return exitCodeError{code: exitFailed}
	}
	if snapID != 0 && prefix == "" {
		// The whole snapshot checked out: `copies` shows this date.
		if err := db.SetSnapshotVerified(ctx, snapID, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// tierFor is the --tier flag, or the natural tier of the server.
func tierFor(inv *inventory.Inventory, server tiers.Server, flag string) (tiers.Tier, error) {
	if flag != "" {
		t, err := tiers.ParseTier(flag)
		if err != nil {
			return "", usagef("--tier: %v", err)
		}
		return t, nil
	}
	switch {
	case inv.IsHost(server):
		return tiers.Local, nil
	case inv.IsBackupServer(server):
		return tiers.Remote, nil
	}
	return "", usagef("%s is neither a host nor a backup server in %s (use --server)", server, inv.File)
}

// appTierPrefix is where app's files lie in the tier of server: its
// "{vm}/{relpath}" on its host, "{host}/{vm}/{relpath}" in a remote tier.
func appTierPrefix(inv *inventory.Inventory, server tiers.Server, tier tiers.Tier, name string) (string, error) {
	a, ok := inv.App(name)
	if !ok {
		return "", usagef("no application %q in %s", name, inv.File)
	}
	p := tiers.TierPath(a.VM, a.Relpath)
	if tier == tiers.Remote {
		return string(a.Server) + "/" + p, nil
	}
	if a.Server != server {
		return "", usagef("application %s runs on %s, not on %s", name, a.Server, server)
	}
	return p, nil
}
