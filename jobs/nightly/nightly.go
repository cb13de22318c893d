// Package nightly runs the night's snapshot of a tier: it waits until every
// application's backup is complete (or a deadline passes), takes a hard-link
// snapshot whose manifest goes into the catalog, points latest at it, writes
// the history files monitoring reads, and applies retention.
//
// Applications still being written at the deadline, or whose job failed,
// enter the snapshot from their last complete state (the previous
// snapshot), never half-written, and are marked "carried".
package nightly

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
	"github.com/softxs/v2backup/tiers/retention"
	"github.com/softxs/v2backup/tiers/snapshot"
)

// Options configures one run.
type Options struct {
	Inv    *inventory.Inventory
	Server tiers.Server // this host (local tier) or backup server (remote tier)
	Tier   tiers.Tier
	DB     *catalog.DB
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Wait makes the run wait for unfinished applications until the
	// schedule's deadline; without it, they are carried at once.
	Wait bool
	// Deadline overrides the inventory's (Now + site.snapshot.deadline).
	Deadline time.Time
	// Poll is how often a waiting run looks again; default 10 s.
	Poll time.Duration
	// NoWaitLock refuses to run when another run holds the lock, instead of waiting.
	NoWaitLock bool
	Logger     *slog.Logger
}

// AppResult is how one application entered the snapshot.
type AppResult struct {
	App     string
	Path    string // tier path, e.g. "web/demo.softxs.ch/hydro"
	State   snapshot.Status
	Why     string
	Files   int64
	Bytes   int64
	Changed int64
}

// Report is what a run did.
type Report struct {
	Snapshot string
	Result   *snapshot.Result
	Apps     []AppResult
	Pruned   []snapshot.Pruned
}

// app is an application of the tier with its path in the tier.
type app struct {
	name string
	path string // relative to the tier root
	inv  *inventory.App
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) log() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// appsOf lists the applications whose data the tier holds.
func appsOf(inv *inventory.Inventory, server tiers.Server, tier tiers.Tier) ([]app, error) {
	var out []app
	add := func(host tiers.Server, prefix string) {
		for _, a := range inv.AppsOn(host, "") {
			a := a
			p := tiers.TierPath(a.VM, a.Relpath)
			if prefix != "" {
				p = prefix + "/" + p
			}
			out = append(out, app{name: a.Name, path: p, inv: &a})
		}
	}
	switch tier {
	case tiers.Local:
		if _, ok := inv.Server(server); !ok {
			return nil, fmt.Errorf("server %s is not a host in %s", server, inv.File)
		}
		add(server, "")
	case tiers.Remote:
		bs, ok := inv.BackupServer(server)
		if !ok {
			return nil, fmt.Errorf("server %s is not a backup server in %s", server, inv.File)
		}
		for _, h := range bs.Pulls {
			add(h, string(h))
		}
	default:
		return nil, fmt.Errorf("unknown tier %q", tier)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

// Run takes the night's snapshot of the tier. Two runs never overlap: the
// second waits for the first (or, with NoWaitLock, refuses with the
// holder's pid and start time).
func Run(ctx context.Context, o Options) (*Report, error) {
	part := o.Inv.Partition(o.Server)
	snapDir := part.SnapshotDir(o.Tier)
	source := part.TierRoot(o.Tier)
	apps, err := appsOf(o.Inv, o.Server, o.Tier)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{snapDir, source} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
	}
	lockPath := filepath.Join(snapDir, ".lock")
	var unlock func()
	if o.NoWaitLock {
		unlock, err = snapshot.TryLock(lockPath)
	} else {
		unlock, err = snapshot.Lock(ctx, lockPath)
	}
	if err != nil {
		return nil, err
	}
	defer unlock()

	prev, hasPrev, err := snapshot.Latest(snapDir)
	if err != nil {
		return nil, err
	}
	states, err := o.waitForApps(ctx, apps, prev, hasPrev)
	if err != nil {
		return nil, err
	}

	now := o.now()
	name := snapshot.Name(now)
	if hasPrev && name <= prev.Name {
		return nil, fmt.Errorf("snapshot %s: not newer than the latest snapshot %s (clock went back?)", name, prev.Name)
	}
	b, err := o.DB.BeginSnapshot(ctx, o.Tier, string(o.Server), name, now)
	if err != nil {
		return nil, err
	}
	carried := map[string]string{} // tier path -> previous snapshot's copy
	rep := &Report{Snapshot: name}
	for _, a := range apps {
		st := states[a.name]
		if st.state != snapshot.StatusComplete {
			from := ""
			if hasPrev {
				from = filepath.Join(prev.Path, a.path)
			}
			if _, err := os.Lstat(from); from != "" && err == nil {
				carried[a.path] = from
				st.why += "; taken from its last complete state, snapshot " + prev.Name
			} else {
				st.why += "; no earlier complete state, taken as it is"
			}
		}
		states[a.name] = st
		cs := catalog.AppComplete
		if st.state != snapshot.StatusComplete {
			cs = catalog.AppCarried
		}
		if err := b.SetApp(a.name, cs); err != nil {
			b.Abort(ctx)
			return nil, err
		}
	}
	before, err := prevManifest(ctx, o.DB, o.Tier, o.Server, hasPrev, prev.Name)
	if err != nil {
		b.Abort(context.Background())
		return nil, err
	}
	tally := snapshot.NewTally(appPaths(apps), func(p string) (string, bool) {
		e, ok := before[p]
		return e.SHA256, ok && e.SHA256 != ""
	})
	res, snap, err := b.Take(ctx, snapshot.Options{
		Source:  source,
		SnapDir: snapDir,
		Name:    name,
		// Only files whose content may have changed are read: the live
		// catalog knows the local tier's hashes, the previous manifest
		// those of files unchanged since.
		Hash: func(rel string, size int64, mtimeNs int64) (string, bool) {
			if o.Tier == tiers.Local {
				if sha, ok, err := o.DB.FileHash(ctx, rel, size, time.Unix(0, mtimeNs)); ok && err == nil {
					return sha, true
				}
			}
			if e, ok := before[rel]; ok && e.SHA256 != "" && e.Size == size && e.MTime.UnixNano() == mtimeNs {
				return e.SHA256, true
			}
			return "", false
		},
		Emit: func(batch []snapshot.Entry) error {
			tally.Add(batch)
			return nil
		},
		Keep: func(rel string) (string, bool) {
			from, ok := carried[rel]
			return from, ok
		},
	}, func(p string) string { return appOf(apps, p) })
	if err != nil {
		return nil, err
	}
	rep.Result = res
	if _, _, err := snapshot.UpdateLatest(snapDir); err != nil {
		return rep, err
	}
	var errs []error
	if err := o.afterCommit(ctx, snap, apps); err != nil {
		errs = append(errs, err)
	}

	// History files, one per application.
	counts := tally.Counts()
	histDir := o.Inv.HistoryDir(o.Server)
	if err := os.MkdirAll(histDir, 0o755); err != nil {
		errs = append(errs, fmt.Errorf("history files: %w", err))
	}
	for _, a := range apps {
		st := states[a.name]
		c := counts[a.path]
		rep.Apps = append(rep.Apps, AppResult{App: a.name, Path: a.path, State: st.state, Why: st.why, Files: c.Files, Bytes: c.Bytes, Changed: c.Changed})
		h := snapshot.History{
			App: a.name, Server: string(a.inv.Server), VM: string(a.inv.VM), Relpath: string(a.inv.Relpath),
			Snapshot: name, Status: st.state, Files: c.Files, Bytes: c.Bytes, Changed: c.Changed,
			Note: st.why, Written: o.now(),
		}
		if err := snapshot.WriteHistory(histDir, h); err != nil {
			errs = append(errs, err)
		}
	}

	// Retention.
	pruned, err := o.prune(ctx, snapDir, false)
	rep.Pruned = pruned
	if err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

// prune applies the tier's retention policy.
func (o *Options) prune(ctx context.Context, snapDir string, dryRun bool) ([]snapshot.Pruned, error) {
	pol := o.Inv.Site.Retention
	if o.Tier == tiers.Remote {
		if bs, ok := o.Inv.BackupServer(o.Server); ok && bs.Retention != nil {
			pol = *bs.Retention
		}
	}
	list, err := snapshot.List(snapDir)
	if err != nil {
		return nil, err
	}
	times := make([]time.Time, len(list))
	byTime := map[time.Time]string{}
	for i, s := range list {
		times[i] = s.Time
		byTime[s.Time] = s.Name
	}
	now := o.now()
	_, drop := retention.Select(times, retention.Policy{Nightly: pol.Nightly, Weekly: pol.Weekly, Monthly: pol.Monthly}, now)
	var names []string
	for _, d := range drop {
		// Everything from the last day stays (restic's --keep-within 24h):
		// a snapshot taken by hand must not prune the night's own.
		if now.Sub(d.Time) < KeepWithin {
			continue
		}
		names = append(names, byTime[d.Time])
	}
	if len(names) == 0 {
		return nil, nil
	}
	pruned, err := snapshot.Prune(ctx, snapDir, names, dryRun)
	if err != nil || dryRun {
		return pruned, err
	}
	for _, p := range pruned {
		if s, err := o.DB.SnapshotByName(ctx, o.Tier, string(o.Server), p.Name); err == nil {
			if err := o.DB.DeleteSnapshot(ctx, s.ID); err != nil {
				return pruned, err
			}
		}
	}
	return pruned, nil
}

// KeepWithin is the age under which retention never prunes a snapshot.
const KeepWithin = 24 * time.Hour

// Retain applies the tier's retention policy alone, under the snapshot
// lock; with dryRun it only lists what would be deleted.
func Retain(ctx context.Context, o Options, dryRun bool) ([]snapshot.Pruned, error) {
	snapDir := o.Inv.Partition(o.Server).SnapshotDir(o.Tier)
	unlock, err := snapshot.Lock(ctx, filepath.Join(snapDir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	return o.prune(ctx, snapDir, dryRun)
}

// Purge removes pruned snapshot trees at idle I/O priority; run it after
// Run, in the background, so deleting never stalls the mounts.
func Purge(ctx context.Context, inv *inventory.Inventory, server tiers.Server, tier tiers.Tier) ([]string, error) {
	return snapshot.Purge(ctx, inv.Partition(server).SnapshotDir(tier), snapshot.PurgeOptions{})
}

type appState struct {
	state snapshot.Status
	why   string
}

// waitForApps decides, per application, whether its backup is complete:
// its last backup run since the previous snapshot finished ok, or (with no
// run recorded) nothing has been written to it for the quiet time. With
// Wait it polls until every application is decided or the deadline passes.
func (o *Options) waitForApps(ctx context.Context, apps []app, prev snapshot.Info, hasPrev bool) (map[string]appState, error) {
	quiet := o.Inv.Site.Snapshot.Quiet.Duration
	deadline := o.Deadline
	if deadline.IsZero() {
		deadline = o.now().Add(o.Inv.Site.Snapshot.Deadline.Duration)
	}
	poll := o.Poll
	if poll <= 0 {
		poll = 10 * time.Second
	}
	var since time.Time
	if hasPrev {
		since = prev.Time
	}
	for {
		states := map[string]appState{}
		pending := 0
		for _, a := range apps {
			st, done, err := o.appState(ctx, a, since, quiet)
			if err != nil {
				return nil, err
			}
			if !done {
				pending++
			}
			states[a.name] = st
		}
		if pending == 0 || !o.Wait || !o.now().Before(deadline) {
			for n, st := range states {
				if st.state == "" {
					states[n] = appState{snapshot.StatusIncomplete, st.why}
				}
			}
			return states, nil
		}
		o.log().Info("waiting for backups to finish", "pending", pending, "deadline", deadline.Format(time.DateTime))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// appState looks at one application; done reports whether it is decided.
// An undecided application has an empty state and a reason.
func (o *Options) appState(ctx context.Context, a app, since time.Time, quiet time.Duration) (st appState, done bool, err error) {
	if o.Tier == tiers.Remote {
		// The remote tier only ever holds verified pulls.
		return appState{snapshot.StatusComplete, "pulled and verified"}, true, nil
	}
	runs, err := o.DB.Runs(ctx, a.name, "backup", 1)
	if err != nil {
		return st, false, err
	}
	if len(runs) > 0 && !runs[0].Start.Before(since) {
		r := runs[0]
		switch r.Status {
		case catalog.RunRunning:
			return appState{"", "backup job still running since " + r.Start.Format(time.DateTime)}, false, nil
		case catalog.RunOK:
			return appState{snapshot.StatusComplete, "backup job ok"}, true, nil
		default:
			msg := "backup job " + string(r.Status)
			if r.Error != "" {
				msg += ": " + r.Error
			}
			return appState{snapshot.StatusFailed, msg}, true, nil
		}
	}
	last, err := o.DB.LastUpdate(ctx, a.path)
	if err != nil {
		return st, false, err
	}
	if idle := o.now().Sub(last); last.IsZero() || idle >= quiet {
		return appState{snapshot.StatusComplete, "no job run recorded; quiet since " + fmtTime(last)}, true, nil
	}
	return appState{"", "written to at " + last.Format(time.DateTime) + ", within the quiet time " + quiet.String()}, false, nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "ever"
	}
	return t.Format(time.DateTime)
}

func appPaths(apps []app) []string {
	out := make([]string, len(apps))
	for i, a := range apps {
		out[i] = a.path
	}
	return out
}

// appOf attributes a tier path to the application containing it.
func appOf(apps []app, p string) string {
	for _, a := range apps {
		if p == a.path || len(p) > len(a.path) && p[:len(a.path)] == a.path && p[len(a.path)] == '/' {
			return a.name
		}
	}
	return ""
}

// prevManifest loads the previous snapshot's manifest by path: it lets the
// new snapshot reuse hashes of unchanged files and count what changed.
func prevManifest(ctx context.Context, db *catalog.DB, tier tiers.Tier, server tiers.Server, hasPrev bool, name string) (map[string]catalog.ManifestEntry, error) {
	m := map[string]catalog.ManifestEntry{}
	if !hasPrev {
		return m, nil
	}
	snap, err := db.SnapshotByName(ctx, tier, string(server), name)
	if err != nil {
		// A snapshot on disk the catalog does not know (e.g. a restored
		// catalog): every file is hashed again, nothing is lost.
		return m, nil
	}
	err = db.WalkManifest(ctx, snap.ID, "", func(e catalog.ManifestEntry) error {
		m[e.Path] = e
		return nil
	})
	return m, err
}
