// Package report computes what an operator wants to know about a host's
// backups from its catalog: per application the last success, its age,
// the live files and bytes, the last job run, the trend over the last
// nights, and a state; plus the host's snapshots, the pulls of it and the
// off-site drives. `status`, `check`, the metrics and the status page all
// read this one model, so they never disagree.
package report

import (
	"context"
	"fmt"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// State is an application's backup state, worst last.
type State string

// Application states.
const (
	// OK: the last backup succeeded within the warning age.
	OK State = "ok"
	// Stale: the last success is older than the warning age.
	Stale State = "stale"
	// Failed: the latest backup job failed after the last success.
	Failed State = "failed"
	// Never: no successful backup is recorded.
	Never State = "never"
)

// DefaultWarnAge is when a backup counts as stale without an expectation
// (a nightly backup plus two hours of slack).
const DefaultWarnAge = 26 * time.Hour

// RecentRuns is how many of an application's latest job runs App.Runs
// holds: more than a day's worth for a job run hourly.
const RecentRuns = 50

// DefaultNights is how many nights the trend covers.
const DefaultNights = 30

// Options says whose report to build.
type Options struct {
	Inventory *inventory.Inventory
	// Server is the host whose applications are reported.
	Server tiers.Server
	// DB is that host's catalog: its own on the host, or the copy shipped
	// with the last pull on a backup server. Nil when there is none yet:
	// every application is then Never, and Missing says why.
	DB *catalog.DB
	// Missing explains a nil DB, e.g. "no catalog shipped by a pull yet".
	Missing string
	// Own is the catalog of the machine the report is made on, for the
	// pulls and off-site drives it recorded; nil means DB.
	Own *catalog.DB
	// Now is the time the report is made at; zero means time.Now().
	Now time.Time
	// Nights is the trend's length; 0 means DefaultNights.
	Nights int
}

// Report is the state of one host's backups at one time.
type Report struct {
	Server    string    `json:"server"`
	Generated time.Time `json:"generated"`
	Apps      []App     `json:"apps"`
	// Snapshots are the host's local-tier snapshots.
	Snapshots Snapshots `json:"snapshots"`
	// Pulls are the last pulls of this host recorded in Own (on a backup
	// server), newest first.
	Pulls []catalog.Pull `json:"pulls,omitempty"`
	// Drives are the off-site drives recorded in Own, with their newest copy.
	Drives []Drive `json:"drives,omitempty"`
	// Missing is set when the host's catalog could not be read (Options.Missing).
	Missing string `json:"missing,omitempty"`
}

// Source makes the reports of every host a machine answers for (itself if
// it is a host; each host it pulls if it is a backup server), fresh on each
// call. The daemon's metrics and status page and the check command share it.
type Source func(ctx context.Context) ([]*Report, error)

// App is one application's row.
type App struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Server      string `json:"server"`
	VM          string `json:"vm"`
	Relpath     string `json:"relpath"`
	// Path is where the application lives on its VM or server (the seed's
	// "Local Path").
	Path   string           `json:"path,omitempty"`
	Type   string           `json:"type"`
	Expect inventory.Expect `json:"-"`
	// LastSuccess is the end of the last ok backup run, or the time of the
	// last snapshot that took the application as complete, whichever is
	// later; zero if none.
	LastSuccess time.Time `json:"last_success,omitempty"`
	// Age is Now - LastSuccess, 0 when there is none; AgeSeconds is the
	// same in whole seconds, for JSON readers.
	Age        time.Duration `json:"-"`
	AgeSeconds int64         `json:"age_seconds"`
	// Files and Bytes are the application's live tree in the catalog.
	Files int64 `json:"files"`
	Bytes int64 `json:"bytes"`
	// LastRun is the latest backup job run, nil if the application has
	// none (written with plain cp or rsync).
	LastRun *catalog.Run `json:"last_run,omitempty"`
	// Runs are the latest backup job runs (at most RecentRuns), newest
	// first; check judges finished_by by them.
	Runs []catalog.Run `json:"-"`
	// Trend is the application in the last complete snapshots, oldest first.
	Trend []Night `json:"trend"`
	State State   `json:"state"`
	// Error is the failed run's message when State is Failed.
	Error string `json:"error,omitempty"`
}

// Night is an application's totals in one snapshot.
type Night struct {
	Snapshot string           `json:"snapshot"`
	Created  time.Time        `json:"created"`
	State    catalog.AppState `json:"state"`
	Files    int64            `json:"files"`
	Bytes    int64            `json:"bytes"`
}

// Snapshots summarises a tier's snapshots.
type Snapshots struct {
	Count  int       `json:"count"`
	Latest string    `json:"latest,omitempty"`
	At     time.Time `json:"at,omitempty"`
	Files  int64     `json:"files"`
	Bytes  int64     `json:"bytes"`
}

// Drive is an off-site drive and the newest copy on it.
type Drive struct {
	catalog.Medium
	// Copy is the newest copy on the drive, nil if none was recorded.
	Copy *catalog.Copy `json:"copy,omitempty"`
}

// Build makes the report.
func Build(ctx context.Context, o Options) (*Report, error) {
	if o.Inventory == nil || (o.DB == nil && o.Own == nil) {
		return nil, fmt.Errorf("report of %s: an inventory and a catalog are needed", o.Server)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	nights := o.Nights
	if nights <= 0 {
		nights = DefaultNights
	}
	own := o.Own
	if own == nil {
		own = o.DB
	}
	r := &Report{Server: string(o.Server), Generated: now, Missing: o.Missing}
	if o.DB == nil {
		for _, a := range o.Inventory.AppsOn(o.Server, "") {
			r.Apps = append(r.Apps, App{Name: a.Name, Description: a.Description, Server: string(a.Server), VM: string(a.VM),
				Relpath: string(a.Relpath), Path: a.Path, Type: string(a.Type), Expect: o.Inventory.ExpectFor(&a), State: Never, Error: o.Missing})
		}
	} else if err := r.fromHost(ctx, o, now, nights); err != nil {
		return nil, err
	}
	if err := r.fromOwn(ctx, own); err != nil {
		return nil, err
	}
	return r, nil
}

// fromHost fills in what the host's own catalog knows.
func (r *Report) fromHost(ctx context.Context, o Options, now time.Time, nights int) error {
	totals, err := o.DB.FileTotals(ctx)
	if err != nil {
		return err
	}
	byApp := map[string]catalog.FileTotal{}
	for _, t := range totals {
		byApp[t.App] = t
	}
	hist, err := o.DB.AppHistory(ctx, tiers.Local, string(o.Server), "")
	if err != nil {
		return err
	}
	histOf := map[string][]catalog.SnapshotApp{}
	for _, h := range hist {
		histOf[h.App] = append(histOf[h.App], h)
	}
	for _, a := range o.Inventory.AppsOn(o.Server, "") {
		row, err := buildApp(ctx, o.DB, o.Inventory, a, byApp[a.Name], histOf[a.Name], now, nights)
		if err != nil {
			return err
		}
		r.Apps = append(r.Apps, row)
	}

	snaps, err := o.DB.ListSnapshots(ctx, tiers.Local, string(o.Server))
	if err != nil {
		return err
	}
	for _, s := range snaps {
		if s.State != catalog.SnapshotComplete {
			continue
		}
		r.Snapshots.Count++
		if s.Created.After(r.Snapshots.At) || r.Snapshots.Latest == "" {
			r.Snapshots = Snapshots{Count: r.Snapshots.Count, Latest: s.Name, At: s.Created, Files: s.Files, Bytes: s.Bytes}
		}
	}

	return nil
}

// fromOwn fills in what this machine recorded: pulls of the host, drives.
func (r *Report) fromOwn(ctx context.Context, own *catalog.DB) error {
	var err error
	if r.Pulls, err = own.Pulls(ctx, r.Server, DefaultNights); err != nil {
		return err
	}
	media, err := own.Media(ctx)
	if err != nil {
		return err
	}
	copies, err := own.Copies(ctx, 0)
	if err != nil {
		return err
	}
	for _, m := range media {
		d := Drive{Medium: m}
		for i := range copies { // oldest first: the last match is the newest
			if copies[i].MediaID == m.ID {
				d.Copy = &copies[i]
			}
		}
		r.Drives = append(r.Drives, d)
	}
	return nil
}

func buildApp(ctx context.Context, db *catalog.DB, inv *inventory.Inventory, a inventory.App, tot catalog.FileTotal,
	hist []catalog.SnapshotApp, now time.Time, nights int) (App, error) {
	r := App{Name: a.Name, Description: a.Description, Server: string(a.Server), VM: string(a.VM),
		Relpath: string(a.Relpath), Path: a.Path, Type: string(a.Type), Expect: inv.ExpectFor(&a), Files: tot.Files, Bytes: tot.Bytes}
	if run, ok, err := db.LastSuccess(ctx, a.Name, "backup"); err != nil {
		return r, err
	} else if ok {
		r.LastSuccess = run.End
	}
	for _, h := range hist {
		if h.State == catalog.AppComplete && h.Files > 0 && h.Snapshot.Created.After(r.LastSuccess) {
			r.LastSuccess = h.Snapshot.Created
		}
	}
	if len(hist) > nights {
		hist = hist[len(hist)-nights:]
	}
	r.Trend = make([]Night, 0, len(hist))
	for _, h := range hist {
		r.Trend = append(r.Trend, Night{Snapshot: h.Snapshot.Name, Created: h.Snapshot.Created, State: h.State, Files: h.Files, Bytes: h.Bytes})
	}
	runs, err := db.Runs(ctx, a.Name, "backup", RecentRuns)
	if err != nil {
		return r, err
	}
	if len(runs) > 0 {
		r.Runs = runs
		r.LastRun = &runs[0]
	}
	warn := r.Expect.WarnAge.Duration
	if warn == 0 {
		warn = DefaultWarnAge
	}
	if !r.LastSuccess.IsZero() {
		r.Age = max(now.Sub(r.LastSuccess), 0)
		r.AgeSeconds = int64(r.Age / time.Second)
	}
	switch {
	case r.LastRun != nil && r.LastRun.Status == catalog.RunFailed && r.LastRun.Start.After(r.LastSuccess):
		r.State, r.Error = Failed, r.LastRun.Error
	case r.LastSuccess.IsZero():
		r.State = Never
	case r.Age > warn:
		r.State = Stale
	default:
		r.State = OK
	}
	return r, nil
}

// RoundAge prints a duration the way an operator reads it: 3h05m, 2d4h.
func RoundAge(d time.Duration) string {
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

// HumanBytes prints a size the way df -h does: 1023B, 1.0K, 3.0M.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%c", float64(n)/float64(div), "KMGTPE"[exp])
}
