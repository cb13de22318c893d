package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/softxs/v2backup/jobs/runfile"
)

// historyVMs is twoVMs with a 1 s quiet time and the admin history mount.
const historyVMs = `
[site]
name = "test"
partition = "{root}/v01/backup"

[site.snapshot]
quiet = "1s"

[[server]]
name = "zg-3.softxs.ch"
host_mount = "{root}/mnt/_host"
remote_view = "{root}/view"
history_mount = "{root}/history"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"
mount = "{root}/mnt/web"

[[vm]]
name = "intern"
server = "zg-3.softxs.ch"
mount = "{root}/mnt/intern"

[[app]]
name = "hydro"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "demo.softxs.ch/hydro"
type = "files"

[[app]]
name = "www"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "www.softxs.ch"
type = "files"

[[app]]
name = "tracking"
server = "zg-3.softxs.ch"
vm = "intern"
relpath = "intern.softxs.ch/tracking"
type = "files"
`

var snapshotLine = regexp.MustCompile(`(?m)^snapshot (\d{4}-\d\d-\d\dT\d{6}): `)

// quietSnapshot waits until the catalog has recorded every write and the
// quiet time (1 s in these inventories) has passed since, then runs
// `v2backup snapshot` and returns the snapshot's name and the report.
func (e *env) quietSnapshot() (name, report string) {
	e.t.Helper()
	e.expectCatalogMatchesDisk()
	// The quiet time is the product's rule for "done writing"; it is
	// measured from the catalog's record, which is now complete.
	settled := time.Now()
	for time.Since(settled) < 1100*time.Millisecond {
		time.Sleep(50 * time.Millisecond)
	}
	out, errOut, code := e.v2backup("snapshot")
	if code != 0 {
		e.t.Fatalf("snapshot: exit %d\n%s\n%s", code, out, errOut)
	}
	m := snapshotLine.FindStringSubmatch(out)
	if m == nil {
		e.t.Fatalf("snapshot printed no snapshot name:\n%s", out)
	}
	return m[1], out
}

// appStates parses the APP/STATE table of a snapshot report.
func appStates(report string) map[string]string {
	out := map[string]string{}
	for _, l := range lines(report) {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] != "APP" && !strings.HasPrefix(l, "snapshot ") && !strings.HasPrefix(l, "pruned ") {
			out[f[0]] = f[1]
		}
	}
	return out
}

// statusJSON is one row of `v2backup status --json`.
type statusJSON struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Files int64  `json:"files"`
	Error string `json:"error"`
}

// status runs `v2backup status --json` and indexes it by application.
func (e *env) status() map[string]statusJSON {
	e.t.Helper()
	out, errOut, code := e.v2backup("status", "--json")
	if code != 0 {
		e.t.Fatalf("status --json: exit %d\n%s\n%s", code, out, errOut)
	}
	var rows []statusJSON
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		e.t.Fatalf("status --json: %v\n%s", err, out)
	}
	m := map[string]statusJSON{}
	for _, r := range rows {
		m[r.Name] = r
	}
	return m
}

// readHistoryFile parses {partition}/history/backup-{app}-{day}.
func readHistoryFile(t *testing.T, p string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok && !strings.HasPrefix(l, "#") {
			kv[k] = v
		}
	}
	return kv
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Issue 4: history survives in-place writers, is browsable per VM and by
// the admin, is queryable, and a failed job is carried from the last
// complete state.
func TestHistory(t *testing.T) {
	e := newEnv(t)
	e.writeInventory(historyVMs)
	e.startDaemon()
	web := e.path("mnt/web")
	app := filepath.Join(web, "demo.softxs.ch/hydro")
	www := filepath.Join(web, "www.softxs.ch")
	tracking := e.path("mnt/intern/intern.softxs.ch/tracking")
	snaps := filepath.Join(e.partition, "snapshots/local")

	// A source tree for the rsync mode change, and the files the in-place
	// writers will change.
	src := e.path("src")
	sh(t, e.root, `mkdir -p src/d1 src/d2
		for i in $(seq 1 60); do echo "file $i" > src/d1/f$i; head -c $((i*100)) /dev/urandom > src/d2/g$i; done
		chmod 0644 src/d1/* src/d2/*`)
	sh(t, app, fmt.Sprintf(`rsync -a %s/ tree/
		head -c 65536 /dev/urandom > dd.bin
		echo line1 > append.log
		head -c 10000 /dev/urandom > offset.bin
		echo mode > mode.txt && chmod 0644 mode.txt
		echo touched > touch.txt && touch -d '2020-01-02 03:04:05' touch.txt
		echo gone > removed.txt`, src))
	sh(t, www, "echo www-v1 > index.html")
	sh(t, tracking, "echo tracking-v1 > issues.txt")
	before := snapshotTree(t, app)

	s1, rep1 := e.quietSnapshot()
	for app, st := range appStates(rep1) {
		if st != "complete" {
			t.Errorf("snapshot %s: %s is %s, want complete\n%s", s1, app, st, rep1)
		}
	}

	// In place, through the mount.
	sh(t, app, `dd if=/dev/zero of=dd.bin bs=1 count=100 seek=1000 conv=notrunc status=none
		echo line2 >> append.log
		chmod 0600 mode.txt
		touch touch.txt
		rm removed.txt
		echo new > added.txt`)
	f, err := os.OpenFile(filepath.Join(app, "offset.bin"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("OVERWRITTEN"), 5000); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	sh(t, e.root, fmt.Sprintf("chmod 0600 src/d1/* && chmod 0640 src/d2/* && rsync -a %s/ %s/tree/", src, app))

	// The snapshot is untouched: content, modes, times, and the catalog's hashes.
	s1app := filepath.Join(snaps, s1, "web/demo.softxs.ch/hydro")
	compareTrees(t, "snapshot "+s1+" after in-place writes", before, snapshotTree(t, s1app))
	if out, errOut, code := e.v2backup("verify", "--snapshot", s1); code != 0 {
		t.Errorf("verify --snapshot %s: exit %d\n%s\n%s", s1, code, out, errOut)
	}
	// The live tree has every change.
	live := snapshotTree(t, app)
	for _, c := range []struct {
		path string
		same bool
	}{{"dd.bin", false}, {"append.log", false}, {"offset.bin", false}, {"mode.txt", false}, {"touch.txt", false}, {"tree/d1/f1", false}, {"tree/d2/g7", false}} {
		if live[c.path] == before[c.path] {
			t.Errorf("live %s unchanged after the in-place write: %+v", c.path, live[c.path])
		}
	}
	if got := mustRead(t, filepath.Join(app, "append.log")); got != "line1\nline2\n" {
		t.Errorf("live append.log = %q", got)
	}
	if live["mode.txt"].mode.Perm() != 0o600 || live["tree/d1/f1"].mode.Perm() != 0o600 || live["tree/d2/g7"].mode.Perm() != 0o640 {
		t.Errorf("live modes: mode.txt %v, tree/d1/f1 %v, tree/d2/g7 %v", live["mode.txt"].mode, live["tree/d1/f1"].mode, live["tree/d2/g7"].mode)
	}
	if live["tree/d2/g7"].sha != before["tree/d2/g7"].sha {
		t.Error("rsync of an unchanged tree changed tree/d2/g7's content")
	}
	// find shows the old hash in the first snapshot.
	out, errOut, code := e.v2backup("find", "web/demo.softxs.ch/hydro/dd.bin")
	if code != 0 || !strings.Contains(out, s1) || !strings.Contains(out, before["dd.bin"].sha) {
		t.Errorf("find dd.bin: exit %d, want %s with %s\n%s\n%s", code, s1, before["dd.bin"].sha, out, errOut)
	}
	e.expectCatalogMatchesDisk()

	// .history through the VM's mount: only that VM's apps, read-only.
	for _, h := range []string{s1, "latest"} {
		hist := filepath.Join(web, ".history", h)
		if got := strings.Join(lines(sh(t, hist, "ls -A")), " "); got != "demo.softxs.ch www.softxs.ch" {
			t.Errorf("web's .history/%s lists %q", h, got)
		}
		compareTrees(t, "web/.history/"+h, before, snapshotTree(t, filepath.Join(hist, "demo.softxs.ch/hydro")))
		err := os.WriteFile(filepath.Join(hist, "demo.softxs.ch/hydro/append.log"), []byte("x"), 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("write into .history/%s: %v, want EROFS", h, err)
		}
		if err := os.Mkdir(filepath.Join(hist, "demo.softxs.ch/hydro/newdir"), 0o755); !errors.Is(err, syscall.EROFS) {
			t.Errorf("mkdir in .history/%s: %v, want EROFS", h, err)
		}
	}
	if got := strings.Join(lines(sh(t, e.path("mnt/intern/.history", s1), "ls -A")), " "); got != "intern.softxs.ch" {
		t.Errorf("intern's .history/%s lists %q", s1, got)
	}
	if _, err := os.Stat(e.path("mnt/intern/.history", s1, "demo.softxs.ch")); err == nil {
		t.Error("intern's history shows web's demo.softxs.ch")
	}
	// The admin history mount shows every VM.
	admin := e.path("history", s1)
	for p, want := range map[string]string{"web/www.softxs.ch/index.html": "www-v1\n", "intern/intern.softxs.ch/tracking/issues.txt": "tracking-v1\n", "web/demo.softxs.ch/hydro/append.log": "line1\n"} {
		if got, err := os.ReadFile(filepath.Join(admin, p)); err != nil || string(got) != want {
			t.Errorf("admin history %s = %q, %v; want %q", p, got, err, want)
		}
	}
	if err := os.WriteFile(filepath.Join(admin, "web/x"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write into the admin history: %v, want EROFS", err)
	}

	// www's job fails after changing its files: the next snapshot takes
	// www from s1.
	sh(t, www, "echo www-broken > index.html")
	start := time.Now()
	if err := runfile.Write(www, runfile.Record{App: "www", Type: "files", Host: "web", Status: runfile.Failed,
		Start: start, End: start.Add(time.Millisecond), Step: "copy", Error: "rsync: disk full"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for e.status()["www"].State != "failed" {
		if time.Now().After(deadline) {
			t.Fatalf("status never showed www failed: %+v", e.status()["www"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := e.status()["www"]; !strings.Contains(st.Error, "disk full") {
		t.Errorf("status of www: error %q, want the job's error", st.Error)
	}
	s2, rep2 := e.quietSnapshot()
	states := appStates(rep2)
	if states["www"] != "failed" || states["hydro"] != "complete" || states["tracking"] != "complete" {
		t.Errorf("snapshot %s states %v, want www failed, others complete\n%s", s2, states, rep2)
	}
	if got := mustRead(t, filepath.Join(snaps, s2, "web/www.softxs.ch/index.html")); got != "www-v1\n" {
		t.Errorf("failed www in %s has index.html %q, want s1's www-v1", s2, got)
	}
	if got := mustRead(t, filepath.Join(www, "index.html")); got != "www-broken\n" {
		t.Errorf("live www index.html = %q", got)
	}
	if got := mustRead(t, filepath.Join(snaps, s2, "web/demo.softxs.ch/hydro/append.log")); got != "line1\nline2\n" {
		t.Errorf("%s append.log = %q", s2, got)
	}

	// History files, one per app and day.
	day := strings.ReplaceAll(s2[:10], "-", "")
	for name, want := range map[string]string{"hydro": "complete", "www": "failed", "tracking": "complete"} {
		kv := readHistoryFile(t, filepath.Join(e.partition, "history", "backup-"+name+"-"+day))
		if kv["status"] != want || kv["snapshot"] != s2 || kv["app"] != name {
			t.Errorf("history file of %s: %v, want status %s, snapshot %s", name, kv, want, s2)
		}
		if kv["files"] == "" || kv["mb"] == "" {
			t.Errorf("history file of %s lacks files/mb: %v", name, kv)
		}
	}
	if kv := readHistoryFile(t, filepath.Join(e.partition, "history", "backup-hydro-"+day)); kv["files"] != fmt.Sprint(126) {
		t.Errorf("hydro history file: files %s, want 126 (120 in tree/, 6 at the top)", kv["files"])
	}
	out, errOut, code = e.v2backup("history", "hydro")
	if code != 0 || !strings.Contains(out, s2) || !regexp.MustCompile(s2+`\s+complete\s+126\s`).MatchString(out) {
		t.Errorf("history hydro: exit %d, want %s complete with 126 files\n%s\n%s", code, s2, out, errOut)
	}
	out, errOut, code = e.v2backup("history", "nosuchapp")
	if code != 2 || !strings.Contains(errOut, "nosuchapp") {
		t.Errorf("history nosuchapp: exit %d, want 2 naming the app\n%s", code, errOut)
	}

	// Snapshots of the last 24 hours are never pruned: s1 is still there,
	// and diff tells what the in-place writes changed.
	if strings.Contains(rep2, "pruned "+s1) {
		t.Errorf("snapshot %s pruned %s of the same day:\n%s", s2, s1, rep2)
	}
	out, errOut, code = e.v2backup("diff", s1, s2, "hydro")
	if code != 0 {
		t.Fatalf("diff %s %s hydro: exit %d\n%s", s1, s2, code, errOut)
	}
	for _, want := range []string{
		"+ web/demo.softxs.ch/hydro/added.txt", "- web/demo.softxs.ch/hydro/removed.txt",
		"M web/demo.softxs.ch/hydro/append.log", "M web/demo.softxs.ch/hydro/dd.bin", "M web/demo.softxs.ch/hydro/offset.bin",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diff %s %s hydro lacks %q:\n%s", s1, s2, want, out)
		}
	}
	if strings.Contains(out, "www.softxs.ch") {
		t.Errorf("diff limited to hydro shows www:\n%s", out)
	}

	// Retention: a snapshot from the day before (a plain hard-link tree,
	// the on-disk format), one nightly and no weekly or monthly: the older
	// would be pruned; --dry-run deletes nothing.
	s2t, err := time.ParseInLocation("2006-01-02T150405", s2, time.Local)
	if err != nil {
		t.Fatal(err)
	}
	s0 := s2t.AddDate(0, 0, -1).Format("2006-01-02T150405")
	sh(t, snaps, "cp -al "+s2+" "+s0)
	e.writeInventory(strings.Replace(historyVMs, "[[server]]", "[site.retention]\nnightly = 1\nweekly = 0\nmonthly = 0\n\n[[server]]", 1))
	out, errOut, code = e.v2backup("snapshot", "--dry-run")
	if code != 0 || strings.TrimSpace(out) != "would prune "+s0 {
		t.Errorf("snapshot --dry-run: exit %d, want exactly %q\n%s\n%s", code, "would prune "+s0, out, errOut)
	}
	for _, s := range []string{s0, s2} {
		if _, err := os.Stat(filepath.Join(snaps, s)); err != nil {
			t.Errorf("after --dry-run: %v", err)
		}
	}
}
