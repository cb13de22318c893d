package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mountcmd-test-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "mountcmd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		panic("go build: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestBadFlags: refused before anything is mounted, exit status 1, with
// a message naming what is wrong.
func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	base := []string{"-mountpoint", dir, "-local-root", dir, "-vm", "web", "-app", "a=x.example.org/a"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-vm", "web"}, "-mountpoint, -local-root and -vm are required"},
		{append(base[:len(base):len(base)], "-events", filepath.Join(dir, "ev"), "-catalog", filepath.Join(dir, "c.db")), "-events and -catalog are exclusive"},
		{append(base[:len(base):len(base)], "-catalog", dir), dir}, // a directory is no database
	} {
		cmd := exec.Command(bin, tc.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: %v, stderr %q; want exit 1 naming %q", tc.args, err, stderr.String(), tc.want)
		}
	}
}

// TestCatalogAndStats mounts with -catalog and -stats, writes a file,
// reads the counters with SIGUSR1 and, after SIGTERM, finds the file
// hashed in the catalog and the final counters on stderr.
func TestCatalogAndStats(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it mounts with allow_other")
	}
	dir := t.TempDir()
	mnt, local, db := filepath.Join(dir, "mnt"), filepath.Join(dir, "local"), filepath.Join(dir, "cat.db")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-mountpoint", mnt, "-local-root", local, "-vm", "web", "-app", "a=x.example.org/a", "-catalog", db, "-stats")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
		unix.Unmount(mnt, unix.MNT_DETACH)
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready passthrough=") {
		t.Fatalf("first line %q, %v; stderr %s", line, err, stderr.String())
	}
	if err := os.WriteFile(filepath.Join(mnt, "x.example.org/a/f.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "stats end\n"); {
		if time.Now().After(deadline) {
			t.Fatalf("no stats after SIGUSR1; stderr %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "stats CREATE 1 ") {
		t.Errorf("SIGUSR1 stats lack the CREATE: %s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	exited = true
	if err != nil {
		t.Fatalf("exit: %v; stderr %s", err, stderr.String())
	}
	if n := strings.Count(stderr.String(), "stats end\n"); n != 2 {
		t.Errorf("%d stats blocks, want 2 (SIGUSR1 and exit): %s", n, stderr.String())
	}
	// The recorder was drained at exit: the file is there, hashed.
	r, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: db}).EscapedPath()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var sha string
	err = r.QueryRowContext(context.Background(), `SELECT sha256 FROM files WHERE path = ?`, "web/x.example.org/a/f.txt").Scan(&sha)
	// sha256("hello\n")
	if err != nil || sha != "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03" {
		t.Errorf("catalog row of f.txt: %q, %v", sha, err)
	}
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
