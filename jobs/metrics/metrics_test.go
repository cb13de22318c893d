package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

const testInventory = `
[site]
partition = "/v01/backup"

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

[[app]]
name = "mail"
server = "zg-3.softxs.ch"
relpath = "mail.softxs.ch"
type = "maildir"

[[app]]
name = "cvs"
server = "zg-3.softxs.ch"
relpath = "cvs.softxs.ch"
type = "cvs"

[[server]]
name = "zg-4.softxs.ch"

[[app]]
name = "blog"
server = "zg-4.softxs.ch"
relpath = "blog.softxs.ch"
type = "wordpress"
`

const host = "zg-3.softxs.ch"

var (
	night0 = time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	now    = night0.Add(6 * time.Hour)
)

// fixture is a host catalog and a backup server's own catalog with real
// runs, files, a snapshot, pulls, a drive and copies, recorded through the
// catalog API.
type fixture struct {
	inv       *inventory.Inventory
	db, own   *catalog.DB
	ownDrives int
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	inv, err := inventory.Parse("test.toml", []byte(testInventory))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{inv: inv}
	for _, p := range []**catalog.DB{&f.db, &f.own} {
		db, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		*p = db
	}
	db, own := f.db, f.own
	runs := []struct {
		app        string
		start, end time.Time
		st         catalog.RunStatus
	}{
		{"hydro", night0.Add(-2 * time.Hour), night0.Add(-2*time.Hour + 90*time.Second), catalog.RunOK},
		{"mail", night0.Add(-3 * time.Hour), night0.Add(-3*time.Hour + time.Minute), catalog.RunOK},
		{"mail", night0.Add(-time.Hour), night0.Add(-time.Hour + time.Minute), catalog.RunFailed},
	}
	for _, r := range runs {
		id, err := db.StartRun(ctx, r.app, "backup", r.start)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.FinishRun(ctx, id, r.end, r.st, 3, 300, "rsync: disk full"); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.UpsertFiles(ctx, []catalog.FileRecord{
		{Path: "web/demo.softxs.ch/hydro/db.sql.gz", App: "hydro", Size: 200, MTime: night0},
		{Path: "web/demo.softxs.ch/hydro/x", App: "hydro", Size: 50, MTime: night0},
	}); err != nil {
		t.Fatal(err)
	}
	b, err := db.BeginSnapshot(ctx, tiers.Local, host, tiers.SnapshotName(night0), night0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Add(ctx, catalog.ManifestEntry{Path: "web/demo.softxs.ch/hydro/db.sql.gz", Size: 200, MTime: night0,
		SHA256: strings.Repeat("a", 64), App: "hydro"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The backup server's catalog: an ok pull, then a failed one.
	for i, res := range []catalog.RunStatus{catalog.RunOK, catalog.RunFailed} {
		start := night0.Add(time.Duration(i+1) * time.Hour)
		if _, err := own.RecordPull(ctx, catalog.Pull{BackupServer: "odin.softxs.ch", HostServer: host,
			Start: start, End: start.Add(2 * time.Minute), Files: 10, Bytes: 1000, Result: res}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := own.SeenMedium(ctx, "usb-1", "1234-abcd", night0.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	id, err := own.RecordCopy(ctx, catalog.Copy{MediaID: m.ID, Server: host, Tier: tiers.Local,
		Snapshot: tiers.SnapshotName(night0), At: night0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := own.VerifyCopy(ctx, id, night0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := own.SeenMedium(ctx, "usb-2", "5678-ef01", night0); err != nil {
		t.Fatal(err)
	}
	return f
}

// source reports the host and, with two, a second host never pulled yet,
// as a backup server would: both reports carry the backup server's drives,
// which must still be exported once.
func (f *fixture) source(reports int) report.Source {
	return func(ctx context.Context) ([]*report.Report, error) {
		r, err := report.Build(ctx, report.Options{Inventory: f.inv, Server: host, DB: f.db, Own: f.own, Now: now})
		if err != nil {
			return nil, err
		}
		out := []*report.Report{r}
		if reports > 1 {
			r, err := report.Build(ctx, report.Options{Inventory: f.inv, Server: "zg-4.softxs.ch", Own: f.own, Now: now, Missing: "no catalog yet"})
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
}

// liveStub is a daemon's live counters with fixed values: the real ones
// (catalog.Recorder, fusefs.Mount) are exercised by cmd/v2backup and the
// integration test.
type liveStub struct{}

func (liveStub) QueueDepth() int { return 7 }
func (liveStub) Dropped() uint64 { return 2 }
func (liveStub) FileInodes() []InodeCount {
	return []InodeCount{{VM: "web", Live: 65000, Pruned: 12}}
}
func (liveStub) FUSEOps() []OpCount {
	return []OpCount{{VM: "web", Op: "LOOKUP", Requests: 40, Seconds: 0.5}, {VM: "web", Op: "RMDIR", Requests: 3, Errors: 1, Seconds: 0.01}}
}

// parse reads the text exposition format.
func parse(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// value is the value of the series of name whose labels include want.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func app(name, vm, typ string) map[string]string {
	return map[string]string{"server": host, "app": name, "vm": vm, "type": typ}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{}
	for a, b := range m {
		out[a] = b
	}
	out[k] = v
	return out
}

// checkReport checks the report metrics of the fixture in mfs.
func checkReport(t *testing.T, mfs map[string]*dto.MetricFamily) {
	t.Helper()
	hydro, mail, cvs := app("hydro", "web", "rails"), app("mail", "_host", "maildir"), app("cvs", "_host", "cvs")
	hostL := map[string]string{"server": host}
	drive := map[string]string{"drive": "usb-1", "uuid": "1234-abcd"}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"v2backup_scrape_error", nil, 0},
		// hydro: its run ended at 03:01:30, the snapshot at 05:00 is later.
		{"v2backup_app_last_success_timestamp_seconds", hydro, float64(night0.Unix())},
		{"v2backup_app_age_seconds", hydro, 6 * 3600},
		{"v2backup_app_files", hydro, 2},
		{"v2backup_app_bytes", hydro, 250},
		{"v2backup_app_state", with(hydro, "state", "ok"), 1},
		{"v2backup_app_state", with(hydro, "state", "stale"), 0},
		{"v2backup_app_last_run_ok", hydro, 1},
		{"v2backup_app_last_run_duration_seconds", hydro, 90},
		{"v2backup_app_last_run_files", hydro, 3},
		{"v2backup_app_last_run_bytes", hydro, 300},
		{"v2backup_app_last_run_status", with(hydro, "status", "ok"), 1},
		{"v2backup_app_state", with(mail, "state", "failed"), 1},
		{"v2backup_app_last_run_ok", mail, 0},
		{"v2backup_app_last_run_status", with(mail, "status", "failed"), 1},
		{"v2backup_app_last_run_timestamp_seconds", mail, float64(night0.Add(-time.Hour + time.Minute).Unix())},
		{"v2backup_app_state", with(cvs, "state", "never"), 1},
		{"v2backup_app_last_success_timestamp_seconds", cvs, 0},
		{"v2backup_host_catalog_up", hostL, 1},
		{"v2backup_snapshots", hostL, 1},
		{"v2backup_snapshot_latest_timestamp_seconds", hostL, float64(night0.Unix())},
		{"v2backup_snapshot_latest_age_seconds", hostL, 6 * 3600},
		{"v2backup_snapshot_latest_files", hostL, 1},
		{"v2backup_snapshot_latest_bytes", hostL, 200},
		{"v2backup_pull_last_timestamp_seconds", hostL, float64(night0.Add(2*time.Hour + 2*time.Minute).Unix())},
		{"v2backup_pull_last_ok", hostL, 0},
		{"v2backup_pull_last_result", with(hostL, "result", "failed"), 1},
		{"v2backup_pull_last_result", with(hostL, "result", "ok"), 0},
		{"v2backup_pull_last_success_timestamp_seconds", hostL, float64(night0.Add(time.Hour + 2*time.Minute).Unix())},
		{"v2backup_pull_last_files", hostL, 10},
		{"v2backup_pull_last_bytes", hostL, 1000},
		{"v2backup_pull_last_duration_seconds", hostL, 120},
		{"v2backup_drive_last_seen_timestamp_seconds", drive, float64(night0.Add(2 * time.Hour).Unix())},
		{"v2backup_drive_last_copy_timestamp_seconds", drive, float64(night0.Add(time.Hour).Unix())},
		{"v2backup_drive_last_copy_age_seconds", drive, 5 * 3600},
		{"v2backup_drive_last_copy_verified_timestamp_seconds", drive, float64(night0.Add(2 * time.Hour).Unix())},
		{"v2backup_drive_last_copy_timestamp_seconds", map[string]string{"drive": "usb-2"}, 0},
	} {
		got, ok := value(t, mfs, c.name, c.labels)
		if !ok {
			t.Errorf("%s%v: missing", c.name, c.labels)
		} else if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"v2backup_app_age_seconds", cvs},             // never succeeded
		{"v2backup_app_last_run_ok", cvs},             // no run
		{"v2backup_drive_last_copy_age_seconds", nil}, // usb-2 has no copy, but usb-1 has
	} {
		if c.labels == nil {
			if n := len(mfs[c.name].GetMetric()); n != 1 {
				t.Errorf("%s: %d series, want 1", c.name, n)
			}
			continue
		}
		if v, ok := value(t, mfs, c.name, c.labels); ok {
			t.Errorf("%s%v = %v, want absent", c.name, c.labels, v)
		}
	}
	if n := len(mfs["v2backup_drive_last_seen_timestamp_seconds"].GetMetric()); n != 2 {
		t.Errorf("%d drive series, want 2 (each drive once)", n)
	}
}

// TestCollector: the collector's metrics of a real catalog, gathered from a
// registry and read back through the text format, pass promlint.
func TestCollector(t *testing.T) {
	f := newFixture(t)
	c := NewCollector(f.source(2), liveStub{})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	parsed := parse(t, strings.NewReader(b.String()))
	checkReport(t, parsed)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"v2backup_catalog_queue_depth", nil, 7},
		{"v2backup_catalog_dropped_events_total", nil, 2},
		{"v2backup_fuse_requests_total", map[string]string{"vm": "web", "op": "LOOKUP"}, 40},
		{"v2backup_fuse_errors_total", map[string]string{"vm": "web", "op": "RMDIR"}, 1},
		{"v2backup_fuse_request_seconds_total", map[string]string{"vm": "web", "op": "LOOKUP"}, 0.5},
		{"v2backup_fuse_file_inodes", map[string]string{"vm": "web"}, 65000},
		{"v2backup_fuse_pruned_inodes_total", map[string]string{"vm": "web"}, 12},
	} {
		if got, ok := value(t, parsed, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	zg4 := map[string]string{"server": "zg-4.softxs.ch"}
	if v, ok := value(t, parsed, "v2backup_host_catalog_up", zg4); !ok || v != 0 {
		t.Errorf("zg-4 host_catalog_up = %v (present %v), want 0", v, ok)
	}
	if v, ok := value(t, parsed, "v2backup_app_state", with(with(app("blog", "_host", "wordpress"), "state", "never"), "server", "zg-4.softxs.ch")); !ok || v != 1 {
		t.Errorf("zg-4's blog never = %v (present %v), want 1", v, ok)
	}
	if mf := parsed["v2backup_fuse_requests_total"]; mf.GetType() != dto.MetricType_COUNTER {
		t.Errorf("v2backup_fuse_requests_total is a %v, want a counter", mf.GetType())
	}
}

// TestHostWithoutCatalog: a pulled host with no shipped catalog yet has
// host_catalog_up 0, its apps never, and no snapshot series.
func TestHostWithoutCatalog(t *testing.T) {
	f := newFixture(t)
	src := func(ctx context.Context) ([]*report.Report, error) {
		r, err := report.Build(ctx, report.Options{Inventory: f.inv, Server: host, Own: f.own, Now: now, Missing: "no catalog yet"})
		return []*report.Report{r}, err
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(src, nil))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		m[mf.GetName()] = mf
	}
	if v, ok := value(t, m, "v2backup_host_catalog_up", nil); !ok || v != 0 {
		t.Errorf("host_catalog_up = %v (present %v), want 0", v, ok)
	}
	if v, ok := value(t, m, "v2backup_app_state", with(app("hydro", "web", "rails"), "state", "never")); !ok || v != 1 {
		t.Errorf("hydro never = %v (present %v), want 1", v, ok)
	}
	if _, ok := m["v2backup_snapshots"]; ok {
		t.Error("snapshot series without a host catalog")
	}
	if _, ok := m["v2backup_catalog_queue_depth"]; ok {
		t.Error("live series without a Live")
	}
	if v, ok := value(t, m, "v2backup_pull_last_ok", map[string]string{"server": host}); !ok || v != 0 {
		t.Errorf("pull_last_ok = %v (present %v): pulls come from the own catalog", v, ok)
	}
}

// TestDuplicateReport: a source that reports a host twice still scrapes
// (a duplicate series would fail the whole gathering).
func TestDuplicateReport(t *testing.T) {
	f := newFixture(t)
	one := f.source(1)
	src := func(ctx context.Context) ([]*report.Report, error) {
		r, err := one(ctx)
		if err != nil {
			return nil, err
		}
		return append(r, r...), nil
	}
	if n, err := testutil.GatherAndCount(prometheus.NewPedanticRegistry(), "v2backup_app_files"); err != nil || n != 0 {
		t.Fatalf("empty registry: %d %v", n, err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(src, nil))
	if n, err := testutil.GatherAndCount(reg, "v2backup_app_files"); err != nil || n != 3 {
		t.Errorf("app_files series: %d, %v; want 3 (each app once)", n, err)
	}
}

// TestHandler: /metrics over HTTP, from a private registry with the Go and
// process collectors; a catalog that cannot be read is scrape_error 1 and
// a 200, with the live counters still there.
func TestHandler(t *testing.T) {
	f := newFixture(t)
	get := func(h http.Handler) map[string]*dto.MetricFamily {
		t.Helper()
		srv := httptest.NewServer(h)
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %s", resp.Status)
		}
		return parse(t, resp.Body)
	}
	mfs := get(Handler(f.source(1), liveStub{}))
	checkReport(t, mfs)
	for _, name := range []string{"go_goroutines", "process_open_fds", "v2backup_catalog_queue_depth"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}

	// An unreadable catalog: the host's is closed under the source.
	f.db.Close()
	mfs = get(Handler(f.source(1), liveStub{}))
	if v, ok := value(t, mfs, "v2backup_scrape_error", nil); !ok || v != 1 {
		t.Errorf("scrape_error = %v (present %v) with a closed catalog, want 1", v, ok)
	}
	if v, ok := value(t, mfs, "v2backup_catalog_queue_depth", nil); !ok || v != 7 {
		t.Errorf("queue depth = %v (present %v) with a closed catalog, want 7", v, ok)
	}
	if _, ok := mfs["v2backup_app_files"]; ok {
		t.Error("app series from a failed source")
	}
	// A handler has its own registry: two of them do not collide.
	Handler(f.source(1), nil)

	// The source's error goes to the collector's logger.
	var log bytes.Buffer
	c := NewCollector(f.source(1), nil)
	c.Logger = slog.New(slog.NewTextHandler(&log, nil))
	get(c.Handler())
	if !strings.Contains(log.String(), "metrics: building the reports") || !strings.Contains(log.String(), "database is closed") {
		t.Errorf("log of a failed scrape: %q", log.String())
	}
}

// TestWriteTextfile: the file node_exporter reads, parsed back; no live
// series; replaced atomically; a failing source still writes the file, with
// scrape_error 1, and returns the error.
func TestWriteTextfile(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	dir := t.TempDir()
	if err := WriteTextfile(ctx, dir, f.source(1)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, TextfileName)
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mfs := parse(t, fh)
	fh.Close()
	checkReport(t, mfs)
	for name := range mfs {
		if !strings.HasPrefix(name, "v2backup_") || strings.Contains(name, "fuse") || strings.Contains(name, "queue") {
			t.Errorf("textfile has %s: only the report's metrics belong there", name)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("textfile mode: %v %v, want 0644 for node_exporter", st.Mode(), err)
	}

	boom := errors.New("catalog: database is locked")
	err = WriteTextfile(ctx, dir, func(context.Context) ([]*report.Report, error) { return nil, boom })
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), path) {
		t.Errorf("failing source: %v, want the source's error naming %s", err, path)
	}
	fh, err = os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	mfs = parse(t, fh)
	if v, ok := value(t, mfs, "v2backup_scrape_error", nil); !ok || v != 1 {
		t.Errorf("scrape_error = %v (present %v) after a failing source, want 1", v, ok)
	}
	if _, ok := mfs["v2backup_app_files"]; ok {
		t.Error("stale app series left in the textfile after a failing source")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("%d entries in the textfile directory, want only %s (no temporary files)", len(entries), TextfileName)
	}
}

func TestWriteTextfileErrors(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	missing := filepath.Join(t.TempDir(), "nope")
	if err := WriteTextfile(ctx, missing, f.source(1)); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing directory: %v, want an error naming %s", err, missing)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteTextfile(ctx, file, f.source(1)); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file as directory: %v", err)
	}
	// A directory where the file goes: the rename fails, even for root.
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, TextfileName), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteTextfile(ctx, dir, f.source(1)); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, TextfileName)) {
		t.Errorf("a directory in the file's place: %v, want an error naming it", err)
	}
}

// BenchmarkScrape is one /metrics scrape of a host whose catalog holds
// 100,000 live files: what every Prometheus scrape costs the daemon.
func BenchmarkScrape(b *testing.B) {
	ctx := context.Background()
	inv, err := inventory.Parse("test.toml", []byte(testInventory))
	if err != nil {
		b.Fatal(err)
	}
	db, err := catalog.Open(filepath.Join(b.TempDir(), "catalog.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	recs := make([]catalog.FileRecord, 0, 10000)
	for i := range 100000 {
		recs = append(recs, catalog.FileRecord{Path: fmt.Sprintf("web/demo.softxs.ch/hydro/d%03d/f%06d", i%1000, i), App: "hydro", Size: int64(i), MTime: night0})
		if len(recs) == cap(recs) {
			if err := db.UpsertFiles(ctx, recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	src := func(ctx context.Context) ([]*report.Report, error) {
		r, err := report.Build(ctx, report.Options{Inventory: inv, Server: host, DB: db})
		return []*report.Report{r}, err
	}
	h := Handler(src, liveStub{})
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "v2backup_app_files") {
			b.Fatalf("scrape: %d", rec.Code)
		}
	}
}

// TestTimeout: a source still busy at the collector's timeout (a catalog
// locked for long) is a scrape error, not a hung scrape.
func TestTimeout(t *testing.T) {
	c := NewCollector(func(ctx context.Context) ([]*report.Report, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}, nil)
	c.Timeout = time.Millisecond
	c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ms := collectOnly(c, scrapeError)
	var m dto.Metric
	if len(ms) != 1 || ms[0].Write(&m) != nil || m.GetGauge().GetValue() != 1 {
		t.Errorf("scrape_error after the timeout: %v, want one series of 1", ms)
	}
}

// collectOnly runs c's collection and returns its metrics of desc d.
func collectOnly(c *Collector, d *prometheus.Desc) []prometheus.Metric {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var out []prometheus.Metric
	for m := range ch {
		if m.Desc() == d {
			out = append(out, m)
		}
	}
	return out
}
