package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
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

// appStatus is one row of the status table.
type appStatus struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Server      string    `json:"server"`
	VM          string    `json:"vm"`
	Relpath     string    `json:"relpath"`
	Type        string    `json:"type"`
	LastSuccess time.Time `json:"last_success,omitempty"`
	Age         string    `json:"age"`
	Files       int64     `json:"files"`
	Bytes       int64     `json:"bytes"`
	State       string    `json:"state"`
	Error       string    `json:"error,omitempty"`
}

// Status states.
const (
	stateOK     = "ok"
	stateStale  = "stale"
	stateFailed = "failed"
	stateNever  = "never"
)

// defaultWarnAge is when a backup counts as stale without an expectation.
const defaultWarnAge = 26 * time.Hour

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
	rows, err := appStatuses(ctx, db, inv, server, time.Now())
	if err != nil {
		return err
	}
	if o.JSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DESCRIPTION\tSERVER\tVM\tRELPATH\tTYPE\tLAST SUCCESS\tAGE\tFILES\tSIZE\tSTATE")
	for _, r := range rows {
		last := "-"
		if !r.LastSuccess.IsZero() {
			last = r.LastSuccess.Format("2006-01-02 15:04")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Description, r.Server, r.VM, r.Relpath, r.Type,
			last, r.Age, r.Files, humanBytes(r.Bytes), r.State)
	}
	return tw.Flush()
}

// appStatuses computes the status of every application of server at now.
func appStatuses(ctx context.Context, db *catalog.DB, inv *inventory.Inventory, server tiers.Server, now time.Time) ([]appStatus, error) {
	totals, err := db.FileTotals(ctx)
	if err != nil {
		return nil, err
	}
	byApp := map[string]catalog.FileTotal{}
	for _, t := range totals {
		byApp[t.App] = t
	}
	var out []appStatus
	for _, a := range inv.AppsOn(server, "") {
		a := a
		r := appStatus{Name: a.Name, Description: a.Description, Server: string(a.Server), VM: string(a.VM),
			Relpath: string(a.Relpath), Type: string(a.Type), Files: byApp[a.Name].Files, Bytes: byApp[a.Name].Bytes}
		if run, ok, err := db.LastSuccess(ctx, a.Name, "backup"); err != nil {
			return nil, err
		} else if ok {
			r.LastSuccess = run.End
		}
		hist, err := db.AppHistory(ctx, tiers.Local, string(server), a.Name)
		if err != nil {
			return nil, err
		}
		for _, h := range hist {
			if h.State == catalog.AppComplete && h.Files > 0 && h.Snapshot.Created.After(r.LastSuccess) {
				r.LastSuccess = h.Snapshot.Created
			}
		}
		runs, err := db.Runs(ctx, a.Name, "backup", 1)
		if err != nil {
			return nil, err
		}
		warn := inv.ExpectFor(&a).WarnAge.Duration
		if warn == 0 {
			warn = defaultWarnAge
		}
		switch {
		case len(runs) > 0 && runs[0].Status == catalog.RunFailed && runs[0].Start.After(r.LastSuccess):
			r.State, r.Error = stateFailed, runs[0].Error
		case r.LastSuccess.IsZero():
			r.State = stateNever
		case now.Sub(r.LastSuccess) > warn:
			r.State = stateStale
		default:
			r.State = stateOK
		}
		r.Age = "-"
		if !r.LastSuccess.IsZero() {
			r.Age = roundAge(now.Sub(r.LastSuccess))
		}
		out = append(out, r)
	}
	return out, nil
}

// roundAge prints a duration the way an operator reads it: 3h05m, 2d4h.
func roundAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0m"
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
