package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/report"
)

func init() { commands = append(commands, newRescanCommand) }

func newRescanCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "rescan [APP]",
		Short: "Bring the catalog's live files back in line with the local tier on disk",
		Long: `Walks the local tier (or one application's part of it), hashes files whose
size or mtime differ from the catalog, adds files the catalog lacks and
removes rows of files gone from disk. Run it after the daemon reported
dropped catalog events, or after files were changed behind its back.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runRescan(cmd.Context(), g, args) },
	}
}

func runRescan(ctx context.Context, g *globalOptions, args []string) error {
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return err
	}
	if err := hostOnly(inv, server, "rescan"); err != nil {
		return err
	}
	prefix := ""
	if len(args) == 1 {
		if prefix, err = appTierPrefix(inv, server, "local", args[0]); err != nil {
			return err
		}
	}
	db, err := openCatalog(g, inv, server)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.UpsertApplications(ctx, catalogApps(inv)); err != nil {
		return err
	}
	st, err := db.Rescan(ctx, inv.Partition(server).LocalRoot(), catalog.RescanOptions{Prefix: prefix, AppOf: appAttributor(inv, server), Logger: g.log})
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "rescanned %d files: %d unchanged, %d hashed (%s), %d added, %d updated, %d removed, %d skipped (not regular files), %d errors\n",
		st.Files, st.Unchanged, st.Hashed, report.HumanBytes(st.HashedBytes), st.Added, st.Updated, st.Removed, st.Skipped, st.Errors)
	if st.Errors > 0 {
		return fmt.Errorf("rescan: %d files or directories could not be read (see the log)", st.Errors)
	}
	return nil
}
