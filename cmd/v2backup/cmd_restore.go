package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/jobs"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/snapshot"
)

type restoreOptions struct {
	At        string
	To        string
	DB        string
	History   string
	Overwrite bool
}

func init() { commands = append(commands, newRestoreCommand) }

func newRestoreCommand(g *globalOptions) *cobra.Command {
	var o restoreOptions
	c := &cobra.Command{
		Use:   "restore APP [--at SNAPSHOT] --to DIR [--db NAME]",
		Short: "Bring back an application's files and database from a snapshot",
		Long: `Copies an application's files from the latest snapshot (or --at SNAPSHOT)
to DIR with rsync, never following a symlink out of the snapshot, and with
--db loads its newest database dump into the database NAME (created if
missing), so an instance can be restored in place or duplicated.

On a host the snapshot comes from {partition}/snapshots/local; inside a VM,
from the mount's history (--history, default {guest_dir}/.history).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runRestore(cmd.Context(), g, o, args[0]) },
	}
	c.Flags().StringVar(&o.At, "at", "", "snapshot name, e.g. 2026-11-28T050000 (default: the latest)")
	c.Flags().StringVar(&o.To, "to", "", "destination directory (required)")
	c.Flags().StringVar(&o.DB, "db", "", "load the newest dump into this database")
	c.Flags().StringVar(&o.History, "history", "", "a history directory holding {snapshot}/{relpath} (inside a VM)")
	c.Flags().BoolVar(&o.Overwrite, "overwrite", false, "allow a non-empty destination and a database with tables")
	return c
}

func runRestore(ctx context.Context, g *globalOptions, o restoreOptions, name string) error {
	if o.To == "" {
		return usagef("restore: --to DIR is required")
	}
	inv, err := g.loadInventory()
	if err != nil {
		return err
	}
	a, ok := inv.App(name)
	if !ok {
		return usagef("restore: no application %q in %s", name, inv.File)
	}
	// Where the snapshots are: the host's snapshot directory (a tier
	// snapshot holds {vm}/{relpath}) or a VM's history (holds {relpath}).
	snapDir := inv.Partition(a.Server).SnapshotDir(tiers.Local)
	sub := tiers.TierPath(a.VM, a.Relpath)
	if o.History != "" || !exists(snapDir) {
		snapDir = o.History
		if snapDir == "" {
			snapDir = filepath.Join(jobs.TargetDir(inv, a), ".history")
		}
		sub = string(a.Relpath)
	}
	snap := o.At
	if snap == "" {
		list, err := snapshot.List(snapDir)
		if err != nil {
			return fmt.Errorf("restore %s: listing snapshots in %s: %w", name, snapDir, err)
		}
		if len(list) == 0 {
			return fmt.Errorf("restore %s: no snapshot in %s", name, snapDir)
		}
		snap = list[len(list)-1].Name
	} else if _, err := snapshot.ParseName(snap); err != nil {
		return usagef("restore: --at: %v", err)
	}
	src := filepath.Join(snapDir, snap, sub)
	ro := jobs.RestoreOptions{Source: src, Dest: o.To, Database: o.DB, Overwrite: o.Overwrite, Logger: g.log, Progress: jobs.ProgressTo(os.Stderr)}
	res, err := jobs.Restore(ctx, a, ro)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%s: restored %d files (%s) from snapshot %s to %s\n", name, res.Files, report.HumanBytes(res.Bytes), snap, o.To)
	if res.Dump != "" {
		fmt.Fprintf(g.stdout, "%s: loaded %s into database %s\n", name, res.Dump, res.Database)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
