package check

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

const (
	host   = "zg-3.softxs.ch"
	backup = "odin.softxs.ch"
)

// day is midnight of the day the tests look at, in UTC.
var day = time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)

const inventoryTemplate = `
[site]
partition = %q
%s
[site.expect]
%s

[[server]]
name = "zg-3.softxs.ch"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"

[[app]]
name = "hydro"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "demo.softxs.ch/hydro"
type = "rails"
[app.database]
adapter = "mysql"

[[app]]
name = "wiki"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "wiki.softxs.ch"
type = "moinmoin"

[[backup_server]]
name = "odin.softxs.ch"
pulls = ["zg-3.softxs.ch"]
`

// env is one machine's inventory and catalog in a temporary partition
// (the same partition serves the host and the backup server).
type env struct {
	t    *testing.T
	inv  *inventory.Inventory
	part tiers.Partition
	db   *catalog.DB
}

func newEnv(t *testing.T, site, expect string) *env {
	t.Helper()
	dir := t.TempDir()
	inv, err := inventory.Parse("test.toml", fmt.Appendf(nil, inventoryTemplate, dir, site, expect))
	if err != nil {
		t.Fatal(err)
	}
	db, err := catalog.Open(filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{t: t, inv: inv, part: tiers.Partition(dir), db: db}
	// hydro's dump is fine unless a test says otherwise.
	e.writeDump(e.part.Local("web", "demo.softxs.ch/hydro"), "hydro-2026-11-29T020000.sql.gz", goodDump, false)
	return e
}

func (e *env) run(app string, start, end time.Time, st catalog.RunStatus, msg string) {
	e.t.Helper()
	ctx := context.Background()
	id, err := e.db.StartRun(ctx, app, "backup", start)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.db.FinishRun(ctx, id, end, st, 1, 1, msg); err != nil {
		e.t.Fatal(err)
	}
}

// snapshot records a complete snapshot at at holding files entries of
// size bytes each for app (carried if carried).
func (e *env) snapshot(at time.Time, app string, files int, size int64, carried bool) {
	e.t.Helper()
	ctx := context.Background()
	b, err := e.db.BeginSnapshot(ctx, tiers.Local, host, tiers.SnapshotName(at), at)
	if err != nil {
		e.t.Fatal(err)
	}
	rel := map[string]string{"hydro": "web/demo.softxs.ch/hydro", "wiki": "web/wiki.softxs.ch"}[app]
	for i := range files {
		if err := b.Add(ctx, catalog.ManifestEntry{Path: fmt.Sprintf("%s/f%d", rel, i), Size: size, MTime: at,
			SHA256: strings.Repeat("a", 64), App: app}); err != nil {
			e.t.Fatal(err)
		}
	}
	if carried {
		if err := b.SetApp(app, catalog.AppCarried); err != nil {
			e.t.Fatal(err)
		}
	}
	if _, err := b.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// files makes app's live tree n files of size bytes each.
func (e *env) files(app string, n int, size int64) {
	e.t.Helper()
	rel := map[string]string{"hydro": "web/demo.softxs.ch/hydro", "wiki": "web/wiki.softxs.ch"}[app]
	var recs []catalog.FileRecord
	for i := range n {
		recs = append(recs, catalog.FileRecord{Path: fmt.Sprintf("%s/f%d", rel, i), App: app, Size: size, MTime: day})
	}
	if err := e.db.UpsertFiles(context.Background(), recs); err != nil {
		e.t.Fatal(err)
	}
}

const goodDump = "-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\n--\nCREATE TABLE t (i int);\nINSERT INTO t VALUES (1);\n-- Dump completed on 2026-11-29  2:30:01\n"

// writeDump writes content gzipped (cut short if truncate) to tree/db/name.
func (e *env) writeDump(tree, name, content string, truncate bool) string {
	e.t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(content))
	zw.Close()
	data := buf.Bytes()
	if truncate {
		data = data[:len(data)-10]
	}
	dir := filepath.Join(tree, "db")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// eval builds the host's report at now and checks it on the host.
func (e *env) eval(now time.Time, o Options) *Result {
	e.t.Helper()
	res, err := e.evalErr(now, o)
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

func (e *env) evalErr(now time.Time, o Options) (*Result, error) {
	e.t.Helper()
	ctx := context.Background()
	ro := report.Options{Inventory: e.inv, Server: host, DB: e.db, Now: now}
	if o.Server == backup {
		ro.Own = e.db
	}
	r, err := report.Build(ctx, ro)
	if err != nil {
		e.t.Fatal(err)
	}
	o.Inventory = e.inv
	if o.Server == "" {
		o.Server = host
	}
	return Evaluate(ctx, []*report.Report{r}, o)
}

// problems are res's problems of app (or of no app) under rule.
func problems(res *Result, app, rule string) []Problem {
	var out []Problem
	for _, p := range res.Problems {
		if p.App == app && p.Rule == rule {
			out = append(out, p)
		}
	}
	return out
}

// want checks that res has exactly one problem of app and rule, of status
// st (OK: none), whose message contains each of subs.
func want(t *testing.T, what string, res *Result, app, rule string, st Status, subs ...string) {
	t.Helper()
	ps := problems(res, app, rule)
	if st == OK {
		if len(ps) != 0 {
			t.Errorf("%s: %s %s: unexpected %v", what, app, rule, ps)
		}
		return
	}
	if len(ps) != 1 || ps[0].Status != st {
		t.Errorf("%s: %s %s: got %v, want one %s (all: %v)", what, app, rule, ps, st, res.Problems)
		return
	}
	for _, s := range subs {
		if !strings.Contains(ps[0].Message, s) {
			t.Errorf("%s: %s %s: %q lacks %q", what, app, rule, ps[0].Message, s)
		}
	}
}

func TestAge(t *testing.T) {
	e := newEnv(t, "", "")
	end := day.Add(3 * time.Hour)
	e.run("hydro", end.Add(-time.Hour), end, catalog.RunOK, "")
	e.run("wiki", end.Add(-time.Hour), end, catalog.RunOK, "")
	e.files("hydro", 1, 1)
	e.files("wiki", 1, 1)
	for _, c := range []struct {
		after time.Duration
		st    Status
		sub   string
	}{
		{26 * time.Hour, OK, ""},
		{26*time.Hour + time.Second, Warning, "warning age 26h0m0s"},
		{50 * time.Hour, Warning, ""},
		{50*time.Hour + time.Second, Critical, "critical age 50h0m0s"},
	} {
		res := e.eval(end.Add(c.after), Options{})
		want(t, c.after.String(), res, "hydro", RuleAge, c.st, c.sub)
		if res.Status != c.st {
			t.Errorf("after %v: status %s, want %s: %v", c.after, res.Status, c.st, res.Problems)
		}
	}
	// The flags replace the inventory's ages.
	res := e.eval(end.Add(2*time.Hour), Options{WarnAge: time.Hour, CritAge: 90 * time.Minute})
	want(t, "--crit-age 90m", res, "hydro", RuleAge, Critical, "critical age 1h30m0s")
	if a := res.Apps[0]; a.WarnAge != 3600 || a.CritAge != 5400 || a.AgeSeconds == nil || *a.AgeSeconds != 7200 {
		t.Errorf("perf figures %+v", a)
	}
	res = e.eval(end.Add(2*time.Hour), Options{WarnAge: time.Hour})
	want(t, "--warn-age 1h", res, "hydro", RuleAge, Warning)
	if _, err := e.evalErr(end, Options{WarnAge: 60 * time.Hour}); err == nil || !strings.Contains(err.Error(), "warning age 60h0m0s is above critical age 50h0m0s") {
		t.Errorf("--warn-age above the critical age: %v", err)
	}
	if _, err := e.evalErr(end, Options{CritAge: -time.Hour}); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("negative age: %v", err)
	}
}

func TestNeverAndFailed(t *testing.T) {
	e := newEnv(t, "", "min_files = 5\nfinished_by = \"06:00\"")
	now := day.Add(9 * time.Hour)
	e.run("hydro", day.Add(-22*time.Hour), day.Add(-21*time.Hour), catalog.RunOK, "")
	e.run("hydro", day.Add(2*time.Hour), day.Add(2*time.Hour+time.Minute), catalog.RunFailed, "mysqldump: Access denied\nfor user 'backup' | oops")
	e.files("hydro", 5, 1)
	res := e.eval(now, Options{})
	want(t, "failed, not partial", res, "hydro", RulePartial, OK)
	want(t, "failed", res, "hydro", RuleFailed, Critical, "started 2026-11-29 02:00 failed: mysqldump: Access denied for user 'backup' | oops")
	want(t, "never", res, "wiki", RuleNever, Critical, "no successful backup is recorded")
	// A never-run application breaks no other rule: one line says it.
	var wiki int
	for _, p := range res.Problems {
		if p.App == "wiki" {
			wiki++
		}
	}
	if wiki != 1 || res.Status != Critical || res.Problems[0].Status != Critical {
		t.Errorf("problems %v: want wiki's one line and CRITICAL first", res.Problems)
	}
	for _, a := range res.Apps {
		if (a.Name == "wiki") != (a.AgeSeconds == nil) || a.Status != Critical {
			t.Errorf("app result %+v", a)
		}
	}

	// A run that ended partial after the last success is a warning; one
	// before it is history.
	e.run("hydro", day.Add(3*time.Hour), day.Add(4*time.Hour), catalog.RunPartial, "skipped shared/var: permission denied")
	res = e.eval(now, Options{})
	want(t, "partial", res, "hydro", RulePartial, Warning, "started 2026-11-29 03:00 skipped some of its work: skipped shared/var")
	want(t, "partial", res, "hydro", RuleFailed, OK)
	e.run("hydro", day.Add(5*time.Hour), day.Add(6*time.Hour), catalog.RunOK, "")
	want(t, "partial, then ok", e.eval(now, Options{}), "hydro", RulePartial, OK)
}

func TestFinishedBy(t *testing.T) {
	fb := day.Add(6 * time.Hour) // today 06:00
	cases := []struct {
		name string
		ends []time.Duration // ok runs ending at fb+d
		fail time.Duration   // a failed run ending at fb+fail, if not 0
		now  time.Duration
		st   Status
		sub  string
	}{
		{"on time", []time.Duration{-time.Minute}, 0, 3 * time.Hour, OK, ""},
		{"at the deadline", []time.Duration{0}, 0, 3 * time.Hour, OK, ""},
		{"late", []time.Duration{time.Minute}, 0, 3 * time.Hour, Warning, "ended 2026-11-29 06:01, after finished_by 06:00"},
		{"on time, then rerun", []time.Duration{-time.Hour, 2 * time.Hour}, 0, 3 * time.Hour, OK, ""},
		{"missing", []time.Duration{-24 * time.Hour}, 0, 3 * time.Hour, Critical, "between 2026-11-28 06:00 and 2026-11-29 06:00"},
		{"only failed", []time.Duration{-24 * time.Hour}, -time.Hour, 3 * time.Hour, Critical, "no backup ended ok"},
		// Before today's 06:00 the night judged is yesterday's.
		{"before finished_by", []time.Duration{-25 * time.Hour}, 0, -time.Hour, OK, ""},
		{"before finished_by, missing", []time.Duration{-49 * time.Hour}, 0, -time.Hour, Critical, "between 2026-11-27 06:00 and 2026-11-28 06:00"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, "", "finished_by = \"06:00\"\nwarn_age = \"100h\"\ncrit_age = \"100h\"")
			e.files("hydro", 1, 1)
			for _, d := range c.ends {
				e.run("hydro", fb.Add(d-time.Hour), fb.Add(d), catalog.RunOK, "")
			}
			if c.fail != 0 {
				e.run("hydro", fb.Add(c.fail-time.Minute), fb.Add(c.fail), catalog.RunFailed, "x")
			}
			want(t, c.name, e.eval(fb.Add(c.now), Options{}), "hydro", RuleFinishedBy, c.st, c.sub)
		})
	}

	// Without job runs (plain rsync), a complete snapshot since the night
	// began will do; a carried one does not.
	e := newEnv(t, "", "finished_by = \"06:00\"\nwarn_age = \"100h\"\ncrit_age = \"100h\"")
	e.files("wiki", 1, 1)
	e.snapshot(day.Add(-19*time.Hour), "wiki", 1, 1, false) // yesterday 05:00
	want(t, "rsync, no snapshot", e.eval(fb.Add(3*time.Hour), Options{}), "wiki", RuleFinishedBy, Critical, "no complete snapshot since 2026-11-28 06:00")
	e.snapshot(day.Add(5*time.Hour), "wiki", 1, 1, true)
	want(t, "rsync, carried", e.eval(fb.Add(3*time.Hour), Options{}), "wiki", RuleFinishedBy, Critical)
	e2 := newEnv(t, "", "finished_by = \"06:00\"\nwarn_age = \"100h\"\ncrit_age = \"100h\"")
	e2.files("wiki", 1, 1)
	e2.snapshot(day.Add(5*time.Hour), "wiki", 1, 1, false)
	want(t, "rsync, snapshot", e2.eval(fb.Add(3*time.Hour), Options{}), "wiki", RuleFinishedBy, OK)
}

func TestMinFilesAndMB(t *testing.T) {
	for _, c := range []struct {
		expect      string
		files, mb   Status
		filesSubstr string
	}{
		{"min_files = 4\nmin_mb = 1.0", OK, OK, ""},
		{"min_files = 5\nmin_mb = 1.0", Critical, OK, "4 files, fewer than min_files 5"},
		{"min_files = 4\nmin_mb = 1.001", OK, Critical, ""},
	} {
		e := newEnv(t, "", c.expect)
		e.run("hydro", day, day.Add(time.Hour), catalog.RunOK, "")
		e.files("hydro", 4, 1<<18) // 4 files, exactly 1 MB
		res := e.eval(day.Add(2*time.Hour), Options{})
		want(t, c.expect, res, "hydro", RuleMinFiles, c.files, c.filesSubstr)
		want(t, c.expect, res, "hydro", RuleMinMB, c.mb, "1.0 MB, less than min_mb 1.001")
	}
	// The default min_files is 1: an empty live tree is critical.
	e := newEnv(t, "", "")
	e.run("hydro", day, day.Add(time.Hour), catalog.RunOK, "")
	want(t, "empty tree", e.eval(day.Add(2*time.Hour), Options{}), "hydro", RuleMinFiles, Critical, "0 files")
}

func TestChange(t *testing.T) {
	for _, c := range []struct {
		name        string
		files       int
		size        int64
		st          Status
		subs        []string
		carriedLast bool
	}{
		{"same", 4, 100, OK, nil, false},
		{"files +50%", 6, 100, OK, nil, false},
		{"files +75%", 7, 57, Warning, []string{"files changed by +75.0% (4 to 7)", "more than max_change_percent 50"}, false},
		{"bytes -75%", 4, 25, Warning, []string{"bytes changed by -75.0% (400 to 100)"}, false},
		// A carried night is not a night's backup: the comparison skips it.
		{"carried", 1, 1, OK, nil, true},
	} {
		e := newEnv(t, "", "max_change_percent = 50.0")
		e.run("hydro", day, day.Add(time.Hour), catalog.RunOK, "")
		e.files("hydro", 4, 100)
		e.snapshot(day.Add(-43*time.Hour), "hydro", 4, 100, false)
		e.snapshot(day.Add(-19*time.Hour), "hydro", 4, 100, false)
		e.snapshot(day.Add(5*time.Hour), "hydro", c.files, c.size, c.carriedLast)
		res := e.eval(day.Add(6*time.Hour), Options{})
		if c.st == OK {
			want(t, c.name, res, "hydro", RuleChange, OK)
			continue
		}
		want(t, c.name, res, "hydro", RuleChange, c.st, c.subs...)
	}
	// Growth from nothing is an infinite change.
	if p := percent(0, 4); !math.IsInf(p, 1) || percent(0, 0) != 0 || percent(4, 1) != -75 {
		t.Errorf("percent: %v %v %v", p, percent(0, 0), percent(4, 1))
	}
}

func TestDump(t *testing.T) {
	e := newEnv(t, "", "")
	e.run("hydro", day, day.Add(time.Hour), catalog.RunOK, "")
	e.files("hydro", 1, 1)
	now := day.Add(2 * time.Hour)
	tree := e.part.Local("web", "demo.softxs.ch/hydro")
	cache := filepath.Join(t.TempDir(), "dumps.json")
	o := Options{DumpCache: cache}
	want(t, "good dump", e.eval(now, o), "hydro", RuleDump, OK)
	// wiki (moinmoin) has no database: nothing is looked for.
	want(t, "moinmoin", e.eval(now, o), "wiki", RuleDump, OK)
	if data, err := os.ReadFile(cache); err != nil || !strings.Contains(string(data), "hydro-2026-11-29T020000.sql.gz") {
		t.Errorf("dump cache %s: %v %s", cache, err, data)
	}

	// A newer dump cut short (the gzip stream ends early) is critical.
	bad := e.writeDump(tree, "hydro-2026-11-29T030000.sql.gz", goodDump, true)
	want(t, "truncated gzip", e.eval(now, o), "hydro", RuleDump, Critical, bad, "compressed stream damaged")
	// An intact gzip stream of a dump that lacks its completion line.
	e.writeDump(tree, "hydro-2026-11-29T030000.sql.gz", strings.TrimSuffix(goodDump, "-- Dump completed on 2026-11-29  2:30:01\n"), false)
	want(t, "no completion line", e.eval(now, o), "hydro", RuleDump, Critical, "the dump was cut short")
	// A PostgreSQL dump where the inventory says mysql.
	e.writeDump(tree, "hydro-2026-11-29T030000.sql.gz", "-- PostgreSQL database dump\n\n-- PostgreSQL database dump complete\n", false)
	want(t, "wrong kind", e.eval(now, o), "hydro", RuleDump, Critical, "want mysql")
	// Empty.
	empty := filepath.Join(tree, "db", "hydro-2026-11-29T030000.sql.gz")
	os.WriteFile(empty, nil, 0o644)
	want(t, "empty", e.eval(now, o), "hydro", RuleDump, Critical, "is empty")
	// None at all.
	os.RemoveAll(filepath.Join(tree, "db"))
	want(t, "no dump", e.eval(now, o), "hydro", RuleDump, Critical, "no database dump")
	if data, err := os.ReadFile(cache); err != nil || strings.Contains(string(data), "sql.gz") {
		t.Errorf("the cache still lists removed dumps: %v %s", err, data)
	}
}

// A dump is read whole once: the verdict is kept while its size and mtime
// stay, and a change of either reads it again.
func TestDumpCache(t *testing.T) {
	e := newEnv(t, "", "")
	e.run("hydro", day, day.Add(time.Hour), catalog.RunOK, "")
	e.files("hydro", 1, 1)
	now := day.Add(2 * time.Hour)
	cache := filepath.Join(t.TempDir(), "dumps.json")
	o := Options{DumpCache: cache}
	p := filepath.Join(e.part.Local("web", "demo.softxs.ch/hydro"), "db", "hydro-2026-11-29T020000.sql.gz")
	want(t, "first read", e.eval(now, o), "hydro", RuleDump, OK)
	fi, _ := os.Stat(p)
	// Same size and mtime, damaged content: the cached verdict stands.
	os.WriteFile(p, bytes.Repeat([]byte{'x'}, int(fi.Size())), 0o644)
	os.Chtimes(p, fi.ModTime(), fi.ModTime())
	want(t, "cached", e.eval(now, o), "hydro", RuleDump, OK)
	// Without the cache, or once the mtime moves, it is read again.
	want(t, "no cache", e.eval(now, Options{}), "hydro", RuleDump, Critical, "not a gzip stream")
	os.Chtimes(p, fi.ModTime().Add(time.Second), fi.ModTime().Add(time.Second))
	want(t, "mtime changed", e.eval(now, o), "hydro", RuleDump, Critical, "not a gzip stream")
	// The failure is remembered too (and still reported).
	want(t, "cached failure", e.eval(now, o), "hydro", RuleDump, Critical, "not a gzip stream")

	// A damaged cache file, and one that cannot be written, only cost
	// reading: the verdict is the same and the log says why.
	os.WriteFile(cache, []byte("{not json"), 0o644)
	var logs bytes.Buffer
	o.Log = slog.New(slog.NewTextHandler(&logs, nil))
	want(t, "damaged cache", e.eval(now, o), "hydro", RuleDump, Critical, "not a gzip stream")
	if !strings.Contains(logs.String(), "dump cache damaged") {
		t.Errorf("log: %s", logs.String())
	}
	logs.Reset()
	o.DumpCache = filepath.Join(cache, "sub", "dumps.json") // cache is a file
	want(t, "unwritable cache", e.eval(now, o), "hydro", RuleDump, Critical, "not a gzip stream")
	if !strings.Contains(logs.String(), "dump cache not written") {
		t.Errorf("log: %s", logs.String())
	}
}

// On a backup server the dump looked at is the pulled copy in the remote tier.
func TestDumpOnBackupServer(t *testing.T) {
	e := newEnv(t, "", "")
	e.run("hydro", day, day.Add(time.Hour), catalog.RunOK, "")
	e.files("hydro", 1, 1)
	now := day.Add(2 * time.Hour)
	want(t, "no pulled dump", e.eval(now, Options{Server: backup}), "hydro", RuleDump, Critical,
		e.part.Remote(host, "web", "demo.softxs.ch/hydro"))
	e.writeDump(e.part.Remote(host, "web", "demo.softxs.ch/hydro"), "hydro-2026-11-29T020000.sql.gz", goodDump, false)
	want(t, "pulled dump", e.eval(now, Options{Server: backup}), "hydro", RuleDump, OK)
}

func TestDrivesAndPulls(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "copy_max_age_days = 3", "warn_age = \"1000h\"\ncrit_age = \"1000h\"")
	now := day.Add(12 * time.Hour)
	e.run("hydro", day, day.Add(time.Hour), catalog.RunOK, "")
	e.run("wiki", day, day.Add(time.Hour), catalog.RunOK, "")
	e.files("hydro", 1, 1)
	e.files("wiki", 1, 1)
	if _, err := e.db.SeenMedium(ctx, "usb-1", "1111-aaaa", now.Add(-72*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.SeenMedium(ctx, "usb-2", "2222-bbbb", now.Add(-72*time.Hour-time.Second)); err != nil {
		t.Fatal(err)
	}
	// On the host: the old drive warns; pulls are not judged.
	res := e.eval(now, Options{})
	ds := problems(res, "", RuleDrive)
	if len(ds) != 1 || ds[0].Status != Warning || !strings.Contains(ds[0].Message, "usb-2 (2222-bbbb) last seen 2026-11-26 11:59, 3d0h ago, more than copy_max_age_days 3") {
		t.Errorf("drives: %v", ds)
	}
	if ps := problems(res, "", RulePull); len(ps) != 0 || res.Status != Warning {
		t.Errorf("a host judges pulls: %v, status %s", ps, res.Status)
	}
	// --app leaves drives and pulls out.
	if res := e.eval(now, Options{Apps: []string{"hydro"}}); len(res.Problems) != 0 || len(res.Apps) != 1 || res.Status != OK {
		t.Errorf("--app hydro: %+v", res)
	}

	// On the backup server: never pulled ok, then too long ago, then recently.
	pull := func(end time.Time, st catalog.RunStatus) {
		if _, err := e.db.RecordPull(ctx, catalog.Pull{BackupServer: backup, HostServer: host, Start: end.Add(-time.Hour), End: end, Result: st}); err != nil {
			t.Fatal(err)
		}
	}
	e.writeDump(e.part.Remote(host, "web", "demo.softxs.ch/hydro"), "hydro-2026-11-29T020000.sql.gz", goodDump, false)
	pull(now.Add(-time.Hour), catalog.RunFailed)
	want(t, "only failed pulls", e.eval(now, Options{Server: backup}), "", RulePull, Warning, "no ok pull by odin.softxs.ch in the last 1 recorded")
	pull(now.Add(-72*time.Hour-time.Second), catalog.RunOK)
	want(t, "old pull", e.eval(now, Options{Server: backup}), "", RulePull, Warning, "ended 2026-11-26 11:59, 3d0h ago, more than copy_max_age_days 3")
	pull(now.Add(-72*time.Hour), catalog.RunOK)
	want(t, "pull at the limit", e.eval(now, Options{Server: backup}), "", RulePull, OK)
}

func TestUnknownApps(t *testing.T) {
	e := newEnv(t, "", "")
	if _, err := e.evalErr(day, Options{Apps: []string{"nosuch"}}); err == nil || !strings.Contains(err.Error(), "--app nosuch: no such application in test.toml") {
		t.Errorf("unknown app: %v", err)
	}
	// Known, but of no report this machine makes.
	e.inv.Apps = append(e.inv.Apps, inventory.App{Name: "other", Server: "zg-1.softxs.ch", VM: tiers.NoVM, Relpath: "x", Type: inventory.TypeGit})
	if _, err := e.evalErr(day, Options{Apps: []string{"other"}}); err == nil || !strings.Contains(err.Error(), "--app other: not an application that zg-3.softxs.ch backs up or pulls") {
		t.Errorf("another host's app: %v", err)
	}
	if _, err := Evaluate(context.Background(), nil, Options{}); err == nil {
		t.Error("no inventory: no error")
	}
}

var perfRE = regexp.MustCompile(`^'((?:[^']|'')+)'=([0-9]+|U)(s|B)?;([0-9]*);([0-9]*);([0-9]*)(;[0-9]*)?$`)

func TestNagiosOutput(t *testing.T) {
	e := newEnv(t, "", "")
	e.run("hydro", day, day.Add(time.Hour), catalog.RunOK, "")
	e.files("hydro", 3, 1000)
	res := e.eval(day.Add(2*time.Hour), Options{})
	var b bytes.Buffer
	if err := res.WriteNagios(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	first := lines[0]
	if !strings.HasPrefix(first, "V2BACKUP CRITICAL - 1 critical, 0 warning in 2 applications on 1 server; CRITICAL zg-3.softxs.ch wiki: no successful backup") {
		t.Errorf("first line %q", first)
	}
	text, perf, ok := strings.Cut(first, " | ")
	if !ok || strings.Contains(text, "|") || strings.Contains(perf, "|") {
		t.Fatalf("first line has no single ' | ': %q", first)
	}
	got := map[string]string{}
	for _, f := range strings.Fields(perf) {
		m := perfRE.FindStringSubmatch(f)
		if m == nil {
			t.Errorf("perfdata %q does not parse", f)
			continue
		}
		got[m[1]] = m[2] + m[3] + ";" + m[4] + ";" + m[5]
	}
	for k, v := range map[string]string{"hydro_age": "3600s;93600;180000", "hydro_files": "3;;", "hydro_bytes": "3000B;;",
		"wiki_age": "U;93600;180000", "wiki_files": "0;;", "wiki_bytes": "0B;;"} {
		if got[k] != v {
			t.Errorf("perfdata %s = %q, want %q (all: %s)", k, got[k], v, perf)
		}
	}
	if len(lines) != 1+len(res.Problems) || lines[1] != "CRITICAL zg-3.softxs.ch wiki: no successful backup is recorded" {
		t.Errorf("long output %q", lines[1:])
	}

	// A '|' or a newline in a message cannot break the output; labels are
	// quoted with '' for a quote.
	r := &Result{Status: Warning, Apps: []AppResult{{Name: "it's", Server: host}},
		Problems: []Problem{{Status: Warning, Server: host, App: "it's", Message: "a|b\nc"}}}
	b.Reset()
	r.WriteNagios(&b)
	if want := "V2BACKUP WARNING - 0 critical, 1 warning in 1 application on 1 server; WARNING zg-3.softxs.ch it's: a/b c | 'it''s_age'=U;0;0;0 'it''s_files'=0;;;0 'it''s_bytes'=0B;;;0\nWARNING zg-3.softxs.ch it's: a/b c\n"; b.String() != want {
		t.Errorf("escaping:\n%q\nwant\n%q", b.String(), want)
	}

	// All well.
	r = &Result{Apps: []AppResult{{Name: "a", Server: host}, {Name: "b", Server: backup}}}
	b.Reset()
	r.WriteNagios(&b)
	if !strings.HasPrefix(b.String(), "V2BACKUP OK - 2 applications on 2 servers as expected | ") {
		t.Errorf("OK line %q", b.String())
	}
	b.Reset()
	WriteUnknown(&b, fmt.Errorf("catalog x|y: gone"))
	if b.String() != "V2BACKUP UNKNOWN - catalog x/y: gone\n" {
		t.Errorf("unknown line %q", b.String())
	}
	if Status(7).String() != "Status(7)" || Critical.String() != "CRITICAL" {
		t.Error("Status names")
	}
}
