package statuspage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
description = "Hydro <script>alert(\"x\")</script> & Co"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "demo.softxs.ch/hydro"
type = "rails"

[[app]]
name = "mail"
description = "Mail Server"
server = "zg-3.softxs.ch"
relpath = "mail.softxs.ch"
type = "maildir"

[[app]]
name = "cvs"
description = "CVS Repository"
server = "zg-3.softxs.ch"
relpath = "cvs.softxs.ch"
type = "cvs"
`

var night0 = time.Date(2026, 11, 25, 5, 0, 0, 0, time.UTC)

const sha = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// fixture is a real catalog with three nights of hydro (100, 200 and 300
// bytes, the middle one carried), a failed mail backup, a never-backed-up
// cvs, two pulls and a drive; and the report source over it.
func fixture(t *testing.T) (report.Source, *catalog.DB) {
	t.Helper()
	ctx := context.Background()
	inv, err := inventory.Parse("test.toml", []byte(testInventory))
	if err != nil {
		t.Fatal(err)
	}
	db, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for i := range 3 {
		at := night0.AddDate(0, 0, i)
		b, err := db.BeginSnapshot(ctx, tiers.Local, "zg-3.softxs.ch", tiers.SnapshotName(at), at)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Add(ctx, catalog.ManifestEntry{Path: "web/demo.softxs.ch/hydro/db.sql.gz", Size: int64(100 * (i + 1)),
			MTime: at, SHA256: sha, App: "hydro"}); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			if err := b.SetApp("hydro", catalog.AppCarried); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	run := func(app string, start time.Time, st catalog.RunStatus, msg string) {
		id, err := db.StartRun(ctx, app, "backup", start)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.FinishRun(ctx, id, start.Add(time.Minute), st, 1, 10, msg); err != nil {
			t.Fatal(err)
		}
	}
	run("hydro", night0.AddDate(0, 0, 2).Add(-time.Hour), catalog.RunOK, "")
	run("mail", night0.Add(-time.Hour), catalog.RunOK, "")
	run("mail", night0.AddDate(0, 0, 2).Add(-time.Hour), catalog.RunFailed, "rsync: write failed: <No space> left & gone")
	if err := db.UpsertFiles(ctx, []catalog.FileRecord{
		{Path: "web/demo.softxs.ch/hydro/db.sql.gz", App: "hydro", Size: 3 << 20, MTime: night0},
	}); err != nil {
		t.Fatal(err)
	}
	for i, res := range []catalog.RunStatus{catalog.RunOK, catalog.RunFailed} {
		start := night0.AddDate(0, 0, 2).Add(time.Duration(i+1) * time.Hour)
		if _, err := db.RecordPull(ctx, catalog.Pull{BackupServer: "odin.softxs.ch", HostServer: "zg-3.softxs.ch",
			Start: start, End: start.Add(90 * time.Second), Result: res, Error: map[int]string{1: "ssh: connection refused"}[i]}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := db.SeenMedium(ctx, "usb-<1>", "1234-abcd", night0)
	if err != nil {
		t.Fatal(err)
	}
	id, err := db.RecordCopy(ctx, catalog.Copy{MediaID: m.ID, Server: "zg-3.softxs.ch", Tier: tiers.Local,
		Snapshot: tiers.SnapshotName(night0), At: night0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.VerifyCopy(ctx, id, night0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	now := night0.AddDate(0, 0, 2).Add(6 * time.Hour)
	src := func(ctx context.Context) ([]*report.Report, error) {
		r, err := report.Build(ctx, report.Options{Inventory: inv, Server: "zg-3.softxs.ch", DB: db, Now: now})
		if err != nil {
			return nil, err
		}
		return []*report.Report{r}, nil
	}
	return src, db
}

func get(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

// row returns the HTML of the table row of app.
func row(t *testing.T, body, app string) string {
	t.Helper()
	i := strings.Index(body, `id="app-`+app+`"`)
	if i < 0 {
		t.Fatalf("no row for %s in\n%s", app, body)
	}
	j := strings.Index(body[i:], "</tr>")
	return body[i : i+j]
}

func TestPage(t *testing.T) {
	src, _ := fixture(t)
	rec := get(t, Handler(src), http.MethodGet, "/")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /: %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q: must forbid loading anything", csp)
	}
	body := rec.Body.String()
	for _, want := range []string{
		"<title>(2 not ok) v2backup status: zg-3.softxs.ch</title>",
		`<meta http-equiv="refresh" content="60">`,
		"Generated at <time>2026-11-27 11:00 UTC</time> &middot; 1 ok, 1 failed, 1 never",
		"<span class=\"big\">3</span> snapshots &middot; latest <strong>2026-11-27T050000</strong>",
		"usb-&lt;1&gt;", "1234-abcd", `<span class="badge state-ok">verified</span> <span class="age">2026-11-25 07:00 UTC</span>`,
		"zg-3.softxs.ch local/2026-11-25T050000",
		"ssh: connection refused", "1m30s",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// The failed pull (newest) is listed before the ok one.
	if i, j := strings.Index(body, `state-failed">failed</span><div class="error">ssh`), strings.Index(body, `state-ok">ok</span></td>
<td></td>`); i < 0 || j < 0 || i > j {
		t.Errorf("pulls not newest first (failed at %d, ok at %d)", i, j)
	}

	hydro := row(t, body, "hydro")
	for _, want := range []string{
		`class="row-ok"`, `<span class="badge state-ok">ok</span>`,
		// Escaped, never markup: the description comes from the inventory.
		"Hydro &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co",
		"2026-11-27 05:00 UTC<div class=\"age\">6h00m ago</div>", "3.0M",
		`<td>web</td>`, `demo.softxs.ch/hydro`, `<td>rails</td>`,
		// 100, 200, 300 bytes over three nights: bottom left to top right.
		`<polyline points="3.0,29.0 80.0,16.0 157.0,3.0"`,
		`<circle class="carried" cx="80.0" cy="16.0" r="3"`,
		"3 nights, 1 carried",
	} {
		if !strings.Contains(hydro, want) {
			t.Errorf("hydro row lacks %q:\n%s", want, hydro)
		}
	}
	if strings.Contains(body, "<script") {
		t.Errorf("an inventory description became markup:\n%s", body)
	}
	mail := row(t, body, "mail")
	for _, want := range []string{
		`class="row-failed"`, `<span class="badge state-failed">failed</span>`,
		`<div class="error">rsync: write failed: &lt;No space&gt; left &amp; gone</div>`,
		"no snapshots yet", "Mail Server",
	} {
		if !strings.Contains(mail, want) {
			t.Errorf("mail row lacks %q:\n%s", want, mail)
		}
	}
	cvs := row(t, body, "cvs")
	for _, want := range []string{`class="row-never"`, `<span class="badge state-never">never</span>`, "<td>&ndash;</td>", "no job run"} {
		if !strings.Contains(cvs, want) {
			t.Errorf("cvs row lacks %q:\n%s", want, cvs)
		}
	}
}

func TestChart(t *testing.T) {
	n := func(b int64, st catalog.AppState) report.Night {
		return report.Night{Snapshot: "s", Bytes: b, Files: 1, State: st}
	}
	for _, tc := range []struct {
		name    string
		nights  []report.Night
		points  string
		carried int
	}{
		{"none", nil, "", 0},
		{"one night: the middle", []report.Night{n(5, catalog.AppComplete)}, "80.0,16.0", 0},
		{"all empty: on the floor", []report.Night{n(0, catalog.AppComplete), n(0, catalog.AppComplete)}, "3.0,29.0 157.0,29.0", 0},
		{"flat: a middle line", []report.Night{n(5, catalog.AppComplete), n(5, catalog.AppCarried)}, "3.0,16.0 157.0,16.0", 1},
		{"falling", []report.Night{n(400, catalog.AppComplete), n(0, catalog.AppComplete), n(100, catalog.AppCarried)},
			"3.0,3.0 80.0,29.0 157.0,22.5", 1},
	} {
		c := newChart(tc.nights)
		if c.Points != tc.points || c.Carried != tc.carried || len(c.Dots) != len(tc.nights) {
			t.Errorf("%s: points %q carried %d dots %d, want %q %d %d", tc.name, c.Points, c.Carried, len(c.Dots), tc.points, tc.carried, len(tc.nights))
		}
	}
	if c := newChart([]report.Night{n(1<<20, catalog.AppComplete), n(2<<20, catalog.AppCarried)}); c.Label != "size over 2 nights: 1.0M to 2.0M, 1 carried" {
		t.Errorf("label %q", c.Label)
	}
}

func TestJSON(t *testing.T) {
	src, _ := fixture(t)
	h := Handler(src)
	for _, target := range []string{"/status.json", "/?format=json"} {
		rec := get(t, h, http.MethodGet, target)
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %s", target, rec.Code, rec.Header().Get("Content-Type"))
		}
		var reps []report.Report
		if err := json.Unmarshal(rec.Body.Bytes(), &reps); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if len(reps) != 1 || len(reps[0].Apps) != 3 || reps[0].Apps[1].State != report.Failed || reps[0].Snapshots.Count != 3 {
			t.Errorf("%s: %+v", target, reps)
		}
	}
	// No hosts is an empty list, not null.
	empty := Handler(func(context.Context) ([]*report.Report, error) { return nil, nil })
	if rec := get(t, empty, http.MethodGet, "/status.json"); strings.TrimSpace(rec.Body.String()) != "[]" {
		t.Errorf("no reports: %q", rec.Body)
	}
	if rec := get(t, empty, http.MethodGet, "/"); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "No hosts to report on.") {
		t.Errorf("no reports: %d %s", rec.Code, rec.Body)
	}
}

func TestMethodsAndPaths(t *testing.T) {
	src, _ := fixture(t)
	h := Handler(src)
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		rec := get(t, h, m, "/")
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" ||
			!strings.Contains(rec.Body.String(), "method "+m+" on /: the status page is read-only") {
			t.Errorf("%s /: %d allow %q %s", m, rec.Code, rec.Header().Get("Allow"), rec.Body)
		}
	}
	if rec := get(t, h, http.MethodPost, "/status.json"); rec.Code != http.StatusMethodNotAllowed || !strings.Contains(rec.Body.String(), `"error"`) {
		t.Errorf("POST /status.json: %d %s", rec.Code, rec.Body)
	}
	full := get(t, h, http.MethodGet, "/")
	head := get(t, h, http.MethodHead, "/")
	if head.Code != http.StatusOK || head.Body.Len() != 0 || head.Header().Get("Content-Length") != full.Header().Get("Content-Length") {
		t.Errorf("HEAD /: %d, %d body bytes, length %q (GET: %q)", head.Code, head.Body.Len(), head.Header().Get("Content-Length"), full.Header().Get("Content-Length"))
	}
	if rec := get(t, h, http.MethodGet, "/nothing"); rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "no page at /nothing") {
		t.Errorf("GET /nothing: %d %s", rec.Code, rec.Body)
	}
	if rec := get(t, h, http.MethodGet, "/?format=xml"); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "format &#34;xml&#34;: use html or json") {
		t.Errorf("GET /?format=xml: %d %s", rec.Code, rec.Body)
	}
}

func TestSourceError(t *testing.T) {
	var logged bytes.Buffer
	h := Handler(func(context.Context) ([]*report.Report, error) {
		return nil, errors.New("catalog /v01/backup/<x>.db: database is locked")
	}, WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
	rec := get(t, h, http.MethodGet, "/")
	if rec.Code != http.StatusInternalServerError ||
		!strings.Contains(rec.Body.String(), "cannot build the reports: catalog /v01/backup/&lt;x&gt;.db: database is locked") {
		t.Errorf("failing source: %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(logged.String(), "database is locked") {
		t.Errorf("the failure is not logged: %q", logged.String())
	}
	rec = get(t, h, http.MethodGet, "/status.json")
	var e map[string]string
	if rec.Code != http.StatusInternalServerError || json.Unmarshal(rec.Body.Bytes(), &e) != nil || !strings.Contains(e["error"], "database is locked") {
		t.Errorf("failing source, JSON: %d %s", rec.Code, rec.Body)
	}

	// A real failure: the catalog closed under the source.
	src, db := fixture(t)
	db.Close()
	quiet := WithLogger(slog.New(slog.DiscardHandler))
	if rec := get(t, Handler(src, quiet), http.MethodGet, "/"); rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "cannot build the reports: catalog") {
		t.Errorf("closed catalog: %d %s", rec.Code, rec.Body)
	}
}

func TestMissingCatalog(t *testing.T) {
	inv, err := inventory.Parse("test.toml", []byte(testInventory))
	if err != nil {
		t.Fatal(err)
	}
	own, err := catalog.Open(filepath.Join(t.TempDir(), "own.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { own.Close() })
	src := func(ctx context.Context) ([]*report.Report, error) {
		r, err := report.Build(ctx, report.Options{Inventory: inv, Server: "zg-3.softxs.ch", Own: own, Missing: "no catalog shipped by a pull yet"})
		return []*report.Report{r}, err
	}
	body := get(t, Handler(src), http.MethodGet, "/").Body.String()
	for _, want := range []string{"Catalog not available: no catalog shipped by a pull yet", "3 never", "No pulls of this host recorded here.",
		"No off-site drives recorded here.", `<span class="big">0</span> snapshots`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
}

// A template that cannot render gives a 500 that says so, in plain text
// when even the error page cannot be rendered; nothing half-written.
func TestRenderError(t *testing.T) {
	src, _ := fixture(t)
	saved := pageTmpl
	t.Cleanup(func() { pageTmpl = saved })
	pageTmpl = template.Must(template.New("broken").Parse(`<p>{{template "nosuch"}}</p>`))
	var logged bytes.Buffer
	rec := get(t, Handler(src, WithLogger(slog.New(slog.NewTextHandler(&logged, nil)))), http.MethodGet, "/")
	if rec.Code != http.StatusInternalServerError || rec.Header().Get("Content-Type") != "text/plain; charset=utf-8" ||
		!strings.HasPrefix(rec.Body.String(), "500 Internal Server Error: rendering the page: ") || strings.Contains(rec.Body.String(), "<p>") {
		t.Errorf("broken template: %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	if !strings.Contains(logged.String(), "nosuch") {
		t.Errorf("the rendering failure is not logged: %q", logged.String())
	}
}

// The view's less common rows: a partial run after the last success keeps
// its message, a running one is grey, only the newest pulls are listed and
// an old snapshot is marked.
func TestViewEdges(t *testing.T) {
	now := night0.AddDate(0, 0, 3)
	r := &report.Report{Server: "zg-3.softxs.ch", Generated: now,
		Apps: []report.App{
			{Name: "a", State: report.OK, LastSuccess: now.Add(-time.Hour), Age: time.Hour,
				LastRun: &catalog.Run{Status: catalog.RunPartial, Start: now.Add(-2 * time.Hour), Error: "skipped 2 files"}},
			{Name: "b", Description: "B", State: report.Stale, LastRun: &catalog.Run{Status: catalog.RunRunning, Start: now}},
		},
		Snapshots: report.Snapshots{Count: 1, Latest: "old", At: now.Add(-50 * time.Hour)},
	}
	for i := range maxPulls + 3 {
		r.Pulls = append(r.Pulls, catalog.Pull{BackupServer: "odin", Start: now.Add(-time.Duration(i) * time.Hour), Result: catalog.RunOK})
	}
	h := newHost(r)
	if a := h.Apps[0]; a.Description != "a" || a.RunClass != "stale" || a.Error != "skipped 2 files" || a.Age != "1h00m" {
		t.Errorf("partial run: %+v", a)
	}
	if b := h.Apps[1]; b.RunClass != "never" || b.Error != "" || b.LastSuccess != "" {
		t.Errorf("running run: %+v", b)
	}
	if len(h.Pulls) != maxPulls || h.MorePulls != 3 || h.Pulls[0].Took != "" {
		t.Errorf("%d pulls listed, %d more, first %+v; want %d, 3", len(h.Pulls), h.MorePulls, h.Pulls[0], maxPulls)
	}
	if !h.Snapshots.Stale || h.Snapshots.Age != "2d2h" || h.Counts != "1 ok, 1 stale" {
		t.Errorf("snapshots %+v, counts %q", h.Snapshots, h.Counts)
	}
	p := newPage([]*report.Report{nil, r})
	if p.Title != "(1 not ok) v2backup status: zg-3.softxs.ch" || len(p.Hosts) != 1 {
		t.Errorf("page title %q, %d hosts", p.Title, len(p.Hosts))
	}
}
