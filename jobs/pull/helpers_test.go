package pull

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/sshtest"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/snapshot"
)

const (
	hostA  tiers.Server = "zg-3.softxs.ch"
	hostB  tiers.Server = "odin.softxs.ch"
	backup tiers.Server = "backup.softxs.ch"
)

var apps = []App{
	{Name: "hydro", VM: "web", Relpath: "demo.softxs.ch/hydro"},
	{Name: "wiki", VM: "intern", Relpath: "wiki.softxs.ch"},
}

// testHost is a host: a partition with a live local tier, snapshots of
// it, and a remote view of the latest served by viewcmd in its own
// process (rsync and sshd read the mount; the test process never serves
// a mount it also reads through children).
type testHost struct {
	server tiers.Server
	part   tiers.Partition
	state  string
	view   string
	clock  time.Time
}

func newHost(t *testing.T, server tiers.Server, files map[string]string) *testHost {
	t.Helper()
	h := &testHost{server: server, part: tiers.Partition(t.TempDir()), state: t.TempDir(),
		clock: time.Date(2026, 11, 28, 5, 0, 0, 0, time.Local)}
	writeTree(t, h.part.LocalRoot(), files)
	h.snapshot(t)
	h.view = viewcmd(t, "-mode", "remote", "-snapdir", h.part.SnapshotDir(tiers.Local),
		"-server", string(server), "-state", h.state, "-idle", "100ms", "-poll", "50ms")
	return h
}

// snapshot takes the next night's snapshot of the local tier.
func (h *testHost) snapshot(t *testing.T) string {
	t.Helper()
	name := snapshot.Name(h.clock)
	h.clock = h.clock.Add(24 * time.Hour)
	if _, err := snapshot.Create(context.Background(), snapshot.Options{
		Source: h.part.LocalRoot(), SnapDir: h.part.SnapshotDir(tiers.Local), Name: name,
	}); err != nil {
		t.Fatal(err)
	}
	return name
}

// waitView waits until the view shows snapshot name.
func (h *testHost) waitView(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(filepath.Join(h.view, "SNAPSHOT.json"))
		if strings.Contains(string(b), `"`+name+`"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the view of %s still shows %s, want %s", h.server, b, name)
		}
		// The view switches only after 100ms without any request, so
		// poll more slowly than that.
		time.Sleep(300 * time.Millisecond)
	}
}

func (h *testHost) host(s *sshtest.Server) Host {
	return Host{Server: h.server, SSH: s.Target(), Port: s.Port, View: h.view, Apps: apps}
}

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Remove(full) // a new inode, as the host's copy-on-write mount makes
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// treeSums maps every regular file under root to its SHA-256 and inode.
func treeSums(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, _ := d.Info()
		s := sha256.Sum256(b)
		rel, _ := filepath.Rel(root, p)
		out[rel] = fmt.Sprintf("%s ino=%d", hex.EncodeToString(s[:]), info.Sys().(*syscall.Stat_t).Ino)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

func openDB(t *testing.T) *catalog.DB {
	t.Helper()
	db, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// options for a backup server pulling hosts through s.
func options(t *testing.T, s *sshtest.Server, db *catalog.DB, hosts ...*testHost) Options {
	part := tiers.Partition(t.TempDir())
	o := Options{
		BackupServer: backup, Partition: part, Identity: s.Identity, KnownHosts: s.KnownHosts,
		HistoryDir: filepath.Join(string(part), "history"), DB: db,
		Now:    clock(time.Date(2026, 11, 28, 6, 0, 0, 0, time.Local)),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, h := range hosts {
		o.Hosts = append(o.Hosts, h.host(s))
	}
	return o
}

// clock returns a clock that advances one minute per call.
func clock(start time.Time) func() time.Time {
	var mu sync.Mutex
	t := start
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Minute)
		return t
	}
}

// viewcmd runs fusefs/roview's test binary as its own process and returns
// its mount point; it is unmounted in t.Cleanup.
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
	cmd.Stderr = &lockedWriter{w: &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
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
		t.Fatalf("viewcmd not ready after a minute")
	}
	return mnt
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var (
	viewcmdOnce sync.Once
	viewcmdBin  string
	viewcmdErr  error
	viewcmdDir  string
)

func buildViewcmd(t *testing.T) string {
	viewcmdOnce.Do(func() {
		viewcmdDir, viewcmdErr = os.MkdirTemp("", "pull-viewcmd-")
		if viewcmdErr != nil {
			return
		}
		viewcmdBin = filepath.Join(viewcmdDir, "viewcmd")
		out, err := exec.Command("go", "build", "-o", viewcmdBin, "github.com/softxs/v2backup/fusefs/roview/internal/viewcmd").CombinedOutput()
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

func sumOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func writeJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
