package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// The questions the catalog answers: diff, find, history.

type queryOptions struct {
	Tier string
}

func init() { commands = append(commands, newDiffCommand, newFindCommand, newHistoryCommand) }

// query is what the catalog questions work on.
type query struct {
	inv    *inventory.Inventory
	server tiers.Server
	tier   tiers.Tier
	db     *catalog.DB
}

// openQuery loads the inventory, picks the tier (--tier, or the server's
// own) and opens the server's catalog.
func (g *globalOptions) openQuery(tierFlag string) (*query, error) {
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return nil, err
	}
	tier, err := tierFor(inv, server, tierFlag)
	if err != nil {
		return nil, err
	}
	db, err := openCatalog(g, inv, server)
	if err != nil {
		return nil, err
	}
	return &query{inv, server, tier, db}, nil
}

func newDiffCommand(g *globalOptions) *cobra.Command {
	var o queryOptions
	c := &cobra.Command{
		Use:   "diff SNAP1 SNAP2 [APP]",
		Short: "What was added, removed and changed between two snapshots",
		Long: `Compares two snapshots' manifests in the catalog and prints one line per
difference: "+ path" added, "- path" removed, "M path" changed (size or
content), with sizes. With APP only that application's files.`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error { return runDiff(cmd.Context(), g, o, args) },
	}
	c.Flags().StringVar(&o.Tier, "tier", "", "local or remote")
	return c
}

func runDiff(ctx context.Context, g *globalOptions, o queryOptions, args []string) error {
	q, err := g.openQuery(o.Tier)
	if err != nil {
		return err
	}
	defer q.db.Close()
	inv, server, tier, db := q.inv, q.server, q.tier, q.db
	prefix := ""
	if len(args) == 3 {
		if prefix, err = appTierPrefix(inv, server, tier, args[2]); err != nil {
			return err
		}
	}
	a, err := db.SnapshotByName(ctx, tier, string(server), args[0])
	if err != nil {
		return err
	}
	b, err := db.SnapshotByName(ctx, tier, string(server), args[1])
	if err != nil {
		return err
	}
	d, err := db.DiffSnapshots(ctx, a.ID, b.ID, prefix)
	if err != nil {
		return err
	}
	for _, e := range d.Added {
		fmt.Fprintf(g.stdout, "+ %s (%s)\n", e.Path, report.HumanBytes(e.Size))
	}
	for _, e := range d.Removed {
		fmt.Fprintf(g.stdout, "- %s (%s)\n", e.Path, report.HumanBytes(e.Size))
	}
	for _, c := range d.Changed {
		fmt.Fprintf(g.stdout, "M %s (%s -> %s)\n", c.New.Path, report.HumanBytes(c.Old.Size), report.HumanBytes(c.New.Size))
	}
	fmt.Fprintf(g.stdout, "%s -> %s: %d added, %d removed, %d changed\n", a.Name, b.Name, len(d.Added), len(d.Removed), len(d.Changed))
	return nil
}

func newFindCommand(g *globalOptions) *cobra.Command {
	var o queryOptions
	c := &cobra.Command{
		Use:   "find PATTERN",
		Short: "In which snapshots a path existed, with size and hash",
		Long: `Lists every complete snapshot holding a path that matches PATTERN (a path
relative to the tier root such as web/demo.softxs.ch/hydro/db/x.sql.gz, or a
shell glob where * also matches /), oldest first, with size, mtime and SHA-256.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runFind(cmd.Context(), g, o, args[0]) },
	}
	c.Flags().StringVar(&o.Tier, "tier", "", "local or remote")
	return c
}

func runFind(ctx context.Context, g *globalOptions, o queryOptions, pattern string) error {
	q, err := g.openQuery(o.Tier)
	if err != nil {
		return err
	}
	defer q.db.Close()
	server, tier, db := q.server, q.tier, q.db
	vs, err := db.PathHistory(ctx, tier, string(server), pattern)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SNAPSHOT\tPATH\tSIZE\tMTIME\tSHA256")
	for _, v := range vs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", v.Snapshot.Name, v.Entry.Path, v.Entry.Size, v.Entry.MTime.Format("2006-01-02 15:04:05"), v.Entry.SHA256)
	}
	tw.Flush()
	if len(vs) == 0 {
		return exitCodeError{code: exitFailed, err: fmt.Errorf("find: no snapshot of the %s tier holds %q", tier, pattern)}
	}
	return nil
}

func newHistoryCommand(g *globalOptions) *cobra.Command {
	var o queryOptions
	c := &cobra.Command{
		Use:   "history APP",
		Short: "Files and MB of an application per night",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return runHistory(cmd.Context(), g, o, args[0]) },
	}
	c.Flags().StringVar(&o.Tier, "tier", "", "local or remote")
	return c
}

func runHistory(ctx context.Context, g *globalOptions, o queryOptions, name string) error {
	q, err := g.openQuery(o.Tier)
	if err != nil {
		return err
	}
	defer q.db.Close()
	inv, server, tier, db := q.inv, q.server, q.tier, q.db
	if _, err := appTierPrefix(inv, server, tier, name); err != nil {
		return err
	}
	hist, err := db.AppHistory(ctx, tier, string(server), name)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SNAPSHOT\tSTATE\tFILES\tMB")
	for _, h := range hist {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\n", h.Snapshot.Name, h.State, h.Files, float64(h.Bytes)/1e6)
	}
	return tw.Flush()
}
