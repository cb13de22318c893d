package integration

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/softxs/v2backup/jobs/sshtest"
)

var httpAt = regexp.MustCompile(`http: status page and metrics at http://([^/ ]+)/`)

// scrape GETs /metrics and returns the samples by series, e.g.
// `v2backup_app_files{app="hydro",server="zg-3.softxs.ch",type="files",vm="web"}`.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	return samples(t, string(body))
}

// samples parses the text format's sample lines (labels never hold spaces here).
func samples(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range lines(text) {
		if strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// TestMetricsThroughDaemon: the daemon serves /metrics on its listen
// address; after a write through a VM mount it shows the application's
// file, the catalog queue and the mount's FUSE requests; it stops serving
// on SIGTERM. `v2backup metrics --textfile` writes the same report.
func TestMetricsThroughDaemon(t *testing.T) {
	e := newEnv(t)
	e.writeInventory(strings.Replace(twoVMs, `remote_view = "{root}/view"`, "remote_view = \"{root}/view\"\nlisten = \"127.0.0.1:0\"", 1))
	d := e.startDaemon()
	d.waitLog(t, "http: status page and metrics at http://")
	m := httpAt.FindStringSubmatch(d.log.String())
	if m == nil {
		t.Fatalf("no address in the log:\n%s", d.log.String())
	}
	addr := m[1]

	if err := os.WriteFile(e.path("mnt/web/demo.softxs.ch/hydro/index.html"), []byte("<h1>hydro</h1>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hydro := `{app="hydro",server="zg-3.softxs.ch",type="files",vm="web"}`
	var s map[string]float64
	// The catalog records the write off the request path: poll.
	for deadline := time.Now().Add(30 * time.Second); ; {
		s = scrape(t, addr)
		if s["v2backup_app_files"+hydro] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hydro's file never showed in /metrics: files %v", s["v2backup_app_files"+hydro])
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The status page shares the listener (its content is tested in statuspage_test).
	if resp, err := http.Get("http://" + addr + "/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET /: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if got := s["v2backup_app_bytes"+hydro]; got != 15 {
		t.Errorf("hydro bytes %v, want 15", got)
	}
	for _, series := range []string{
		"v2backup_app_state" + strings.Replace(hydro, `type=`, `state="never",type=`, 1),
		`v2backup_host_catalog_up{server="zg-3.softxs.ch"}`,
		"v2backup_catalog_queue_depth",
		"v2backup_catalog_dropped_events_total",
		"v2backup_scrape_error",
		`v2backup_fuse_errors_total{op="CREATE",vm="web"}`,
	} {
		if _, ok := s[series]; !ok {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if s["v2backup_scrape_error"] != 0 || s["v2backup_catalog_dropped_events_total"] != 0 {
		t.Errorf("scrape_error %v, dropped %v; want 0 and 0", s["v2backup_scrape_error"], s["v2backup_catalog_dropped_events_total"])
	}
	for _, op := range []string{"CREATE", "LOOKUP"} {
		if n := s[`v2backup_fuse_requests_total{op="`+op+`",vm="web"}`]; n < 1 {
			t.Errorf("%s requests of vm web: %v, want at least 1", op, n)
		}
	}
	// The remote view's requests are counted under vm="remote-view".
	sh(t, e.root, "ls -la view/ >/dev/null")
	vs := scrape(t, addr)
	if n := vs[`v2backup_fuse_requests_total{op="OPENDIR",vm="remote-view"}`]; n < 1 {
		t.Errorf("OPENDIR requests of the remote view: %v, want at least 1", n)
	}
	if _, ok := vs[`v2backup_fuse_file_inodes{vm="remote-view"}`]; !ok {
		t.Error("/metrics lacks the remote view's file inodes")
	}
	// The intern VM got no write: it is there, with no CREATE.
	if n := s[`v2backup_fuse_requests_total{op="CREATE",vm="intern"}`]; n != 0 {
		t.Errorf("CREATE requests of vm intern: %v, want 0", n)
	}

	// What cp -a and rsync -a do through the mount is no error: the
	// error counters must not cry wolf (a missing name, a missing
	// attribute, are normal answers).
	src := makeSourceTree(t, e.root, "strings")
	sh(t, e.root, "cp -a "+src+" mnt/web/www.softxs.ch/cp && rsync -aHAX "+src+"/ mnt/web/www.softxs.ch/rsync/ && rsync -aHAX "+src+"/ mnt/web/www.softxs.ch/rsync/")
	s = scrape(t, addr)
	for series, n := range s {
		if strings.HasPrefix(series, "v2backup_fuse_errors_total") && n != 0 {
			t.Errorf("%s = %v after cp -a and rsync -a", series, n)
		}
	}
	if n := s[`v2backup_fuse_requests_total{op="WRITE",vm="web"}`] + s[`v2backup_fuse_requests_total{op="CREATE",vm="web"}`]; n < 10 {
		t.Errorf("%v CREATE+WRITE requests after copying a tree", n)
	}
	// The copied files are inodes the kernel remembers, far under the cap.
	if n, ok := s[`v2backup_fuse_file_inodes{vm="web"}`]; !ok || n < 10 || n > 65536 {
		t.Errorf("file inodes of vm web after copying a tree: %v (present %v)", n, ok)
	}
	if n, ok := s[`v2backup_fuse_pruned_inodes_total{vm="web"}`]; !ok || n != 0 {
		t.Errorf("pruned inodes of vm web: %v (present %v), want 0", n, ok)
	}

	// SIGHUP mounts a new VM: its requests show up in the next scrape.
	inv, err := os.ReadFile(e.inventory)
	if err != nil {
		t.Fatal(err)
	}
	inv = append(inv, []byte(`
[[vm]]
name = "wiki"
server = "zg-3.softxs.ch"
mount = "`+e.path("mnt/wiki")+`"

[[app]]
name = "moin"
server = "zg-3.softxs.ch"
vm = "wiki"
relpath = "wiki.softxs.ch"
type = "files"
`)...)
	if err := os.WriteFile(e.inventory, inv, 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	if err := d.waitFor("READY=1", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.path("mnt/wiki/wiki.softxs.ch/nothing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat in the new VM's mount: %v", err)
	}
	s = scrape(t, addr)
	if n := s[`v2backup_fuse_requests_total{op="LOOKUP",vm="wiki"}`]; n < 1 {
		t.Errorf("LOOKUP requests of the VM mounted by SIGHUP: %v, want at least 1", n)
	}
	if _, ok := s[`v2backup_app_files{app="moin",server="zg-3.softxs.ch",type="files",vm="wiki"}`]; !ok {
		t.Error("the application added by SIGHUP is not in /metrics")
	}

	tf := e.path("textfile")
	if err := os.Mkdir(tf, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := e.v2backup("metrics", "--textfile", tf); code != 0 {
		t.Fatalf("metrics --textfile: exit %d: %s", code, errOut)
	}
	data, err := os.ReadFile(filepath.Join(tf, "v2backup.prom"))
	if err != nil {
		t.Fatal(err)
	}
	ts := samples(t, string(data))
	if ts["v2backup_app_files"+hydro] != 1 {
		t.Errorf("textfile: hydro files %v, want 1", ts["v2backup_app_files"+hydro])
	}
	if _, ok := ts["v2backup_catalog_queue_depth"]; ok {
		t.Error("the textfile has the daemon's live counters")
	}

	if err := d.stop(t); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.log.String())
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Error("/metrics still served after SIGTERM")
	}
}

// TestBackupServerDaemon: `serve` on a machine that is only a backup
// server mounts nothing and serves /metrics for the hosts it pulls (never
// pulled yet: no catalog, every application never); SIGTERM stops it.
func TestBackupServerDaemon(t *testing.T) {
	e := newEnv(t)
	e.writeInventory(twoVMs + `
[[backup_server]]
name = "odin.softxs.ch"
partition = "{root}/odin/v01/backup"
pulls = ["zg-3.softxs.ch"]
listen = "127.0.0.1:0"
`)
	e.server = "odin.softxs.ch"
	d := e.startDaemon()
	d.waitLog(t, "http: status page and metrics at http://")
	addr := httpAt.FindStringSubmatch(d.log.String())[1]
	s := scrape(t, addr)
	for series, want := range map[string]float64{
		`v2backup_host_catalog_up{server="zg-3.softxs.ch"}`:                                           0,
		`v2backup_app_state{app="hydro",server="zg-3.softxs.ch",state="never",type="files",vm="web"}`: 1,
		`v2backup_scrape_error`: 0,
	} {
		if got, ok := s[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if m := e.mounts(); len(m) != 0 {
		t.Errorf("a backup server's daemon mounted %v", m)
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("daemon exit: %v\n%s", err, d.log.String())
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Error("/metrics still served after SIGTERM")
	}
}

// TestPullMetrics: after a real pull over ssh, the backup server's
// `v2backup metrics` reports the pull of the host as ok, with its files.
func TestPullMetrics(t *testing.T) {
	s := sshtest.StartT(t)
	e := newEnv(t)
	e.writeInventory(pullInventory(s))
	d := e.startDaemon()
	odin := *e
	odin.server = "odin.softxs.ch"
	sh(t, e.path("mnt/web/demo.softxs.ch/hydro"), `mkdir -p db && echo dump-1 > db/dump.sql && echo page > index.html`)
	snap, _ := e.quietSnapshot()
	d.waitView(t, snap)
	if out, errOut, code := odin.v2backup("pull"); code != 0 {
		t.Fatalf("pull: exit %d\n%s\n%s", code, out, errOut)
	}
	out, errOut, code := odin.v2backup("metrics")
	if code != 0 {
		t.Fatalf("metrics: exit %d\n%s", code, errOut)
	}
	m := samples(t, out)
	host := `{server="zg-3.softxs.ch"}`
	if m["v2backup_pull_last_ok"+host] != 1 || m[`v2backup_pull_last_result{result="ok",server="zg-3.softxs.ch"}`] != 1 {
		t.Errorf("pull_last_ok %v: want the pull ok\n%s", m["v2backup_pull_last_ok"+host], out)
	}
	if m["v2backup_pull_last_files"+host] < 2 || m["v2backup_pull_last_timestamp_seconds"+host] < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("pull files %v at %v: want the two files, just now", m["v2backup_pull_last_files"+host], m["v2backup_pull_last_timestamp_seconds"+host])
	}
	if m["v2backup_pull_last_success_timestamp_seconds"+host] != m["v2backup_pull_last_timestamp_seconds"+host] {
		t.Errorf("last success %v != last pull %v after an ok pull", m["v2backup_pull_last_success_timestamp_seconds"+host], m["v2backup_pull_last_timestamp_seconds"+host])
	}
}
