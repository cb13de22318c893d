package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/jobs/check"
	"github.com/softxs/v2backup/tiers/inventory"
)

// dumpCacheName is the file, next to the catalog, where check remembers
// which dumps it has read whole.
const dumpCacheName = "check-dumps.json"

type checkOptions struct {
	Apps             []string
	WarnAge, CritAge string
	JSON             bool
}

func init() { commands = append(commands, newCheckCommand) }

func newCheckCommand(g *globalOptions) *cobra.Command {
	var o checkOptions
	c := &cobra.Command{
		Use:   "check [--app APP]... [--warn-age D] [--crit-age D] [--json]",
		Short: "Nagios/Icinga plugin: every application's backup against its expectations",
		Long: `Evaluates the expectations of every application of this host ([site.expect]
and [app.expect] in the inventory), or on a backup server of every host it
pulls (from the catalog each host shipped with its last good pull), and
prints the result as a Nagios/Icinga plugin:

  V2BACKUP CRITICAL - 1 critical, 0 warning in 15 applications on 1 server; ... | 'hydro_age'=3600s;93600;180000;0 'hydro_files'=1234;;;0 'hydro_bytes'=5678B;;;0 ...
  CRITICAL zg-3.softxs.ch hydro: the backup run started 2026-11-29 02:30 failed: ...

then one line per problem. Exit status: 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN (unreadable inventory or catalog, unknown --app, bad flags).

--app (repeatable) checks only those applications, and leaves out the
off-site drives and pulls. --warn-age and --crit-age (Go durations, e.g.
26h) replace every application's warn_age and crit_age. The README's
"check" section lists every rule and its boundary.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknown(g, fmt.Errorf("check takes no arguments, got %q (use --app)", args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return runCheck(cmd.Context(), g, o) },
	}
	// A plugin's bad flags are UNKNOWN, not the usual usage error.
	c.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return unknown(g, err) })
	c.Flags().StringArrayVar(&o.Apps, "app", nil, "check only this application (repeatable)")
	c.Flags().StringVar(&o.WarnAge, "warn-age", "", "warning age of the last success for every application, e.g. 26h")
	c.Flags().StringVar(&o.CritAge, "crit-age", "", "critical age of the last success for every application, e.g. 50h")
	c.Flags().BoolVar(&o.JSON, "json", false, "print the result as JSON (same exit status)")
	return c
}

// unknown prints the UNKNOWN plugin line and makes the exit status 3.
func unknown(g *globalOptions, err error) error {
	check.WriteUnknown(g.stdout, err)
	return exitCodeError{code: int(check.Unknown)}
}

func runCheck(ctx context.Context, g *globalOptions, o checkOptions) error {
	warn, err := parseAge("--warn-age", o.WarnAge)
	if err != nil {
		return unknown(g, err)
	}
	crit, err := parseAge("--crit-age", o.CritAge)
	if err != nil {
		return unknown(g, err)
	}
	inv, err := inventory.Load(g.Config)
	if err != nil {
		return unknown(g, err)
	}
	server, err := g.server()
	if err != nil {
		return unknown(g, err)
	}
	if !inv.IsHost(server) && !inv.IsBackupServer(server) {
		return unknown(g, fmt.Errorf("%s is neither a host nor a backup server in %s (use --server)", server, inv.File))
	}
	// check only reads: it must not create an empty catalog where there is none.
	if _, err := os.Stat(inv.CatalogPath(server)); err != nil {
		return unknown(g, fmt.Errorf("catalog of %s: %w (has v2backup serve or a job run here yet?)", server, err))
	}
	db, err := openCatalog(g, inv, server)
	if err != nil {
		return unknown(g, err)
	}
	defer db.Close()
	reports, err := reportSource(func() *inventory.Inventory { return inv }, server, db)(ctx)
	if err != nil {
		return unknown(g, err)
	}
	res, err := check.Evaluate(ctx, reports, check.Options{Inventory: inv, Server: server, Apps: o.Apps, WarnAge: warn, CritAge: crit,
		DumpCache: filepath.Join(filepath.Dir(inv.CatalogPath(server)), dumpCacheName), Log: g.log})
	if err != nil {
		return unknown(g, err)
	}
	if o.JSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		err = res.WriteNagios(g.stdout)
	}
	if err != nil {
		return unknown(g, err)
	}
	if res.Status == check.OK {
		return nil
	}
	return exitCodeError{code: int(res.Status)}
}

// parseAge parses an age flag: a Go duration, not negative; "" is none.
func parseAge(flag, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q: want a positive duration such as 26h or 90m", flag, s)
	}
	return d, nil
}
