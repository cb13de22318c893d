package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/tiers"
)

func TestNames(t *testing.T) {
	tm := time.Date(2026, 11, 28, 5, 0, 0, 999, time.Local)
	if got := Name(tm); got != "2026-11-28T050000" {
		t.Fatalf("Name = %q", got)
	}
	back, err := ParseName("2026-11-28T050000")
	must(t, err)
	if !back.Equal(tm.Truncate(time.Second)) {
		t.Errorf("ParseName = %v, want %v", back, tm)
	}
	for _, bad := range []string{"", "2026-11-28T05:00:00", "2026-11-28", "2026-13-28T050000", "latest", ".building-2026-11-28T050000", "2026-11-28T050000x"} {
		_, err := ParseName(bad)
		var ne *tiers.NameError
		if !errors.As(err, &ne) || ne.Field != "snapshot" || ne.Value != bad {
			t.Errorf("ParseName(%q) = %v, want a NameError for snapshot", bad, err)
		}
	}
}

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".lock")
	unlock, err := TryLock(path)
	must(t, err)

	_, err = TryLock(path)
	var held *LockedError
	if !errors.As(err, &held) || held.PID != os.Getpid() || held.Since.IsZero() {
		t.Fatalf("second TryLock: %v, want LockedError with pid %d", err, os.Getpid())
	}
	if msg := err.Error(); !strings.Contains(msg, "another snapshot run (pid ") || !strings.Contains(msg, path) || !strings.Contains(msg, " since ") {
		t.Errorf("message %q", msg)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Lock(ctx, path); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "pid") {
		t.Errorf("Lock with a done context while held: %v", err)
	}

	// A waiting Lock gets the lock once the holder lets go.
	got := make(chan error, 1)
	go func() {
		u, err := Lock(context.Background(), path)
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	must(t, <-got)

	if _, err := TryLock(filepath.Join(t.TempDir(), "no", "dir", ".lock")); err == nil || !strings.Contains(err.Error(), "snapshot lock") {
		t.Errorf("TryLock in a missing directory: %v", err)
	}
	// A holder that has not written its pid yet.
	if e := readHolder(filepath.Join(t.TempDir(), "missing")); e.PID != 0 || !strings.Contains(e.Error(), "another snapshot run holds") {
		t.Errorf("readHolder of nothing: %v", e)
	}
}

func mkSnaps(t *testing.T, snapdir string, names ...string) {
	t.Helper()
	for _, n := range names {
		write(t, filepath.Join(snapdir, n, "web", "f"), n)
	}
}

func names(l []Info) []string {
	var out []string
	for _, i := range l {
		out = append(out, i.Name)
	}
	return out
}

func TestListLatest(t *testing.T) {
	snapdir := filepath.Join(t.TempDir(), "snaps")
	if l, err := List(snapdir); err != nil || l != nil {
		t.Fatalf("List of a missing dir: %v %v", l, err)
	}
	if _, ok, err := UpdateLatest(snapdir); ok || err == nil {
		// No dir: nothing to point at, and nowhere to sync.
		t.Errorf("UpdateLatest with no snapdir: ok=%v err=%v", ok, err)
	}
	mkSnaps(t, snapdir, "2026-11-28T050000", "2026-01-02T050000", "2026-11-27T050000")
	must(t, os.MkdirAll(filepath.Join(snapdir, ".building-2026-11-29T050000"), 0o700))
	must(t, os.MkdirAll(filepath.Join(snapdir, ".deleting-2026-11-20T050000"), 0o700))
	must(t, os.MkdirAll(filepath.Join(snapdir, "not-a-snapshot"), 0o700))
	must(t, os.Symlink("2026-11-28T050000", filepath.Join(snapdir, "2026-12-01T050000")))
	write(t, filepath.Join(snapdir, "2026-12-02T050000"), "a file")

	l, err := List(snapdir)
	must(t, err)
	want := []string{"2026-01-02T050000", "2026-11-27T050000", "2026-11-28T050000"}
	if !reflect.DeepEqual(names(l), want) {
		t.Fatalf("List = %v, want %v", names(l), want)
	}
	if l[0].Path != filepath.Join(snapdir, want[0]) || l[0].Time.Day() != 2 {
		t.Errorf("Info %+v", l[0])
	}
	info, ok, err := UpdateLatest(snapdir)
	must(t, err)
	if !ok || info.Name != "2026-11-28T050000" {
		t.Fatalf("UpdateLatest = %+v %v", info, ok)
	}
	if target, _ := os.Readlink(filepath.Join(snapdir, LatestLink)); target != "2026-11-28T050000" {
		t.Errorf("latest -> %q", target)
	}
	// Idempotent, then follows a newer snapshot.
	_, _, err = UpdateLatest(snapdir)
	must(t, err)
	mkSnaps(t, snapdir, "2026-11-29T050000")
	_, _, err = UpdateLatest(snapdir)
	must(t, err)
	if target, _ := os.Readlink(filepath.Join(snapdir, LatestLink)); target != "2026-11-29T050000" {
		t.Errorf("latest -> %q after a new snapshot", target)
	}
	if left, _ := filepath.Glob(filepath.Join(snapdir, ".latest*")); len(left) != 0 {
		t.Errorf("temporary links left: %v", left)
	}
	// No snapshot left: the link goes.
	empty := filepath.Join(t.TempDir(), "empty")
	must(t, os.MkdirAll(empty, 0o700))
	must(t, os.Symlink("2026-11-29T050000", filepath.Join(empty, LatestLink)))
	if _, ok, err := UpdateLatest(empty); ok || err != nil {
		t.Errorf("UpdateLatest with none: %v %v", ok, err)
	}
	if _, err := os.Lstat(filepath.Join(empty, LatestLink)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("latest link kept with no snapshot: %v", err)
	}
}

func TestPruneAndPurge(t *testing.T) {
	snapdir := filepath.Join(t.TempDir(), "snaps")
	all := []string{"2026-11-25T050000", "2026-11-26T050000", "2026-11-27T050000", "2026-11-28T050000"}
	mkSnaps(t, snapdir, all...)
	ctx := context.Background()
	go1 := []string{"2026-11-25T050000", "2026-11-27T050000"}

	dry, err := Prune(ctx, snapdir, go1, true)
	must(t, err)
	if len(dry) != 2 || dry[0].Name != go1[0] || dry[0].MovedTo != "" || dry[1].Path != filepath.Join(snapdir, go1[1]) {
		t.Errorf("dry run = %+v", dry)
	}
	if l, _ := List(snapdir); len(l) != 4 {
		t.Fatalf("dry run changed the listing: %v", names(l))
	}

	for _, bad := range [][]string{
		{"2026-11-28T050000"},                      // the latest
		{"2026-11-25T050000", "2026-10-01T050000"}, // does not exist
		{"2026-11-25T05:00:00"},                    // not a name
	} {
		if _, err := Prune(ctx, snapdir, bad, false); err == nil {
			t.Errorf("Prune(%v) succeeded", bad)
		}
	}
	if l, _ := List(snapdir); len(l) != 4 {
		t.Fatalf("a refused prune changed the listing: %v", names(l))
	}

	// A leftover from an earlier prune with the same name.
	must(t, os.MkdirAll(filepath.Join(snapdir, ".deleting-2026-11-25T050000", "x"), 0o700))
	done, err := Prune(ctx, snapdir, append(go1, go1[0]), false)
	must(t, err)
	if len(done) != 2 || done[0].MovedTo != ".deleting-2026-11-25T050000.2" || done[1].MovedTo != ".deleting-2026-11-27T050000" {
		t.Errorf("Prune = %+v", done)
	}
	l, _ := List(snapdir)
	if want := []string{"2026-11-26T050000", "2026-11-28T050000"}; !reflect.DeepEqual(names(l), want) {
		t.Errorf("after prune: %v, want %v", names(l), want)
	}

	// A cancelled purge leaves its work to the next one.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Purge(cctx, snapdir, PurgeOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Purge with a done context: %v", err)
	}
	purged, err := Purge(ctx, snapdir, PurgeOptions{Batch: 1, Pause: time.Microsecond})
	must(t, err)
	if len(purged) != 3 {
		t.Errorf("purged %v", purged)
	}
	des, _ := os.ReadDir(snapdir)
	if len(des) != 2 {
		t.Errorf("left in snapdir: %v", des)
	}
	if p, err := Purge(ctx, filepath.Join(t.TempDir(), "none"), PurgeOptions{}); err != nil || p != nil {
		t.Errorf("Purge of a missing dir: %v %v", p, err)
	}
	if _, err := Prune(ctx, filepath.Join(snapdir, "2026-11-26T050000", "web", "f"), nil, false); err == nil {
		t.Error("Prune in a file succeeded")
	}
}

func TestPurgeThreadPriority(t *testing.T) {
	got := make(chan [2]int, 1)
	go func() {
		runtime.LockOSThread() // the thread dies with this goroutine
		lowerPriority()
		tid := unix.Gettid()
		io, _, errno := unix.Syscall(unix.SYS_IOPRIO_GET, 1, uintptr(tid), 0)
		nice, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
		if errno != 0 || err != nil {
			io, nice = 0, 0
		}
		got <- [2]int{int(io) >> 13, nice}
	}()
	// getpriority(2) returns 20-nice.
	if g := <-got; g[0] != 3 || g[1] != 1 {
		t.Errorf("purge thread: I/O class %d (want 3, idle), getpriority %d (want 1, nice 19)", g[0], g[1])
	}
	if io, _, _ := unix.Syscall(unix.SYS_IOPRIO_GET, 1, uintptr(unix.Gettid()), 0); int(io)>>13 == 3 {
		t.Error("the test's own thread was made idle")
	}
}

func TestPurgeDoesNotFollowSymlinks(t *testing.T) {
	base := t.TempDir()
	snapdir := filepath.Join(base, "snaps")
	victim := filepath.Join(base, "victim")
	write(t, filepath.Join(victim, "keep"), "keep")
	must(t, os.MkdirAll(filepath.Join(snapdir, ".deleting-x", "d"), 0o700))
	must(t, os.Symlink(victim, filepath.Join(snapdir, ".deleting-x", "d", "link")))
	_, err := Purge(context.Background(), snapdir, PurgeOptions{})
	must(t, err)
	if _, err := os.Stat(filepath.Join(victim, "keep")); err != nil {
		t.Fatalf("Purge followed a symlink: %v", err)
	}
}

func TestHistoryRoundTrip(t *testing.T) {
	dir := t.TempDir()
	h := History{
		App: HistoryName("web", "demo.softxs.ch/hydro"), Server: "zg-3.softxs.ch", VM: "web", Relpath: "demo.softxs.ch/hydro",
		Snapshot: "2026-11-28T050000", Status: StatusIncomplete, Files: 1234, Bytes: 56789012, Changed: 12,
		Note:    "still written at the deadline; taken from 2026-11-27T050000",
		Written: time.Date(2026, 11, 28, 5, 3, 12, 0, time.UTC),
	}
	must(t, WriteHistory(dir, h))
	path := filepath.Join(dir, "backup-web+demo.softxs.ch+hydro-20261128")
	b, err := os.ReadFile(path)
	must(t, err)
	for _, line := range []string{"files: 1234\n", "mb: 56.789\n", "bytes: 56789012\n", "status: incomplete\n", "written: 2026-11-28T05:03:12Z\n", "snapshot: 2026-11-28T050000\n"} {
		if !strings.Contains(string(b), line) {
			t.Errorf("history file lacks %q:\n%s", line, b)
		}
	}
	got, err := ReadHistory(path)
	must(t, err)
	if !reflect.DeepEqual(got, h) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, h)
	}
	// Rewriting the same night replaces the file; no temporary file stays.
	h.Status, h.Note, h.Written = StatusComplete, "", time.Time{}
	must(t, WriteHistory(dir, h))
	des, _ := os.ReadDir(dir)
	if len(des) != 1 {
		t.Errorf("history dir holds %v", des)
	}
	got, err = ReadHistory(path)
	must(t, err)
	if got.Status != StatusComplete || got.Note != "" || time.Since(got.Written) > time.Hour {
		t.Errorf("rewritten: %+v", got)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", fi.Mode())
	}
}

func TestHistoryRejects(t *testing.T) {
	dir := t.TempDir()
	ok := History{App: "a", Snapshot: "2026-11-28T050000", Status: StatusComplete}
	for _, c := range []struct {
		mod  func(*History)
		want string
	}{
		{func(h *History) { h.App = "" }, "app must not be empty"},
		{func(h *History) { h.App = "a/b" }, "plain file name"},
		{func(h *History) { h.Status = "ok" }, `status "ok"`},
		{func(h *History) { h.Files = -1 }, "negative"},
		{func(h *History) { h.Snapshot = "yesterday" }, "snapshot"},
		{func(h *History) { h.Note = "two\nlines" }, "note"},
	} {
		h := ok
		c.mod(&h)
		if err := WriteHistory(dir, h); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("WriteHistory(%+v) = %v, want %q", h, err, c.want)
		}
	}
	if err := WriteHistory(filepath.Join(dir, "missing"), ok); err == nil || !strings.Contains(err.Error(), "backup-a-20261128") {
		t.Errorf("WriteHistory to a missing dir: %v", err)
	}
	good := "app: a\nsnapshot: 2026-11-28T050000\nstatus: complete\nfiles: 1\nbytes: 2\nchanged: 0\nwritten: 2026-11-28T05:03:12Z\n"
	for name, c := range map[string]struct{ text, want string }{
		"noline":  {good + "garbage\n", ":8: \"garbage\" is not"},
		"dup":     {good + "files: 3\n", `key "files" appears twice`},
		"missing": {strings.Replace(good, "bytes: 2\n", "", 1), `key "bytes" is missing`},
		"number":  {strings.Replace(good, "files: 1", "files: many", 1), `files "many"`},
		"status":  {strings.Replace(good, "complete", "done", 1), `status "done"`},
		"time":    {strings.Replace(good, "2026-11-28T05:03:12Z", "yesterday", 1), `written "yesterday"`},
	} {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(c.text), 0o644))
		if _, err := ReadHistory(p); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: ReadHistory = %v, want %q and the path", name, err, c.want)
		}
	}
	p := filepath.Join(dir, "good")
	must(t, os.WriteFile(p, []byte("# comment\n\nfuture: key\nserver:\n"+good), 0o644))
	if h, err := ReadHistory(p); err != nil || h.Files != 1 || h.Server != "" {
		t.Errorf("ReadHistory with comment, unknown and empty keys: %+v %v", h, err)
	}
	if _, err := ReadHistory(filepath.Join(dir, "none")); err == nil {
		t.Error("ReadHistory of a missing file succeeded")
	}
}

func TestHistoryName(t *testing.T) {
	for _, c := range [][3]string{
		{"web", "demo.softxs.ch/hydro", "web+demo.softxs.ch+hydro"},
		{"_host", "wiki.softxs.ch", "_host+wiki.softxs.ch"},
		{"web", "a.ch/x+y/50%", "web+a.ch+x%2By+50%25"},
	} {
		if got := HistoryName(c[0], c[1]); got != c[2] {
			t.Errorf("HistoryName(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
	if HistoryName("web", "a.ch/x+y") == HistoryName("web", "a.ch/x/y") {
		t.Error("two relpaths share a history name")
	}
}

func TestTally(t *testing.T) {
	prev := map[string]string{
		"web/a.ch/hydro/same":    "11",
		"web/a.ch/hydro/changed": "22",
	}
	tl := NewTally([]string{"web/a.ch/hydro", "web/a.ch/hydro/sub/", "intern/b.ch"}, func(rel string) (string, bool) {
		s, ok := prev[rel]
		return s, ok
	})
	reg := os.FileMode(0o644)
	tl.Add([]Entry{
		{Path: "web/a.ch/hydro/same", Mode: reg, Size: 10, SHA256: "11"},
		{Path: "web/a.ch/hydro/changed", Mode: reg, Size: 20, SHA256: "99"},
		{Path: "web/a.ch/hydro/new", Mode: reg, Size: 30, SHA256: "33"},
		{Path: "web/a.ch/hydro/unknown", Mode: reg, Size: 1},
		{Path: "web/a.ch/hydro/link", Mode: os.ModeSymlink | 0o777, Size: 4},
		{Path: "web/a.ch/hydro/sub/x", Mode: reg, Size: 5, SHA256: "55"},
		{Path: "web/a.ch/hydrox/y", Mode: reg, Size: 7, SHA256: "77"},
		{Path: "other/z", Mode: reg, Size: 9},
	})
	got := tl.Counts()
	want := map[string]AppCounts{
		"web/a.ch/hydro":     {Files: 4, Bytes: 61, Changed: 3},
		"web/a.ch/hydro/sub": {Files: 1, Bytes: 5, Changed: 1},
		"intern/b.ch":        {},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Counts = %+v, want %+v", got, want)
	}
	first := NewTally([]string{"web/a.ch/hydro"}, nil)
	first.Add([]Entry{{Path: "web/a.ch/hydro/same", Mode: reg, Size: 10, SHA256: "11"}})
	if c := first.Counts()["web/a.ch/hydro"]; c.Changed != 1 {
		t.Errorf("first snapshot: %+v", c)
	}
}

// TestDiscard: the newest snapshot, which Prune refuses, is moved aside;
// bad names, missing snapshots and directories are errors naming them.
func TestDiscard(t *testing.T) {
	snapdir := filepath.Join(t.TempDir(), "snaps")
	mkSnaps(t, snapdir, "2026-11-27T050000", "2026-11-28T050000")
	must(t, Discard(snapdir, "2026-11-28T050000"))
	l, _ := List(snapdir)
	if want := []string{"2026-11-27T050000"}; !reflect.DeepEqual(names(l), want) {
		t.Errorf("after discard: %v, want %v", names(l), want)
	}
	if _, err := os.Stat(filepath.Join(snapdir, ".deleting-2026-11-28T050000")); err != nil {
		t.Errorf("discarded tree: %v", err)
	}
	for _, c := range []struct{ dir, name, want string }{
		{snapdir, "2026-11-28T05:00:00", "2026-11-28T05:00:00"},
		{snapdir, "2026-11-29T050000", filepath.Join(snapdir, "2026-11-29T050000")},
		{filepath.Join(snapdir, "gone"), "2026-11-27T050000", "2026-11-27T050000"},
	} {
		if err := Discard(c.dir, c.name); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Discard(%s, %s) = %v, want an error naming %s", c.dir, c.name, err, c.want)
		}
	}
}
