package roview

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pullLike reads a tree the way rsync's sender does: list every
// directory, lstat every entry, open, read to the end and close every file.
func pullLike(t *testing.T, root string) int {
	t.Helper()
	files := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := os.Lstat(p); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.Copy(io.Discard, f); err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		files++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func requestMap(v *RemoteView) map[string]uint64 {
	m := map[string]uint64{}
	for _, c := range v.Requests() {
		m[c.Op] = c.Count
	}
	return m
}

// The cost of a pull through the view in round trips: per file one READ
// and nothing else: no OPEN, RELEASE or FLUSH (the view answers the first
// OPEN and FLUSH with ENOSYS, and the kernel stops sending them), no
// LOOKUP (READDIRPLUS answers them with the listing), no GETATTR
// (attributes never expire); a second pull of the same snapshot is served
// from the kernel's caches but for OPENDIR and RELEASEDIR per directory.
func TestRemoteViewRequestsPerFile(t *testing.T) {
	snapDir := t.TempDir()
	const dirs, perDir = 4, 25
	files := map[string]string{}
	for i := range dirs * perDir {
		files[fmt.Sprintf("web/demo.softxs.ch/app/d%d/f%03d", i/perDir, i)] = fmt.Sprintf("content of file %d\n", i)
	}
	makeSnapshot(t, snapDir, "2026-11-28T050000", files)
	v, mnt := mountRemote(t, RemoteOptions{SnapDir: snapDir, Server: testServer, Poll: -1})
	if v.Requests() == nil {
		t.Fatal("a mounted view has no request counts")
	}
	before := requestMap(v)
	n := pullLike(t, filepath.Join(mnt, "web"))
	if n != dirs*perDir {
		t.Fatalf("read %d files through the view, want %d", n, dirs*perDir)
	}
	first := requestMap(v)
	delta := func(from, to map[string]uint64, op string) uint64 { return to[op] - from[op] }
	for _, op := range []string{"OPEN", "FLUSH"} {
		if got := delta(before, first, op); got > 1 {
			t.Errorf("first pull: %d %s for %d files, want only the first (answered ENOSYS)", got, op, n)
		}
	}
	if got := delta(before, first, "READ"); got != uint64(n) {
		t.Errorf("first pull: %d READ for %d small files, want one each", got, n)
	}
	// The walk looks up web itself and its 3 directories above the files.
	if got := delta(before, first, "LOOKUP"); got > 4 {
		t.Errorf("first pull: %d LOOKUP for %d files, want the listings to answer them", got, n)
	}
	if got := delta(before, first, "GETATTR"); got > 4 {
		t.Errorf("first pull: %d GETATTR for %d files, want attributes from the listings", got, n)
	}
	// RELEASE would be asynchronous: give the kernel time to send any.
	time.Sleep(100 * time.Millisecond)
	if got := delta(before, requestMap(v), "RELEASE"); got != 0 {
		t.Errorf("first pull: %d RELEASE, want none", got)
	}

	second := requestMap(v)
	pullLike(t, filepath.Join(mnt, "web"))
	time.Sleep(100 * time.Millisecond)
	again := requestMap(v)
	for op, count := range again {
		d := count - second[op]
		switch op {
		case "OPENDIR", "RELEASEDIR":
			if d > dirs+3 {
				t.Errorf("second pull: %d %s, want one per directory", d, op)
			}
		default:
			if d > 1 {
				t.Errorf("second pull: %d %s, want at most one (listings, attributes and pages are cached)", d, op)
			}
		}
	}
}

func TestRemoteViewRequestsUnmounted(t *testing.T) {
	v, err := NewRemoteView(RemoteOptions{SnapDir: t.TempDir(), Server: testServer, Poll: -1, Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Requests(); got != nil {
		t.Errorf("Requests of a view never mounted = %v, want nil", got)
	}
}

// viewcmd answers SIGUSR1 with the view's request counts, one JSON line
// on its standard output (what bench/remoteview reads).
func TestViewcmdPrintsRequestCounts(t *testing.T) {
	snapDir := t.TempDir()
	makeSnapshot(t, snapDir, "2026-11-28T050000", map[string]string{"web/demo.softxs.ch/app/a.txt": "alpha\n"})
	mnt := t.TempDir()
	cmd := exec.Command(buildViewcmd(t), "-mode", "remote", "-mount", mnt, "-snapdir", snapDir, "-server", testServer, "-poll", "-1s")
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
		cmd.Wait()
		syscall.Unmount(mnt, syscall.MNT_DETACH) // in case it died mounted
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("viewcmd ended before %s: %s", what, stderr.String())
			}
			return l
		case <-time.After(time.Minute):
			t.Fatalf("no %s from viewcmd after a minute: %s", what, stderr.String())
		}
		return ""
	}
	if l := next("ready"); l != "ready" {
		t.Fatalf("first line %q, want ready", l)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "web/demo.softxs.ch/app/a.txt")); err != nil || string(b) != "alpha\n" {
		t.Fatalf("read through the view: %q, %v", b, err)
	}
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var counts []RequestCount
	if l := next("request counts"); json.Unmarshal([]byte(l), &counts) != nil {
		t.Fatalf("request counts line %q is not JSON", l)
	}
	reads := uint64(0)
	for _, c := range counts {
		if c.Op == "READ" {
			reads = c.Count
		}
	}
	if reads != 1 {
		t.Errorf("request counts %+v: want one READ", counts)
	}
}
