package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/jobs/report"
)

type statusOptions struct {
	JSON bool
}

func init() { commands = append(commands, newStatusCommand) }

func newStatusCommand(g *globalOptions) *cobra.Command {
	var o statusOptions
	c := &cobra.Command{
		Use:   "status [--json]",
		Short: "The summary table of this host's applications with last success, age, files and size",
		Long: `Prints the seed's summary table for the applications of this server, from
the catalog: last success, its age, live files and size, and a state:

  ok      the last backup succeeded within the warning age (default 26h)
  stale   the last success is older than the warning age
  failed  the latest backup job failed after the last success
  never   no successful backup is recorded

A success is a backup job run that ended ok, or a snapshot that took the
application as complete (for applications written with plain cp or rsync).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runStatus(cmd.Context(), g, o) },
	}
	c.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	return c
}

func runStatus(ctx context.Context, g *globalOptions, o statusOptions) error {
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return err
	}
	if err := hostOnly(inv, server, "status"); err != nil {
		return err
	}
	db, err := openCatalog(g, inv, server)
	if err != nil {
		return err
	}
	defer db.Close()
	rep, err := report.Build(ctx, report.Options{Inventory: inv, Server: server, DB: db})
	if err != nil {
		return err
	}
	if o.JSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep.Apps)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DESCRIPTION\tSERVER\tVM\tRELPATH\tTYPE\tLAST SUCCESS\tAGE\tFILES\tSIZE\tSTATE")
	for _, r := range rep.Apps {
		last, age := "-", "-"
		if !r.LastSuccess.IsZero() {
			last, age = r.LastSuccess.Format("2006-01-02 15:04"), report.RoundAge(r.Age)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Description, r.Server, r.VM, r.Relpath, r.Type,
			last, age, r.Files, report.HumanBytes(r.Bytes), r.State)
	}
	return tw.Flush()
}
