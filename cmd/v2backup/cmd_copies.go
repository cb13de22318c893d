package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/jobs/copies"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

type copiesOptions struct {
	At   string
	JSON bool
}

func init() { commands = append(commands, newCopiesCommand) }

func newCopiesCommand(g *globalOptions) *cobra.Command {
	var o copiesOptions
	c := &cobra.Command{
		Use:   "copies APP [--at DATE] [--json]",
		Short: "Where the copies of an application's nights are, with digests and verification dates",
		Long: `Lists, for each night of APP (newest first), every copy this server's
catalogs know of: the host's own snapshot, each copy this backup server
pulled, and each off-site drive holding one of those snapshots, with the
snapshot's name, files, size, the application's digest and when the copy
was last verified.

The digest is a SHA-256 over the application's file list (relative paths
and their SHA-256): equal digests mean the same files with the same
content; a night whose copies differ is marked MISMATCH.

On a host, the host's catalog answers (its snapshots and its drives). On a
backup server, the catalog the host shipped with its last good pull
(remote/{host}/CATALOG.db) answers for the host, and the backup server's
own catalog for its pulls and drives.

--at is a day (2026-11-28) or a snapshot name (2026-11-28T050000). Exit 1
if no copy of that night exists.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runCopies(cmd.Context(), g, args[0], o) },
	}
	c.Flags().StringVar(&o.At, "at", "", "only this night: a day (2026-11-28) or a snapshot name")
	c.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	return c
}

func runCopies(ctx context.Context, g *globalOptions, appName string, o copiesOptions) error {
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return err
	}
	app, ok := inv.App(appName)
	if !ok {
		return usagef("copies: %s: no application %q (see v2backup inventory)", inv.File, appName)
	}
	own, err := openCatalog(g, inv, server)
	if err != nil {
		return err
	}
	defer own.Close()
	fo := copies.Options{Inventory: inv, App: appName, At: o.At, Own: own}
	switch {
	case app.Server == server:
		fo.HostDB = own
	case pulls(inv, server, app):
		host, path, err := openHostCatalog(inv, server, app.Server)
		switch {
		case err != nil:
			return err
		case host == nil:
			fmt.Fprintf(g.stderr, "v2backup: no catalog of %s at %s yet (shipped with each good pull): only this server's copies are listed\n", app.Server, path)
		default:
			defer host.Close()
			fo.HostDB = host
		}
	default:
		return usagef("copies: application %s runs on %s, which %s neither is nor pulls (%s; use --server)", appName, app.Server, server, inv.File)
	}
	nights, err := copies.Find(ctx, fo)
	switch {
	case errors.Is(err, copies.ErrBadAt):
		return usageError{err.Error()}
	case err != nil:
		return err
	}
	if o.JSON {
		if nights == nil {
			nights = []copies.Night{}
		}
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(nights)
	}
	if len(nights) == 0 {
		fmt.Fprintf(g.stdout, "no copies of %s known yet\n", appName)
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NIGHT\tCOPY\tWHERE\tSNAPSHOT\tSTATE\tFILES\tSIZE\tDIGEST\tVERIFIED")
	for _, n := range nights {
		for _, c := range n.Copies {
			ver := "never verified"
			if !c.VerifiedAt.IsZero() {
				ver = c.VerifiedAt.Local().Format("2006-01-02 15:04")
			}
			where := c.Where
			if c.DriveUUID != "" {
				where += " (" + c.DriveUUID + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", n.Snapshot, c.Kind, where, c.Snapshot, c.State,
				c.Files, report.HumanBytes(c.Bytes), short(c.Digest), ver)
		}
		if n.Mismatch {
			fmt.Fprintf(tw, "%s\tMISMATCH\tthe copies of this night differ: compare their digests\t\t\t\t\t\t\n", n.Snapshot)
		}
	}
	return tw.Flush()
}

// pulls reports whether server is a backup server that pulls app's host.
func pulls(inv *inventory.Inventory, server tiers.Server, app *inventory.App) bool {
	bs, ok := inv.BackupServer(server)
	return ok && slices.Contains(bs.Pulls, app.Server)
}

// short is a digest's first 16 hex digits, enough to compare by eye.
func short(d string) string {
	if len(d) > 16 {
		return d[:16]
	}
	return d
}
