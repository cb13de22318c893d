package catalog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func shaOf(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// writeFile creates root/rel with content.
func writeFile(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// hashLog counts the hashes a recorder starts, per path, and can hold the
// workers at a gate path.
type hashLog struct {
	mu      sync.Mutex
	count   map[string]int
	gate    string
	entered chan struct{} // closed when a worker reaches the gate
	release chan struct{}
}

func newHashLog(gate string) *hashLog {
	return &hashLog{count: map[string]int{}, gate: gate, entered: make(chan struct{}), release: make(chan struct{})}
}

func (h *hashLog) before(p string) {
	h.mu.Lock()
	h.count[p]++
	first := p == h.gate && h.count[p] == 1
	h.mu.Unlock()
	if first {
		close(h.entered)
		<-h.release
	}
}

func (h *hashLog) n(p string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[p]
}

type recEnv struct {
	db   *DB
	root string
	r    *Recorder
	ctx  context.Context
}

func newRecEnv(t *testing.T, opt RecorderOptions) *recEnv {
	t.Helper()
	db := openTest(t)
	root := filepath.Join(t.TempDir(), "local")
	if err := os.MkdirAll(filepath.Join(root, "web"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := NewRecorder(db, root, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r.Close(ctx) // may already be closed
	})
	return &recEnv{db: db, root: root, r: r, ctx: context.Background()}
}

func (e *recEnv) flush(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if err := e.r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func (e *recEnv) row(t *testing.T, p string) (FileRecord, bool) {
	t.Helper()
	f, ok, err := e.db.LookupFile(e.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	return f, ok
}

func (e *recEnv) paths(t *testing.T) string {
	t.Helper()
	var ps []string
	if err := e.db.WalkFiles(e.ctx, "", func(f FileRecord) error { ps = append(ps, f.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	return strings.Join(ps, ",")
}

func TestRecorderWritten(t *testing.T) {
	e := newRecEnv(t, RecorderOptions{})
	writeFile(t, e.root, "web/demo.softxs.ch/hydro/db/x.sql.gz", "dump")
	e.r.Written("hydro", "web/demo.softxs.ch/hydro/db/x.sql.gz")
	e.flush(t)
	f, ok := e.row(t, "web/demo.softxs.ch/hydro/db/x.sql.gz")
	st, _ := os.Stat(filepath.Join(e.root, "web/demo.softxs.ch/hydro/db/x.sql.gz"))
	if !ok || f.SHA256 != shaOf([]byte("dump")) || f.Size != 4 || f.App != "hydro" || !f.MTime.Equal(st.ModTime()) || f.HashedAt.IsZero() {
		t.Fatalf("%+v %v", f, ok)
	}
	if e.r.QueueDepth() != 0 || e.r.Dropped() != 0 || e.r.Dirty() != "" {
		t.Fatalf("depth %d dropped %d dirty %q", e.r.QueueDepth(), e.r.Dropped(), e.r.Dirty())
	}
	// Written on a path that no longer exists removes its row.
	os.Remove(filepath.Join(e.root, "web/demo.softxs.ch/hydro/db/x.sql.gz"))
	e.r.Written("hydro", "web/demo.softxs.ch/hydro/db/x.sql.gz")
	e.flush(t)
	if _, ok := e.row(t, "web/demo.softxs.ch/hydro/db/x.sql.gz"); ok {
		t.Fatal("row of a vanished file kept")
	}
}

func TestRecorderCoalesces(t *testing.T) {
	h := newHashLog("web/gate")
	e := newRecEnv(t, RecorderOptions{Workers: 1, beforeHash: h.before})
	writeFile(t, e.root, "web/gate", "g")
	writeFile(t, e.root, "web/x", "x")
	e.r.Written("a", "web/gate")
	<-h.entered
	for range 1000 {
		e.r.Written("a", "web/x")
	}
	if d := e.r.QueueDepth(); d != 2 {
		t.Fatalf("queue depth %d after 1000 writes of one path (+1 in flight), want 2", d)
	}
	close(h.release)
	e.flush(t)
	if n := h.n("web/x"); n != 1 {
		t.Fatalf("web/x hashed %d times, want 1", n)
	}
	if f, ok := e.row(t, "web/x"); !ok || f.SHA256 != shaOf([]byte("x")) {
		t.Fatalf("%+v %v", f, ok)
	}
}

func TestRecorderDropsWhenFull(t *testing.T) {
	h := newHashLog("web/gate")
	var logBuf syncBuffer
	logger := slog.New(slog.NewTextHandler(&logBuf, nil))
	e := newRecEnv(t, RecorderOptions{Workers: 1, QueueSize: 3, beforeHash: h.before, Logger: logger, LogInterval: time.Hour})
	for _, p := range []string{"gate", "a", "b", "c", "d", "e"} {
		writeFile(t, e.root, "web/"+p, p)
	}
	e.r.Written("x", "web/gate")
	<-h.entered
	for _, p := range []string{"a", "b", "c", "d", "e"} {
		e.r.Written("x", "web/"+p)
	}
	e.r.Written("x", "web/a") // coalesces: no drop
	e.r.Removed("x", "web/f")
	e.r.Renamed("x", "web/g", "web/h")
	if d := e.r.Dropped(); d != 4 {
		t.Fatalf("dropped %d, want 4 (d, e, the removal and the rename)", d)
	}
	if !strings.Contains(e.r.Dirty(), "dropped") {
		t.Fatalf("dirty %q", e.r.Dirty())
	}
	close(h.release)
	e.flush(t)
	if got := e.paths(t); got != "web/a,web/b,web/c,web/gate" {
		t.Fatalf("rows %s", got)
	}
	if err := e.r.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logBuf.String(), "dropped=4") {
		t.Fatalf("drops not logged: %s", logBuf.String())
	}
	// The mark outlives the recorder...
	why, err := e.db.RescanRecommended(e.ctx)
	if err != nil || !strings.Contains(why, "dropped") {
		t.Fatalf("persisted mark %q %v", why, err)
	}
	// ...and after a close the recorder drops everything.
	e.r.Written("x", "web/a")
	if e.r.Dropped() != 5 {
		t.Fatalf("event after Close not dropped: %d", e.r.Dropped())
	}
	// A successor learns it, and a full rescan clears it.
	r2, err := NewRecorder(e.db, e.root, RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Dirty() != "events were dropped (queue full)" {
		t.Fatalf("successor dirty %q", r2.Dirty())
	}
	st, err := r2.Rescan(e.ctx, RescanOptions{})
	if err != nil || st.Added != 2 {
		t.Fatalf("rescan %+v %v; want d and e added", st, err)
	}
	if r2.Dirty() != "" {
		t.Fatalf("dirty after rescan %q", r2.Dirty())
	}
	if err := r2.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	if why, err := e.db.RescanRecommended(e.ctx); err != nil || why != "" {
		t.Fatalf("mark after clean close %q %v", why, err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRecorderRequeuesChangedFile(t *testing.T) {
	var mu sync.Mutex
	changes := 0
	h := newHashLog("")
	var e *recEnv
	e = newRecEnv(t, RecorderOptions{Workers: 1, beforeHash: h.before, midHash: func(p string) {
		mu.Lock()
		defer mu.Unlock()
		if p == "web/grow" && changes == 0 {
			changes++
			f, err := os.OpenFile(filepath.Join(e.root, p), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				return
			}
			f.WriteString(" and more")
			f.Close()
		}
	}})
	writeFile(t, e.root, "web/grow", "start")
	e.r.Written("a", "web/grow")
	e.flush(t)
	if n := h.n("web/grow"); n != 2 {
		t.Fatalf("hashed %d times, want 2 (changed during the first)", n)
	}
	if f, ok := e.row(t, "web/grow"); !ok || f.SHA256 != shaOf([]byte("start and more")) || f.Size != int64(len("start and more")) {
		t.Fatalf("%+v %v", f, ok)
	}
}

func TestRecorderGivesUpOnEverChangingFile(t *testing.T) {
	h := newHashLog("")
	var e *recEnv
	e = newRecEnv(t, RecorderOptions{Workers: 1, MaxRetries: 2, beforeHash: h.before, midHash: func(p string) {
		f, err := os.OpenFile(filepath.Join(e.root, p), os.O_APPEND|os.O_WRONLY, 0)
		if err == nil {
			f.WriteString("x")
			f.Close()
		}
	}})
	writeFile(t, e.root, "web/log", "")
	e.r.Written("a", "web/log")
	e.flush(t)
	if n := h.n("web/log"); n != 3 {
		t.Fatalf("hashed %d times, want 3 (1 + MaxRetries)", n)
	}
	if f, ok := e.row(t, "web/log"); !ok || f.SHA256 != "" || f.Size != 2 {
		t.Fatalf("%+v %v; want a row without hash, size as first seen by the last attempt", f, ok)
	}
}

func TestRecorderNeverFollowsSymlinks(t *testing.T) {
	e := newRecEnv(t, RecorderOptions{})
	outside := t.TempDir()
	writeFile(t, outside, "secret", "secret")
	writeFile(t, e.root, "web/real/file", "ok")
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(e.root, "web/link")))
	must(t, os.Symlink(outside, filepath.Join(e.root, "web/dirlink")))
	must(t, os.Symlink("real", filepath.Join(e.root, "web/inlink"))) // even inside the tree
	must(t, syscall.Mkfifo(filepath.Join(e.root, "web/fifo"), 0o644))
	// Stale rows for these paths must go, not be refreshed through the links.
	stale := []FileRecord{}
	for _, p := range []string{"web/link", "web/dirlink/secret", "web/inlink/file", "web/fifo"} {
		stale = append(stale, FileRecord{Path: p, App: "a", Size: 1, MTime: t0, UpdatedAt: t0})
	}
	must(t, e.db.UpsertFiles(e.ctx, stale))
	for _, p := range []string{"web/link", "web/dirlink/secret", "web/inlink/file", "web/fifo", "web/real/file"} {
		e.r.Written("a", p)
	}
	e.flush(t)
	if got := e.paths(t); got != "web/real/file" {
		t.Fatalf("rows %s; want only web/real/file", got)
	}
	if e.r.Dirty() != "" {
		t.Fatalf("dirty %q", e.r.Dirty())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestRecorderRemoveAndRename(t *testing.T) {
	h := newHashLog("")
	e := newRecEnv(t, RecorderOptions{beforeHash: h.before})
	writeFile(t, e.root, "web/a/1", "one")
	writeFile(t, e.root, "web/a/2", "two")
	writeFile(t, e.root, "web/ab", "sibling")
	for _, p := range []string{"web/a/1", "web/a/2", "web/ab"} {
		e.r.Written("x", p)
	}
	e.flush(t)
	// A directory rename moves the rows and their hashes; no rehash.
	must(t, os.Rename(filepath.Join(e.root, "web/a"), filepath.Join(e.root, "web/c")))
	e.r.Renamed("y", "web/a", "web/c")
	e.flush(t)
	if got := e.paths(t); got != "web/ab,web/c/1,web/c/2" {
		t.Fatalf("after rename: %s", got)
	}
	if f, _ := e.row(t, "web/c/2"); f.SHA256 != shaOf([]byte("two")) || f.App != "y" {
		t.Fatalf("moved row %+v", f)
	}
	if h.n("web/c/1") != 0 {
		t.Fatal("renamed file rehashed")
	}
	must(t, os.Remove(filepath.Join(e.root, "web/c/1")))
	e.r.Removed("y", "web/c/1")
	e.flush(t)
	if got := e.paths(t); got != "web/ab,web/c/2" {
		t.Fatalf("after unlink: %s", got)
	}
	must(t, os.RemoveAll(filepath.Join(e.root, "web/c")))
	e.r.Removed("y", "web/c")
	e.flush(t)
	if got := e.paths(t); got != "web/ab" {
		t.Fatalf("after rmdir: %s", got)
	}
	// Write-then-remove coalesces into a removal; remove-then-write hashes.
	writeFile(t, e.root, "web/tmp", "t")
	e.r.Written("x", "web/ab")
	e.r.Removed("x", "web/ab")
	must(t, os.Remove(filepath.Join(e.root, "web/ab")))
	e.r.Removed("x", "web/tmp")
	e.r.Written("x", "web/tmp")
	e.flush(t)
	if got := e.paths(t); got != "web/tmp" {
		t.Fatalf("after coalesced events: %s", got)
	}
}

// rsync's pattern: write a temporary name, rename it into place. The queued
// hash follows the rename and runs once, at the final name.
func TestRecorderRenameOfQueuedFile(t *testing.T) {
	h := newHashLog("web/gate")
	e := newRecEnv(t, RecorderOptions{Workers: 1, beforeHash: h.before})
	writeFile(t, e.root, "web/gate", "g")
	e.r.Written("x", "web/gate")
	<-h.entered
	writeFile(t, e.root, "web/.f.tmp", "content")
	e.r.Written("x", "web/.f.tmp")
	writeFile(t, e.root, "web/old", "old target")
	e.r.Written("x", "web/f") // a stale event for the target: superseded
	must(t, os.Rename(filepath.Join(e.root, "web/.f.tmp"), filepath.Join(e.root, "web/f")))
	e.r.Renamed("x", "web/.f.tmp", "web/f")
	close(h.release)
	e.flush(t)
	if f, ok := e.row(t, "web/f"); !ok || f.SHA256 != shaOf([]byte("content")) {
		t.Fatalf("%+v %v", f, ok)
	}
	if _, ok := e.row(t, "web/.f.tmp"); ok {
		t.Fatal("row of the temporary name")
	}
	if h.n("web/.f.tmp") != 0 || h.n("web/f") != 1 {
		t.Fatalf("hashes: tmp %d, f %d; want 0 and 1", h.n("web/.f.tmp"), h.n("web/f"))
	}
}

// A rename that lands while its source is being hashed voids that hash and
// requeues the file at its new name.
func TestRecorderRenameDuringHash(t *testing.T) {
	h := newHashLog("")
	var e *recEnv
	var once sync.Once
	e = newRecEnv(t, RecorderOptions{Workers: 1, beforeHash: h.before, midHash: func(p string) {
		if p != "web/d/y" {
			return
		}
		once.Do(func() {
			must(t, os.Rename(filepath.Join(e.root, "web/d"), filepath.Join(e.root, "web/e")))
			e.r.Renamed("x", "web/d", "web/e")
		})
	}})
	writeFile(t, e.root, "web/d/y", "why")
	e.r.Written("x", "web/d/y")
	e.flush(t)
	if got := e.paths(t); got != "web/e/y" {
		t.Fatalf("rows %s; want web/e/y", got)
	}
	if f, _ := e.row(t, "web/e/y"); f.SHA256 != shaOf([]byte("why")) {
		t.Fatalf("%+v", f)
	}
	if h.n("web/e/y") != 1 {
		t.Fatalf("new name hashed %d times", h.n("web/e/y"))
	}
}

func TestRecorderInvalidPaths(t *testing.T) {
	e := newRecEnv(t, RecorderOptions{})
	e.r.Written("a", "/etc/passwd")
	e.r.Removed("a", "../x")
	e.r.Renamed("a", "web/a", "web/../../b")
	e.flush(t)
	if e.r.invalid.Load() != 3 || e.r.QueueDepth() != 0 || e.paths(t) != "" {
		t.Fatalf("invalid %d depth %d rows %q", e.r.invalid.Load(), e.r.QueueDepth(), e.paths(t))
	}
}

func TestRecorderFlushAndCloseDeadlines(t *testing.T) {
	h := newHashLog("web/gate")
	e := newRecEnv(t, RecorderOptions{Workers: 1, beforeHash: h.before})
	writeFile(t, e.root, "web/gate", "g")
	e.r.Written("x", "web/gate")
	<-h.entered
	e.r.Written("x", "web/other")
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if err := e.r.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush with a cancelled context: %v", err)
	}
	// Close gives up at its deadline; the held worker is let go once the
	// recorder has abandoned its queue.
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			e.r.mu.Lock()
			ab := e.r.abandon
			e.r.mu.Unlock()
			if ab {
				break
			}
			time.Sleep(time.Millisecond)
		}
		close(h.release)
	}()
	err := e.r.Close(ctx)
	wantErr(t, err, "abandoned", "rescan recommended")
	why, err := e.db.RescanRecommended(e.ctx)
	if err != nil || !strings.Contains(why, "unprocessed") {
		t.Fatalf("mark %q %v", why, err)
	}
	wantErr(t, e.r.Close(e.ctx), "already closed")
}

func TestNewRecorderErrors(t *testing.T) {
	db := openTest(t)
	_, err := NewRecorder(db, filepath.Join(t.TempDir(), "missing"), RecorderOptions{})
	wantErr(t, err, "missing")
	_, err = NewRecorder(db, t.TempDir(), RecorderOptions{Workers: -1})
	wantErr(t, err, "invalid options", "workers -1")
	_, err = NewRecorder(db, t.TempDir(), RecorderOptions{MaxDelay: -time.Second})
	wantErr(t, err, "invalid options", "max delay -1s")
}

// waitRow polls the catalog until p has a hashed row.
func (e *recEnv) waitRow(t *testing.T, p string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if f, ok := e.row(t, p); ok && f.SHA256 != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no hashed row after 30s (queue %d)", p, e.r.QueueDepth())
		}
	}
}

// TestRecorderHoldsWhileBusy: hashing waits for a pause in the events,
// but never past MaxDelay, never once the queue is half full, and never
// when a Flush or Close wants the results.
func TestRecorderHoldsWhileBusy(t *testing.T) {
	const p = "web/demo.softxs.ch/hydro/a"
	// Flush does not wait for the pause (it would take an hour).
	e := newRecEnv(t, RecorderOptions{Quiet: time.Hour, MaxDelay: time.Hour, BatchDelay: time.Hour})
	writeFile(t, e.root, p, "a")
	e.r.Written("hydro", p)
	e.flush(t)
	if f, ok := e.row(t, p); !ok || f.SHA256 != shaOf([]byte("a")) {
		t.Fatalf("after Flush: %+v %v", f, ok)
	}
	// Nor does Close.
	writeFile(t, e.root, p, "aa")
	e.r.Written("hydro", p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if f, ok := e.row(t, p); !ok || f.SHA256 != shaOf([]byte("aa")) {
		t.Fatalf("after Close: %+v %v", f, ok)
	}

	// A pause of Quiet releases the queue.
	e = newRecEnv(t, RecorderOptions{Quiet: 10 * time.Millisecond, MaxDelay: time.Hour})
	writeFile(t, e.root, p, "b")
	e.r.Written("hydro", p)
	e.waitRow(t, p)

	// Events that never pause are hashed after MaxDelay.
	e = newRecEnv(t, RecorderOptions{Quiet: time.Hour, MaxDelay: 10 * time.Millisecond})
	writeFile(t, e.root, p, "c")
	e.r.Written("hydro", p)
	e.waitRow(t, p)

	// A half-full queue is worked on at once, down to below half.
	e = newRecEnv(t, RecorderOptions{Quiet: time.Hour, MaxDelay: time.Hour, QueueSize: 4})
	for _, q := range []string{p, p + "2"} {
		writeFile(t, e.root, q, q)
		e.r.Written("hydro", q)
	}
	e.waitRow(t, p)
	if _, ok := e.row(t, p+"2"); ok || e.r.QueueDepth() != 1 {
		t.Errorf("second file: row %v, queue %d; want it held", ok, e.r.QueueDepth())
	}
	e.flush(t)
	e.waitRow(t, p+"2")
}

// Close without Flush still writes everything queued.
func TestRecorderCloseDrains(t *testing.T) {
	e := newRecEnv(t, RecorderOptions{Workers: 3, opsPerWrite: 7})
	for i := range 300 {
		p := "web/d" + string(rune('a'+i%26)) + "/f" + strings.Repeat("x", i%7) + time.Duration(i).String()
		writeFile(t, e.root, p, p)
		e.r.Written("a", p)
	}
	if err := e.r.Close(e.ctx); err != nil {
		t.Fatal(err)
	}
	n := 0
	must(t, e.db.WalkFiles(e.ctx, "", func(f FileRecord) error {
		if f.SHA256 != shaOf([]byte(f.Path)) {
			t.Errorf("%s: hash %s", f.Path, f.SHA256)
		}
		n++
		return nil
	}))
	if n != 300 {
		t.Fatalf("%d rows after Close, want 300", n)
	}
	if why, _ := e.db.RescanRecommended(e.ctx); why != "" {
		t.Fatalf("mark after a clean close: %q", why)
	}
}

// Both ways of resolving a path refuse symlinks at any depth and "..".
func TestTreeResolution(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	writeFile(t, root, "a/b/file", "f")
	writeFile(t, outside, "file", "secret")
	must(t, os.Symlink(outside, filepath.Join(root, "a/link")))
	must(t, os.Symlink("b", filepath.Join(root, "a/inlink")))
	tr, err := openTree(root)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	for _, fallback := range []bool{false, true} {
		noOpenat2.Store(fallback)
		if _, err := tr.lstat("a/b/file"); err != nil {
			t.Errorf("fallback %v: a/b/file: %v", fallback, err)
		}
		_, sum, changed, err := tr.hashFile("a/b/file")
		if err != nil || changed || sum != shaOf([]byte("f")) {
			t.Errorf("fallback %v: hash %q %v %v", fallback, sum, changed, err)
		}
		for _, p := range []string{"a/link/file", "a/inlink/file", "a/link", "../" + filepath.Base(outside) + "/file", "a/../../x"} {
			if _, err := tr.lstat(p); !gone(err) {
				t.Errorf("fallback %v: lstat %s: %v; want a refusal", fallback, p, err)
			}
			if _, _, _, err := tr.hashFile(p); !gone(err) {
				t.Errorf("fallback %v: hash %s: %v; want a refusal", fallback, p, err)
			}
		}
	}
	noOpenat2.Store(false)
}

// A file that changes while hashed and gets a new Written meanwhile is
// hashed again once, not twice.
func TestRecorderRequeueMerges(t *testing.T) {
	h := newHashLog("")
	var e *recEnv
	var once sync.Once
	e = newRecEnv(t, RecorderOptions{Workers: 1, beforeHash: h.before, midHash: func(p string) {
		once.Do(func() {
			f, err := os.OpenFile(filepath.Join(e.root, p), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				return
			}
			f.WriteString("2")
			f.Close()
			e.r.Written("a", p)
		})
	}})
	writeFile(t, e.root, "web/m", "1")
	e.r.Written("a", "web/m")
	e.flush(t)
	if n := h.n("web/m"); n != 2 {
		t.Fatalf("hashed %d times, want 2", n)
	}
	if f, _ := e.row(t, "web/m"); f.SHA256 != shaOf([]byte("12")) {
		t.Fatalf("%+v", f)
	}
}

// Drops are logged by the interval logger, as the count since the last log.
func TestRecorderLogsDropsPeriodically(t *testing.T) {
	h := newHashLog("web/gate")
	var logBuf syncBuffer
	e := newRecEnv(t, RecorderOptions{Workers: 1, QueueSize: 1, beforeHash: h.before,
		Logger: slog.New(slog.NewTextHandler(&logBuf, nil)), LogInterval: 5 * time.Millisecond})
	defer close(h.release)
	writeFile(t, e.root, "web/gate", "g")
	e.r.Written("a", "web/gate")
	<-h.entered
	e.r.Written("a", "web/q")  // queued
	e.r.Written("a", "web/d1") // dropped
	waitFor(t, func() bool { return strings.Contains(logBuf.String(), "dropped=1 dropped_total=1") })
	e.r.Written("a", "web/d2")
	e.r.Written("a", "web/d3")
	waitFor(t, func() bool { return strings.Contains(logBuf.String(), "dropped=2 dropped_total=3") })
	e.r.Written("a", "/bad")
	waitFor(t, func() bool {
		return strings.Contains(logBuf.String(), `invalid path ignored`) && strings.Contains(logBuf.String(), `last=/bad`)
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met before the deadline")
		}
		time.Sleep(time.Millisecond)
	}
}

// A recorder that never closed (a crashed daemon) leaves its successor dirty.
func TestRecorderAfterCrash(t *testing.T) {
	db := openTest(t)
	root := t.TempDir()
	must(t, db.setMeta(context.Background(), metaDirty, "running since 2026-11-28T05:00:00Z"))
	r, err := NewRecorder(db, root, RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Dirty(), "did not shut down cleanly (running since 2026-11-28T05:00:00Z)") {
		t.Fatalf("dirty %q", r.Dirty())
	}
	must(t, r.Close(context.Background()))
	if why, _ := db.RescanRecommended(context.Background()); !strings.Contains(why, "did not shut down cleanly") {
		t.Fatalf("mark after closing a dirty recorder: %q", why)
	}
}

// A failed write is reported by Flush and marks the recorder dirty.
func TestRecorderWriteFailure(t *testing.T) {
	e := newRecEnv(t, RecorderOptions{})
	writeFile(t, e.root, "web/x", "x")
	must(t, e.db.Close())
	e.r.Written("a", "web/x")
	err := e.r.Flush(e.ctx)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Flush after a failed write: %v", err)
	}
	if !strings.Contains(e.r.Dirty(), "writing file records failed") {
		t.Fatalf("dirty %q", e.r.Dirty())
	}
	if err := e.r.Flush(e.ctx); err != nil {
		t.Fatalf("the error is reported once: %v", err)
	}
	if err := e.r.Close(e.ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Close cannot persist its mark: %v", err)
	}
}

// Queued events below a renamed directory follow it; queued events below the
// replaced target are superseded.
func TestRecorderRenameOfQueuedDirectory(t *testing.T) {
	h := newHashLog("web/gate")
	e := newRecEnv(t, RecorderOptions{Workers: 1, beforeHash: h.before})
	writeFile(t, e.root, "web/gate", "g")
	e.r.Written("x", "web/gate")
	<-h.entered
	writeFile(t, e.root, "web/dir/a", "a")
	writeFile(t, e.root, "web/dir/sub/b", "b")
	writeFile(t, e.root, "web/dirx", "sibling")
	must(t, os.MkdirAll(filepath.Join(e.root, "web/new"), 0o755))
	for _, p := range []string{"web/dir/a", "web/dir/sub/b", "web/dirx", "web/new/gone"} {
		e.r.Written("x", p)
	}
	must(t, os.Remove(filepath.Join(e.root, "web/new")))
	must(t, os.Rename(filepath.Join(e.root, "web/dir"), filepath.Join(e.root, "web/new")))
	e.r.Renamed("x", "web/dir", "web/new")
	close(h.release)
	e.flush(t)
	if got := e.paths(t); got != "web/dirx,web/gate,web/new/a,web/new/sub/b" {
		t.Fatalf("rows %s", got)
	}
	for p, n := range map[string]int{"web/dir/a": 0, "web/dir/sub/b": 0, "web/new/a": 1, "web/new/sub/b": 1, "web/dirx": 1, "web/new/gone": 0} {
		if h.n(p) != n {
			t.Errorf("%s hashed %d times, want %d", p, h.n(p), n)
		}
	}
	if f, _ := e.row(t, "web/new/sub/b"); f.SHA256 != shaOf([]byte("b")) {
		t.Fatalf("%+v", f)
	}
}
