package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/jobs/metrics"
	"github.com/softxs/v2backup/tiers/inventory"
)

type metricsOptions struct {
	Textfile string
}

func init() { commands = append(commands, newMetricsCommand) }

func newMetricsCommand(g *globalOptions) *cobra.Command {
	var o metricsOptions
	c := &cobra.Command{
		Use:   "metrics [--textfile DIR]",
		Short: "Write the backups' Prometheus metrics for node_exporter's textfile collector",
		Long: `Builds the same report as status (and, on a backup server, one per pulled
host, from the catalog shipped with its last pull) and prints it in
Prometheus's text format, or with --textfile writes DIR/` + metrics.TextfileName + `
atomically for node_exporter's textfile collector
(--collector.textfile.directory=DIR). Run it from a timer on a host, and
after the pulls on a backup server.

The metrics are those of the daemon's /metrics minus its live counters
(catalog queue, FUSE requests); see the README. If a catalog cannot be read,
v2backup_scrape_error 1 is still written and the command exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runMetrics(cmd.Context(), g, o) },
	}
	c.Flags().StringVar(&o.Textfile, "textfile", "", "write DIR/"+metrics.TextfileName+" instead of printing")
	return c
}

func runMetrics(ctx context.Context, g *globalOptions, o metricsOptions) error {
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return err
	}
	if !inv.IsHost(server) && !inv.IsBackupServer(server) {
		return usagef("metrics: %s is neither a host nor a backup server in %s (use --server)", server, inv.File)
	}
	db, err := openCatalog(g, inv, server)
	if err != nil {
		return err
	}
	defer db.Close()
	src := reportSource(func() *inventory.Inventory { return inv }, server, db)
	if o.Textfile != "" {
		return metrics.WriteTextfile(ctx, o.Textfile, src)
	}
	return metrics.WriteText(ctx, g.stdout, src)
}
