package roview

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const testServer = "zg-3.softxs.ch"

func mountRemote(t *testing.T, opts RemoteOptions) (*RemoteView, string) {
	t.Helper()
	mnt := t.TempDir()
	if opts.Logger == nil {
		opts.Logger = discardLog()
	}
	v, err := MountRemoteView(mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Unmount(); err != nil {
			t.Logf("unmount %s: %v; detaching", mnt, err)
			if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount %s: %v", mnt, err)
			}
		}
	})
	return v, mnt
}

func readDesc(t *testing.T, mnt string) Description {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mnt, DescName))
	if err != nil {
		t.Fatalf("read %s: %v", DescName, err)
	}
	var d Description
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v in %q", DescName, err, b)
	}
	return d
}

func TestRemoteViewPinsASnapshotDuringAPull(t *testing.T) {
	snapDir := t.TempDir()
	makeSnapshot(t, snapDir, "2026-11-28T050000", map[string]string{
		"web/demo.softxs.ch/hydro/a.txt": "day 1",
		"web/demo.softxs.ch/hydro/b.txt": "unchanged",
		"intern/intern.softxs.ch/c.txt":  "intern day 1",
	})
	clock := newFakeClock()
	v, mnt := mountRemote(t, RemoteOptions{SnapDir: snapDir, Server: testServer, Idle: 30 * time.Second, Poll: -1, Now: clock.Now})
	if v.Snapshot() != "2026-11-28T050000" {
		t.Fatalf("view shows %q", v.Snapshot())
	}
	if got, want := readDirNames(t, mnt), []string{SumsName, DescName, "intern", "web"}; !slices.Equal(got, want) {
		t.Errorf("root = %q, want %q", got, want)
	}
	d := readDesc(t, mnt)
	if d.Server != testServer || d.Snapshot != "2026-11-28T050000" || d.Files != 3 || d.Bytes != int64(len("day 1unchangedintern day 1")) || d.Manifest != SumsName {
		t.Errorf("description = %+v", d)
	}

	// A pull starts: it holds the root directory open and reads a file.
	dir, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if _, err := dir.Readdirnames(1); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "web/demo.softxs.ch/hydro/a.txt")); err != nil || string(b) != "day 1" {
		t.Fatalf("a.txt = %q, %v", b, err)
	}

	// A newer snapshot appears mid-pull; time passes.
	makeSnapshot(t, snapDir, "2026-11-29T050000", map[string]string{
		"web/demo.softxs.ch/hydro/a.txt": "day 2",
		"web/demo.softxs.ch/hydro/b.txt": "unchanged",
		"web/demo.softxs.ch/hydro/n.txt": "new on day 2",
	})
	clock.Advance(time.Hour)
	if switched, err := v.Refresh(); err != nil || switched {
		t.Fatalf("Refresh during a pull = %v, %v; want no switch", switched, err)
	}
	// The pull carries on in the snapshot it started on.
	if b, err := os.ReadFile(filepath.Join(mnt, "web/demo.softxs.ch/hydro/a.txt")); err != nil || string(b) != "day 1" {
		t.Errorf("a.txt mid-pull = %q, %v; want day 1", b, err)
	}
	_, err = os.Stat(filepath.Join(mnt, "web/demo.softxs.ch/hydro/n.txt"))
	wantErrno(t, "stat the newer snapshot's file mid-pull", err, syscall.ENOENT)
	if b, err := os.ReadFile(filepath.Join(mnt, "intern/intern.softxs.ch/c.txt")); err != nil || string(b) != "intern day 1" {
		t.Errorf("c.txt mid-pull = %q, %v", b, err)
	}
	if rest, err := dir.Readdirnames(-1); err != nil || !slices.Contains(rest, "web") {
		t.Errorf("rest of the root listing = %q, %v", rest, err)
	}
	if d := readDesc(t, mnt); d.Snapshot != "2026-11-28T050000" {
		t.Errorf("description mid-pull names %q", d.Snapshot)
	}

	// Busy but not idle long enough: still no switch.
	dir.Close()
	if switched, _ := v.Refresh(); switched {
		t.Fatalf("switched right after the pull, before the idle period")
	}
	// The pull is over; once idle, the view moves on.
	switchNow(t, v, clock)
	if v.Snapshot() != "2026-11-29T050000" {
		t.Fatalf("the view moved to %s", v.Snapshot())
	}
	if d := readDesc(t, mnt); d.Snapshot != "2026-11-29T050000" || d.Files != 3 {
		t.Errorf("description after the switch = %+v", d)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "web/demo.softxs.ch/hydro/a.txt")); err != nil || string(b) != "day 2" {
		t.Errorf("a.txt after the switch = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "web/demo.softxs.ch/hydro/n.txt")); err != nil {
		t.Errorf("new file after the switch: %v", err)
	}
	_, err = os.Stat(filepath.Join(mnt, "intern"))
	wantErrno(t, "a VM absent from the new snapshot", err, syscall.ENOENT)
	if got, want := readDirNames(t, mnt), []string{SumsName, DescName, "web"}; !slices.Equal(got, want) {
		t.Errorf("root after the switch = %q, want %q", got, want)
	}
	sums, _ := os.ReadFile(filepath.Join(mnt, SumsName))
	if !strings.Contains(string(sums), "  web/demo.softxs.ch/hydro/n.txt\n") {
		t.Errorf("SHA256SUMS after the switch:\n%s", sums)
	}

	// writes fail
	_, err = os.Create(filepath.Join(mnt, "web/x"))
	wantErrno(t, "create in the remote view", err, syscall.EROFS)
	_, err = os.OpenFile(filepath.Join(mnt, SumsName), os.O_WRONLY, 0)
	wantErrno(t, "open SHA256SUMS for writing", err, syscall.EROFS)
	wantErrno(t, "unlink in the remote view", os.Remove(filepath.Join(mnt, "web/demo.softxs.ch/hydro/a.txt")), syscall.EROFS)
}

func TestRemoteViewManifestSourceAndErrors(t *testing.T) {
	snapDir := t.TempDir()
	makeSnapshot(t, snapDir, "2026-11-28T050000", map[string]string{"web/a.ch/f": "hello\n"})
	h := "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"

	var mu sync.Mutex
	fail := true
	manifest := func(snapshot string) ([]ManifestEntry, error) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return nil, errors.New("catalog has no manifest")
		}
		return []ManifestEntry{{Path: "web/a.ch/f", SHA256: h, Size: 6}}, nil
	}
	v, mnt := mountRemote(t, RemoteOptions{SnapDir: snapDir, Server: testServer, Manifest: manifest, Poll: -1})
	if v.Snapshot() != "" {
		t.Errorf("view shows %q without a manifest", v.Snapshot())
	}
	if got := readDirNames(t, mnt); len(got) != 0 {
		t.Errorf("root without a manifest = %q, want empty", got)
	}
	_, err := os.Stat(filepath.Join(mnt, SumsName))
	wantErrno(t, "stat SHA256SUMS without a manifest", err, syscall.ENOENT)
	if _, err := v.Refresh(); err == nil || !strings.Contains(err.Error(), "2026-11-28T050000") || !strings.Contains(err.Error(), "catalog has no manifest") {
		t.Errorf("Refresh = %v, want an error naming the snapshot and the cause", err)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	if switched, err := v.Refresh(); !switched || err != nil {
		t.Fatalf("Refresh = %v, %v", switched, err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, SumsName)); err != nil || string(b) != h+"  web/a.ch/f\n" {
		t.Errorf("SHA256SUMS = %q, %v", b, err)
	}

	// a bad manifest is refused, naming the entry
	makeSnapshot(t, snapDir, "2026-11-29T050000", map[string]string{"web/a.ch/f": "hello\n"})
	v2, err := NewRemoteView(RemoteOptions{SnapDir: snapDir, Server: testServer, Poll: -1, Logger: discardLog(),
		Manifest: func(string) ([]ManifestEntry, error) {
			return []ManifestEntry{{Path: "../../etc/passwd", SHA256: h}}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Refresh(); err == nil || !strings.Contains(err.Error(), "../../etc/passwd") {
		t.Errorf("Refresh with a bad manifest = %v", err)
	}
}

func TestRemoteViewOptionErrors(t *testing.T) {
	for _, c := range []struct {
		opts RemoteOptions
		want string
	}{
		{RemoteOptions{SnapDir: "relative", Server: testServer}, `SnapDir "relative"`},
		{RemoteOptions{SnapDir: "/x", Server: "Bad_Server"}, `invalid server "Bad_Server"`},
		{RemoteOptions{SnapDir: "/x", Server: testServer, Idle: -time.Second}, "Idle -1s"},
		{RemoteOptions{SnapDir: "/x", Server: testServer, StateDir: "state"}, `StateDir "state"`},
	} {
		_, err := MountRemoteView(t.TempDir(), c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("MountRemoteView(%+v) = %v, want an error with %q", c.opts, err, c.want)
		}
	}
	if _, err := MountAdmin(t.TempDir(), "snapshots"); err == nil || !strings.Contains(err.Error(), `"snapshots"`) {
		t.Errorf("MountAdmin(relative) = %v", err)
	}
	if _, err := MountRemoteView(filepath.Join(t.TempDir(), "missing"), RemoteOptions{SnapDir: "/x", Server: testServer, Poll: -1}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("MountRemoteView(missing mount point) = %v", err)
	}
}

func TestRemoteViewCachesComputedManifests(t *testing.T) {
	snapDir, state := t.TempDir(), filepath.Join(t.TempDir(), "state")
	makeSnapshot(t, snapDir, "2026-11-28T050000", map[string]string{"web/a.ch/f": "hello\n"})
	v, err := NewRemoteView(RemoteOptions{SnapDir: snapDir, Server: testServer, StateDir: state, Poll: -1, Logger: discardLog()})
	if err != nil || v.Snapshot() != "2026-11-28T050000" {
		t.Fatalf("NewRemoteView = %v, shows %q", err, v.Snapshot())
	}
	cache := filepath.Join(state, "remoteview-2026-11-28T050000.manifest.json")
	if _, err := os.Stat(cache); err != nil {
		t.Fatalf("no cached manifest: %v", err)
	}
	// A restart takes the cached manifest instead of hashing again: make
	// the cache say something hashing would not.
	fake := strings.Repeat("0", 64)
	if err := os.WriteFile(cache, []byte(`[{"Path":"web/a.ch/f","SHA256":"`+fake+`","Size":6}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	v, _ = NewRemoteView(RemoteOptions{SnapDir: snapDir, Server: testServer, StateDir: state, Poll: -1, Logger: discardLog()})
	if got := string(v.cur.sums); got != fake+"  web/a.ch/f\n" {
		t.Errorf("SHA256SUMS after a restart = %q, want the cached one", got)
	}
	// A corrupt cache is ignored and recomputed.
	if err := os.WriteFile(cache, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, _ = NewRemoteView(RemoteOptions{SnapDir: snapDir, Server: testServer, StateDir: state, Poll: -1, Logger: discardLog()})
	if got := string(v.cur.sums); !strings.HasPrefix(got, "5891b5b5") {
		t.Errorf("SHA256SUMS with a corrupt cache = %q, want recomputed", got)
	}
	// Cache entries of pruned snapshots go away.
	makeSnapshot(t, snapDir, "2026-11-29T050000", map[string]string{"web/a.ch/f": "bye\n"})
	os.RemoveAll(filepath.Join(snapDir, "2026-11-28T050000"))
	if _, err := v.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cache); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cache of a pruned snapshot: %v, want removed", err)
	}
}

// viewcmd runs internal/viewcmd as its own process: programs such as
// rsync and sha256sum must not be forked by the process serving the mount.
func viewcmd(t *testing.T, args ...string) string {
	t.Helper()
	bin := buildViewcmd(t)
	mnt := t.TempDir()
	cmd := exec.Command(bin, append([]string{"-mount", mnt}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("viewcmd exited with %v: %s", err, stderr.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("viewcmd did not stop on SIGTERM")
		}
		syscall.Unmount(mnt, syscall.MNT_DETACH) // in case it died mounted
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("first line %q", line)
		}
		ready <- err
		io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("viewcmd not ready: %v: %s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("viewcmd not ready after a minute: %s", stderr.String())
	}
	return mnt
}

var (
	viewcmdOnce sync.Once
	viewcmdBin  string
	viewcmdErr  error
	viewcmdDir  string
)

func buildViewcmd(t *testing.T) string {
	viewcmdOnce.Do(func() {
		viewcmdDir, viewcmdErr = os.MkdirTemp("", "viewcmd-")
		if viewcmdErr != nil {
			return
		}
		viewcmdBin = filepath.Join(viewcmdDir, "viewcmd")
		out, err := exec.Command("go", "build", "-o", viewcmdBin, "./internal/viewcmd").CombinedOutput()
		if err != nil {
			viewcmdErr = fmt.Errorf("go build viewcmd: %v: %s", err, out)
		}
	})
	if viewcmdErr != nil {
		t.Fatal(viewcmdErr)
	}
	return viewcmdBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if viewcmdDir != "" {
		os.RemoveAll(viewcmdDir)
	}
	os.Exit(code)
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q in %s: %v\n%s", name, args, dir, err, out)
	}
	return string(out)
}

func TestRemoteViewSha256sumAndRsync(t *testing.T) {
	for _, tool := range []string{"rsync", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	snapDir := t.TempDir()
	files := map[string]string{
		"web/demo.softxs.ch/hydro/a.txt":         "alpha\n",
		"web/demo.softxs.ch/hydro/sp ace.txt":    "spaces\n",
		"web/demo.softxs.ch/hydro/back\\slash":   "backslash\n",
		"web/demo.softxs.ch/hydro/sub/empty":     "",
		"web/demo.softxs.ch/hydro/link":          "->/etc/passwd",
		"web/demo.softxs.ch/hydro/db/":           "",
		"intern/intern.softxs.ch/app/big.bin":    strings.Repeat("0123456789abcdef", 1<<16),
		"_host/backup.softxs.ch/etc/config.toml": "x = 1\n",
	}
	makeSnapshot(t, snapDir, "2026-11-28T050000", files)
	mnt := viewcmd(t, "-mode", "remote", "-snapdir", snapDir, "-server", testServer, "-state", filepath.Join(t.TempDir(), "state"))

	out := run(t, mnt, "sha256sum", "-c", "--strict", SumsName)
	if strings.Count(out, ": OK") != 6 {
		t.Errorf("sha256sum -c in the view:\n%s", out)
	}
	copyDir := t.TempDir()
	run(t, "/", "rsync", "-a", mnt+"/", copyDir+"/")
	out = run(t, copyDir, "sha256sum", "-c", "--strict", SumsName)
	if strings.Count(out, ": OK") != 6 {
		t.Errorf("sha256sum -c in the copy:\n%s", out)
	}
	if target, err := os.Readlink(filepath.Join(copyDir, "web/demo.softxs.ch/hydro/link")); err != nil || target != "/etc/passwd" {
		t.Errorf("copied symlink = %q, %v", target, err)
	}
	if fi, err := os.Stat(filepath.Join(copyDir, "web/demo.softxs.ch/hydro/db")); err != nil || !fi.IsDir() {
		t.Errorf("copied empty directory: %v", err)
	}
	var d Description
	b, _ := os.ReadFile(filepath.Join(copyDir, DescName))
	if err := json.Unmarshal(b, &d); err != nil || d.Snapshot != "2026-11-28T050000" || d.Server != testServer || d.Files != 6 {
		t.Errorf("copied description = %+v, %v", d, err)
	}
	// A second pull transfers nothing: same names, sizes, times.
	out = run(t, "/", "rsync", "-a", "--itemize-changes", mnt+"/", copyDir+"/")
	if strings.TrimSpace(out) != "" {
		t.Errorf("second rsync changed:\n%s", out)
	}
	// The mount is read-only in the kernel too.
	_, err := os.Create(filepath.Join(mnt, "web/new"))
	wantErrno(t, "create in the remote view", err, syscall.EROFS)
}

func TestAdminHistory(t *testing.T) {
	snapDir := t.TempDir()
	makeSnapshot(t, snapDir, "2026-11-28T050000", snapA)
	makeSnapshot(t, snapDir, "2026-11-29T050000", map[string]string{"intern/intern.softxs.ch/app/y.txt": "intern app, day 2"})
	mnt := viewcmd(t, "-mode", "admin", "-snapdir", snapDir)
	if got, want := readDirNames(t, mnt), []string{"2026-11-28T050000", "2026-11-29T050000", "latest"}; !slices.Equal(got, want) {
		t.Errorf("admin root = %q, want %q", got, want)
	}
	if got, want := readDirNames(t, filepath.Join(mnt, "2026-11-28T050000")), []string{"intern", "web"}; !slices.Equal(got, want) {
		t.Errorf("admin snapshot = %q, want %q", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "latest/intern/intern.softxs.ch/app/y.txt")); err != nil || string(b) != "intern app, day 2" {
		t.Errorf("latest y.txt = %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "2026-11-28T050000/web/demo.softxs.ch/other/secret.txt")); err != nil || string(b) != "other app of web" {
		t.Errorf("secret.txt = %q, %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(mnt, "2026-11-28T050000/web/demo.softxs.ch/hydro/etc")); err != nil || target != "/etc" {
		t.Errorf("symlink = %q, %v", target, err)
	}
	out := run(t, mnt, "ls", "-la", "2026-11-28T050000/web/demo.softxs.ch/hydro")
	if !strings.Contains(out, "up -> ../other") {
		t.Errorf("ls -la:\n%s", out)
	}
	wantErrno(t, "mkdir in the admin history", os.Mkdir(filepath.Join(mnt, "2026-11-28T050000/web/x"), 0o755), syscall.EROFS)
	wantErrno(t, "unlink in the admin history", os.Remove(filepath.Join(mnt, "latest")), syscall.EROFS)
}
