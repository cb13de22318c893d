package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/jobs/offsite"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
)

type offsiteOptions struct {
	To      string
	Label   string
	Servers []string
}

func init() { commands = append(commands, newOffsiteCommand) }

func newOffsiteCommand(g *globalOptions) *cobra.Command {
	var o offsiteOptions
	c := &cobra.Command{
		Use:   "offsite --to DIR [--only SERVER...] | offsite status",
		Short: "Copy tiers to a mounted USB drive and verify them; list the drives",
		Long: `Copies the latest snapshot of this machine's tiers (its own local tier on a
host; every pulled host's copy on a backup server; --only limits to some
servers) to DIR/v2backup/{server}/local/..., verifies the copy against the
manifests, writes SHA256SUMS, CONTENTS.json and a history file on the drive,
and records the drive (filesystem UUID and label) and what it holds in the
catalog. A drive that fills up, turns read-only or disappears mid-copy gives
a clear error and keeps its previous copy usable.

"offsite status" lists every known drive, oldest data first: the order in
which to rotate them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runOffsite(cmd.Context(), g, o) },
	}
	c.Flags().StringVar(&o.To, "to", "", "the drive's mount point (required)")
	c.Flags().StringVar(&o.Label, "label", "", "a name for the drive in the catalog (default: its filesystem label)")
	c.Flags().StringSliceVar(&o.Servers, "only", nil, "copy only these servers' data")
	c.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Each known drive and the date of the data on it",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, args []string) error { return runOffsiteStatus(cmd.Context(), g) },
	})
	return c
}

func runOffsite(ctx context.Context, g *globalOptions, o offsiteOptions) error {
	if o.To == "" {
		return usagef("offsite: --to DIR is required")
	}
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return err
	}
	want := map[tiers.Server]bool{}
	for _, s := range o.Servers {
		want[tiers.Server(s)] = true
	}
	var sources []offsite.Source
	add := func(s tiers.Server, t tiers.Tier) {
		if len(want) == 0 || want[s] {
			sources = append(sources, offsite.Source{Server: s, Tier: t})
		}
	}
	if inv.IsHost(server) {
		add(server, tiers.Local)
	}
	if bs, ok := inv.BackupServer(server); ok {
		for _, h := range bs.Pulls {
			add(h, tiers.Remote)
		}
	}
	if len(sources) == 0 {
		return usagef("offsite: nothing to copy from %s (not a host or backup server in %s, or --only matches nothing)", server, inv.File)
	}
	db, err := openCatalog(g, inv, server)
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := offsite.Copy(ctx, offsite.Options{Drive: o.To, Partition: inv.Partition(server), Sources: sources, DB: db, Label: o.Label, Logger: g.log})
	if err != nil {
		return err
	}
	d := res.Drive
	fmt.Fprintf(g.stdout, "drive %s (uuid %s, label %q)\n", d.Dir, d.UUID, d.Label)
	for _, c := range res.Copies {
		fmt.Fprintf(g.stdout, "  %s: snapshot %s, %d files, %s, verified -> %s\n", c.Source, c.Snapshot, c.Files, report.HumanBytes(c.Bytes), c.Dir)
	}
	return nil
}

func runOffsiteStatus(ctx context.Context, g *globalOptions) error {
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return err
	}
	db, err := openCatalog(g, inv, server)
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := offsite.Status(ctx, db)
	if err != nil {
		return err
	}
	return offsite.WriteStatus(g.stdout, st)
}
