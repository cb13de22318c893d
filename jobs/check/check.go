// Package check evaluates each application's expectations (the
// inventory's [site.expect] and [app.expect]) against the report of its
// host, plus the database dump on disk, the off-site drives and the pulls,
// and states the outcome the way a Nagios/Icinga plugin does: OK, WARNING,
// CRITICAL or UNKNOWN, with one problem per line. `v2backup check` prints it.
//
// The rules, per application (the README's "check" section says the same):
//
//   - never: no success recorded is CRITICAL (nothing else is judged).
//   - failed: a backup job run that failed after the last success is
//     CRITICAL, with its error; one that ended partial is a WARNING.
//   - age: the last success older than crit_age (default 50h) is CRITICAL,
//     older than warn_age (default 26h) WARNING; exactly the age is fine.
//   - finished_by: the night judged is the one that ends at the latest
//     finished_by at or before now (before today's finished_by, that is
//     yesterday's). A success must have ended in the 24 hours up to it;
//     failing that, a success after it is late (WARNING), and no success
//     since is missing (CRITICAL). Applications with job runs are judged by
//     their runs' end; those without (plain cp or rsync) only by a complete
//     nightly snapshot since the start of that night: missing is CRITICAL,
//     late cannot be told.
//   - min_files, min_mb: a live tree below either is CRITICAL (an MB is
//     2^20 bytes); exactly the bound is fine.
//   - max_change_percent: files or bytes of the last complete nightly
//     snapshot that differ from the complete one before it by more than
//     that percent of it is a WARNING (growth from nothing counts as
//     infinite).
//   - dump: for the types that dump a database (rails, drawmgt, wordpress)
//     the newest dump in the application's tree (db/) must exist, be
//     non-empty and pass jobs.VerifyDump (gzip stream intact, a dump of the
//     right kind ending with its tool's completion line); otherwise
//     CRITICAL. Reading a big dump each time is expensive, so a verdict is
//     remembered in Options.DumpCache by path, size and mtime: a dump is
//     read whole once, and again only if it changes (dump files are never
//     rewritten in place, so a change means damage).
//
// And per machine, left out when Options.Apps restricts the check:
//
//   - drive: an off-site drive in the catalog last seen more than
//     copy_max_age_days (default 8) ago is a WARNING.
//   - pull: on a backup server, a pulled host whose last ok pull ended more
//     than copy_max_age_days ago, or that was never pulled ok, is a
//     WARNING. A host's catalog records no pulls of it, so a host cannot
//     tell; its backup server's check does.
package check

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// Status is a plugin state; its value is the plugin's exit code.
type Status int

// Plugin states, best first.
const (
	OK Status = iota
	Warning
	Critical
	Unknown
)

var statusNames = [...]string{"OK", "WARNING", "CRITICAL", "UNKNOWN"}

// String is the state as plugins print it: OK, WARNING, CRITICAL, UNKNOWN.
func (s Status) String() string {
	if s < OK || s > Unknown {
		return fmt.Sprintf("Status(%d)", int(s))
	}
	return statusNames[s]
}

// MarshalText writes String, for JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// The rules a Problem can break.
const (
	RuleNever      = "never"
	RuleFailed     = "failed"
	RulePartial    = "partial"
	RuleAge        = "age"
	RuleFinishedBy = "finished_by"
	RuleMinFiles   = "min_files"
	RuleMinMB      = "min_mb"
	RuleChange     = "max_change_percent"
	RuleDump       = "dump"
	RuleDrive      = "drive"
	RulePull       = "pull"
)

// Problem is one broken expectation.
type Problem struct {
	Status Status `json:"status"`
	// Server is the host whose application or pulls it is about; "" for a
	// drive.
	Server string `json:"server,omitempty"`
	// App is the application; "" for a drive or a pull.
	App     string `json:"app,omitempty"`
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

// String is the problem's line: "CRITICAL zg-3.softxs.ch hydro: message".
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Status.String())
	if p.Server != "" {
		b.WriteString(" " + p.Server)
	}
	if p.App != "" {
		b.WriteString(" " + p.App)
	}
	b.WriteString(": " + p.Message)
	return b.String()
}

// AppResult is one application's outcome and the figures of its
// performance data.
type AppResult struct {
	Name   string       `json:"name"`
	Server string       `json:"server"`
	Status Status       `json:"status"`
	State  report.State `json:"state"`
	// AgeSeconds is the age of the last success; nil when there is none.
	AgeSeconds *int64 `json:"age_seconds"`
	Files      int64  `json:"files"`
	Bytes      int64  `json:"bytes"`
	// WarnAge and CritAge are the thresholds applied, in seconds.
	WarnAge int64 `json:"warn_age"`
	CritAge int64 `json:"crit_age"`
}

// Result is the outcome of one check.
type Result struct {
	// Status is the worst of every problem's, OK if none.
	Status Status `json:"status"`
	// Apps are the applications checked, in report order.
	Apps []AppResult `json:"apps"`
	// Problems are worst first, then in report order.
	Problems []Problem `json:"problems"`
}

// Options are what to check and how.
type Options struct {
	Inventory *inventory.Inventory
	// Server is the machine the check runs on: a host, a backup server, or
	// both. It decides where an application's tree is (local or remote
	// tier) and whether pulls are judged.
	Server tiers.Server
	// Apps restricts the check to these applications; empty: every one in
	// the reports, plus drives and pulls. A name not in the inventory, or
	// of no report, is an error.
	Apps []string
	// WarnAge and CritAge replace every application's warn_age and
	// crit_age when not zero.
	WarnAge, CritAge time.Duration
	// DumpCache is the file remembering dump verdicts; "" reads every dump
	// whole on every check.
	DumpCache string
	// Log receives what does not change the outcome (a cache that cannot
	// be written); nil discards it.
	Log *slog.Logger
}

// Evaluate checks every application of reports against its expectations.
// An error means the check could not be made (UNKNOWN): a name in o.Apps
// not known, or ages that contradict each other.
func Evaluate(ctx context.Context, reports []*report.Report, o Options) (*Result, error) {
	if o.Inventory == nil {
		return nil, errors.New("check: no inventory")
	}
	if o.WarnAge < 0 || o.CritAge < 0 {
		return nil, fmt.Errorf("check: negative age (warning %v, critical %v)", o.WarnAge, o.CritAge)
	}
	want, seen := map[string]bool{}, map[string]bool{}
	for _, name := range o.Apps {
		if _, ok := o.Inventory.App(name); !ok {
			return nil, fmt.Errorf("check: --app %s: no such application in %s", name, o.Inventory.File)
		}
		want[name] = true
	}
	e := &evaluator{o: o, cache: loadCache(o.DumpCache, o.Log), res: &Result{}}
	for _, r := range reports {
		for _, a := range r.Apps {
			if len(want) > 0 && !want[a.Name] {
				continue
			}
			seen[a.Name] = true
			if err := e.app(ctx, r, a); err != nil {
				return nil, err
			}
		}
	}
	for _, name := range o.Apps {
		if !seen[name] {
			return nil, fmt.Errorf("check: --app %s: not an application that %s backs up or pulls", name, o.Server)
		}
	}
	if len(o.Apps) == 0 {
		e.drives(reports)
		e.pulls(reports)
	}
	e.cache.save()
	slices.SortStableFunc(e.res.Problems, func(a, b Problem) int { return cmp.Compare(b.Status, a.Status) })
	for _, p := range e.res.Problems {
		e.res.Status = max(e.res.Status, p.Status)
	}
	return e.res, nil
}

type evaluator struct {
	o     Options
	cache *dumpCache
	res   *Result
}

func (e *evaluator) add(p Problem) { e.res.Problems = append(e.res.Problems, p) }

// ages are the thresholds of a: the flags', else the inventory's, else
// the defaults.
func (e *evaluator) ages(a report.App) (warn, crit time.Duration, err error) {
	warn, crit = a.Expect.WarnAge.Duration, a.Expect.CritAge.Duration
	if warn == 0 {
		warn = inventory.DefaultExpect.WarnAge.Duration
	}
	if crit == 0 {
		crit = inventory.DefaultExpect.CritAge.Duration
	}
	if e.o.WarnAge != 0 {
		warn = e.o.WarnAge
	}
	if e.o.CritAge != 0 {
		crit = e.o.CritAge
	}
	if warn > crit {
		return 0, 0, fmt.Errorf("check: application %s: warning age %v is above critical age %v", a.Name, warn, crit)
	}
	return warn, crit, nil
}

func (e *evaluator) app(ctx context.Context, r *report.Report, a report.App) error {
	warn, crit, err := e.ages(a)
	if err != nil {
		return err
	}
	res := AppResult{Name: a.Name, Server: a.Server, State: a.State, Files: a.Files, Bytes: a.Bytes,
		WarnAge: int64(warn / time.Second), CritAge: int64(crit / time.Second)}
	if !a.LastSuccess.IsZero() {
		s := a.AgeSeconds
		res.AgeSeconds = &s
	}
	n := len(e.res.Problems)
	prob := func(s Status, rule, format string, args ...any) {
		e.add(Problem{Status: s, Server: a.Server, App: a.Name, Rule: rule, Message: fmt.Sprintf(format, args...)})
	}
	now := r.Generated
	if a.State == report.Never {
		why := "no successful backup is recorded"
		if a.Error != "" {
			why += " (" + a.Error + ")"
		}
		prob(Critical, RuleNever, "%s", why)
	} else {
		if a.State == report.Failed && a.LastRun != nil {
			prob(Critical, RuleFailed, "the backup run started %s failed: %s", stamp(a.LastRun.Start), oneLine(a.LastRun.Error))
		}
		if l := a.LastRun; l != nil && l.Status == catalog.RunPartial && l.Start.After(a.LastSuccess) {
			prob(Warning, RulePartial, "the backup run started %s skipped some of its work: %s", stamp(l.Start), oneLine(l.Error))
		}
		switch {
		case a.Age > crit:
			prob(Critical, RuleAge, "last success %s, %s ago, is older than the critical age %v", stamp(a.LastSuccess), report.RoundAge(a.Age), crit)
		case a.Age > warn:
			prob(Warning, RuleAge, "last success %s, %s ago, is older than the warning age %v", stamp(a.LastSuccess), report.RoundAge(a.Age), warn)
		}
		if fb := a.Expect.FinishedBy; fb.Set {
			finishedBy(a, fb, now, prob)
		}
		if a.Expect.MinFiles > 0 && a.Files < a.Expect.MinFiles {
			prob(Critical, RuleMinFiles, "%d files, fewer than min_files %d", a.Files, a.Expect.MinFiles)
		}
		if a.Expect.MinMB > 0 && float64(a.Bytes) < a.Expect.MinMB*(1<<20) {
			prob(Critical, RuleMinMB, "%.1f MB, less than min_mb %g", float64(a.Bytes)/(1<<20), a.Expect.MinMB)
		}
		if a.Expect.MaxChangePercent > 0 {
			change(a, a.Expect.MaxChangePercent, prob)
		}
		if err := e.dump(ctx, r, a); err != nil {
			prob(Critical, RuleDump, "%s", oneLine(err.Error()))
		}
	}
	for _, p := range e.res.Problems[n:] {
		res.Status = max(res.Status, p.Status)
	}
	e.res.Apps = append(e.res.Apps, res)
	return nil
}

type problemFunc func(s Status, rule, format string, args ...any)

// finishedBy judges the night that ends at the latest fb at or before now.
func finishedBy(a report.App, fb inventory.Clock, now time.Time, prob problemFunc) {
	end := fb.On(now)
	if end.After(now) {
		end = fb.On(now.AddDate(0, 0, -1))
	}
	start := end.AddDate(0, 0, -1)
	in := func(t, from, to time.Time) bool { return t.After(from) && !t.After(to) }
	if len(a.Runs) == 0 {
		for _, n := range a.Trend {
			if n.State == catalog.AppComplete && in(n.Created, start, now) {
				return
			}
		}
		prob(Critical, RuleFinishedBy, "no complete snapshot since %s (the night before finished_by %s)", stamp(start), fb)
		return
	}
	var late time.Time
	for _, r := range a.Runs {
		if r.Status != catalog.RunOK {
			continue
		}
		if in(r.End, start, end) {
			return
		}
		if in(r.End, end, now) && (late.IsZero() || r.End.Before(late)) {
			late = r.End
		}
	}
	if !late.IsZero() {
		prob(Warning, RuleFinishedBy, "the night's backup ended %s, after finished_by %s", stamp(late), fb)
		return
	}
	prob(Critical, RuleFinishedBy, "no backup ended ok between %s and %s (finished_by %s)", stamp(start), stamp(end), fb)
}

// change compares the last two complete nights of a's trend.
func change(a report.App, limit float64, prob problemFunc) {
	var last []report.Night
	for i := len(a.Trend) - 1; i >= 0 && len(last) < 2; i-- {
		if a.Trend[i].State == catalog.AppComplete {
			last = append(last, a.Trend[i])
		}
	}
	if len(last) < 2 {
		return
	}
	cur, prev := last[0], last[1]
	for _, m := range []struct {
		what     string
		from, to int64
	}{{"files", prev.Files, cur.Files}, {"bytes", prev.Bytes, cur.Bytes}} {
		p := percent(m.from, m.to)
		if math.Abs(p) > limit {
			prob(Warning, RuleChange, "%s changed by %+.1f%% (%d to %d) from snapshot %s to %s, more than max_change_percent %g",
				m.what, p, m.from, m.to, prev.Snapshot, cur.Snapshot, limit)
		}
	}
}

// percent is the change from a to b in percent of a.
func percent(a, b int64) float64 {
	switch {
	case a == b:
		return 0
	case a == 0:
		return math.Inf(1)
	}
	return float64(b-a) / float64(a) * 100
}

// tree is where a's backup lies on the checking machine: its local tier
// on its own host, else the remote tier of its backup server.
func (e *evaluator) tree(r *report.Report, a report.App) string {
	part := e.o.Inventory.Partition(e.o.Server)
	if r.Server == string(e.o.Server) && e.o.Inventory.IsHost(e.o.Server) {
		return part.Local(tiers.VM(a.VM), tiers.Relpath(a.Relpath))
	}
	return part.Remote(tiers.Server(r.Server), tiers.VM(a.VM), tiers.Relpath(a.Relpath))
}

// dump checks a's newest database dump, if its type makes one.
func (e *evaluator) dump(ctx context.Context, r *report.Report, a report.App) error {
	app, ok := e.o.Inventory.App(a.Name)
	if !ok || !jobs.DumpsDatabase(app) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	path, fi, err := jobs.NewestDumpOf(e.tree(r, a))
	if err != nil {
		return err
	}
	return e.cache.verify(path, fi, jobs.DumpAdapter(app))
}

// drives warns of each off-site drive not seen for copy_max_age_days.
// Every report of one machine lists the same drives (its own catalog's).
func (e *evaluator) drives(reports []*report.Report) {
	limit := e.maxAge()
	seen := map[int64]bool{}
	for _, r := range reports {
		for _, d := range r.Drives {
			if seen[d.ID] {
				continue
			}
			seen[d.ID] = true
			if age := r.Generated.Sub(d.LastSeen); age > limit {
				e.add(Problem{Status: Warning, Rule: RuleDrive, Message: fmt.Sprintf("off-site drive %s (%s) last seen %s, %s ago, more than copy_max_age_days %d",
					d.Label, d.FSUUID, stamp(d.LastSeen), report.RoundAge(age), e.o.Inventory.Site.CopyMaxAgeDays)})
			}
		}
	}
}

// pulls warns, on a backup server, of each pulled host whose last ok pull
// is older than copy_max_age_days, or missing.
func (e *evaluator) pulls(reports []*report.Report) {
	bs, ok := e.o.Inventory.BackupServer(e.o.Server)
	if !ok {
		return
	}
	limit := e.maxAge()
	for _, r := range reports {
		if !slices.Contains(bs.Pulls, tiers.Server(r.Server)) {
			continue
		}
		var last *catalog.Pull
		for i := range r.Pulls { // newest first
			if r.Pulls[i].Result == catalog.RunOK {
				last = &r.Pulls[i]
				break
			}
		}
		p := Problem{Status: Warning, Server: r.Server, Rule: RulePull}
		switch {
		case last == nil:
			p.Message = fmt.Sprintf("no ok pull by %s in the last %d recorded", e.o.Server, len(r.Pulls))
		case r.Generated.Sub(last.End) > limit:
			p.Message = fmt.Sprintf("last ok pull by %s ended %s, %s ago, more than copy_max_age_days %d",
				e.o.Server, stamp(last.End), report.RoundAge(r.Generated.Sub(last.End)), e.o.Inventory.Site.CopyMaxAgeDays)
		default:
			continue
		}
		e.add(p)
	}
}

func (e *evaluator) maxAge() time.Duration {
	d := e.o.Inventory.Site.CopyMaxAgeDays
	if d <= 0 {
		d = inventory.DefaultCopyMaxAgeDays
	}
	return time.Duration(d) * 24 * time.Hour
}

func stamp(t time.Time) string { return t.Format("2006-01-02 15:04") }

// oneLine keeps a message on one line, as the plugin output needs.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// dumpCache remembers dump verdicts by path, size and mtime.
type dumpCache struct {
	path    string
	log     *slog.Logger
	entries map[string]dumpEntry
	used    map[string]bool
	changed bool
}

type dumpEntry struct {
	Size    int64  `json:"size"`
	MTimeNS int64  `json:"mtime_ns"`
	Adapter string `json:"adapter"`
	Error   string `json:"error,omitempty"`
}

// loadCache reads path; a missing or unreadable cache is an empty one
// (it only saves reading).
func loadCache(path string, log *slog.Logger) *dumpCache {
	c := &dumpCache{path: path, log: log, entries: map[string]dumpEntry{}, used: map[string]bool{}}
	if path == "" {
		return c
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.logf("dump cache unreadable, every dump is read whole", "path", path, "err", err)
		}
		return c
	}
	if err := json.Unmarshal(data, &c.entries); err != nil {
		c.logf("dump cache damaged, every dump is read whole", "path", path, "err", err)
		c.entries = map[string]dumpEntry{}
	}
	return c
}

func (c *dumpCache) logf(msg string, args ...any) {
	if c.log != nil {
		c.log.Warn(msg, args...)
	}
}

// verify is jobs.VerifyDump of path, or its remembered verdict.
func (c *dumpCache) verify(path string, fi os.FileInfo, adapter string) error {
	key := dumpEntry{Size: fi.Size(), MTimeNS: fi.ModTime().UnixNano(), Adapter: adapter}
	c.used[path] = true
	if ent, ok := c.entries[path]; ok {
		verdict := ent.Error
		ent.Error = ""
		if ent == key {
			if verdict != "" {
				return errors.New(verdict)
			}
			return nil
		}
	}
	_, _, err := jobs.VerifyDump(path, adapter)
	if err != nil {
		key.Error = err.Error()
	}
	c.entries[path], c.changed = key, true
	return err
}

// save writes the cache atomically, forgetting dumps that are gone
// (pruned by keep_dumps).
func (c *dumpCache) save() {
	if c.path == "" {
		return
	}
	for p := range c.entries {
		if _, err := os.Lstat(p); !c.used[p] && errors.Is(err, os.ErrNotExist) {
			delete(c.entries, p)
			c.changed = true
		}
	}
	if !c.changed {
		return
	}
	data, err := json.MarshalIndent(c.entries, "", "  ")
	if err == nil {
		err = renameio.WriteFile(c.path, append(data, '\n'), 0o644)
	}
	if err != nil {
		c.logf("dump cache not written, dumps will be read whole again", "path", c.path, "err", err)
	}
}
