package catalog

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rsyncFile is one file copied the way rsync -a copies it: a temp file is
// written and closed, its times and mode are set by path, then it is
// renamed over the final name. mode picks the interleaving with the
// recorder's hash of the temp file.
type rsyncFile struct {
	mode         int
	temp, final  string
	content      []byte
	mtime        time.Time
	hashes       atomic.Int32 // hashes of temp begun
	mids         atomic.Int32 // hashes of temp that reached the middle
	started      chan struct{}
	onDisk       chan struct{}
	mid, resumed chan struct{}
}

// The interleavings of rsyncFile.mode.
const (
	rsyncFree         = iota // no forcing: whatever the scheduler does
	rsyncGoneAtHash          // temp is renamed on disk as its hash starts; the event comes after the hash
	rsyncGoneAtRetry         // utimes during the hash (retry), renamed on disk as the retry starts
	rsyncEventMidHash        // rename and its event during the hash; release reported after the rename
	rsyncReleaseLast         // only Renamed(temp, final) then Written(final)
	rsyncStaleRelease        // Renamed(temp, final) then Written(temp): the release saw the old name
	rsyncModes
)

// TestRecorderRsyncSequence copies many files in parallel as rsync does and
// forces the interleavings where the rename happens on disk while, or
// before, the temp file is hashed but its event arrives after the hash: the
// hash finds no temp file, and the rename then has no row to move. Every
// final file must still get its row.
func TestRecorderRsyncSequence(t *testing.T) {
	const n = 200
	files := map[string]*rsyncFile{} // by temp path; read-only once the recorder runs
	var list []*rsyncFile
	for i := range n {
		dir := fmt.Sprintf("web/demo.softxs.ch/hydro/rt/d%d", i%7)
		name := fmt.Sprintf("f%03d.go", i)
		f := &rsyncFile{
			mode:    i % rsyncModes,
			temp:    dir + "/." + name + fmt.Sprintf(".%06X", i*7919),
			final:   dir + "/" + name,
			content: []byte(fmt.Sprintf("package rt // file %d\n", i)),
			mtime:   time.Unix(1_600_000_000+int64(i), 0),
			started: make(chan struct{}),
			onDisk:  make(chan struct{}),
			mid:     make(chan struct{}),
			resumed: make(chan struct{}),
		}
		files[f.temp] = f
		list = append(list, f)
	}
	var e *recEnv
	e = newRecEnv(t, RecorderOptions{
		beforeHash: func(p string) {
			f := files[p]
			if f == nil {
				return
			}
			k := f.hashes.Add(1)
			if f.mode == rsyncGoneAtHash && k == 1 || f.mode == rsyncGoneAtRetry && k == 2 {
				close(f.started)
				<-f.onDisk
			}
		},
		midHash: func(p string) {
			f := files[p]
			if f == nil || f.mode != rsyncGoneAtRetry && f.mode != rsyncEventMidHash {
				return
			}
			if f.mids.Add(1) == 1 {
				close(f.mid)
				<-f.resumed
			}
		},
	})
	for _, f := range list {
		if err := os.MkdirAll(filepath.Join(e.root, path.Dir(f.final)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// idle waits until no hash of p runs, i.e. until the hash that began
	// has had its result queued.
	idle := func(p string) {
		deadline := time.Now().Add(time.Minute)
		for {
			e.r.mu.Lock()
			busy := e.r.inflight[p] != nil
			e.r.mu.Unlock()
			if !busy {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: still being hashed after a minute", p)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	for _, f := range list {
		wg.Go(func() {
			if err := rsyncCopy(e, f, idle); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	e.flush(t)

	for _, f := range list {
		if rec, ok := e.row(t, f.temp); ok {
			t.Errorf("mode %d: temp row left: %+v", f.mode, rec)
		}
		rec, ok := e.row(t, f.final)
		switch {
		case !ok:
			t.Errorf("mode %d: %s: no row", f.mode, f.final)
		case rec.SHA256 != shaOf(f.content) || rec.Size != int64(len(f.content)) || rec.App != "hydro":
			t.Errorf("mode %d: %s: row %+v; want sha %s, size %d, app hydro", f.mode, f.final, rec, shaOf(f.content), len(f.content))
		}
	}
	var rows int
	must(t, e.db.WalkFiles(e.ctx, "", func(FileRecord) error { rows++; return nil }))
	if rows != n {
		t.Errorf("%d rows, want %d", rows, n)
	}
	if e.r.Dirty() != "" || e.r.Dropped() != 0 || e.r.QueueDepth() != 0 {
		t.Errorf("dirty %q, dropped %d, depth %d", e.r.Dirty(), e.r.Dropped(), e.r.QueueDepth())
	}
}

// rsyncCopy does what rsync does for one file, sending the events the FUSE
// layer sends, in the interleaving f.mode asks for.
func rsyncCopy(e *recEnv, f *rsyncFile, idle func(string)) error {
	const app = "hydro"
	temp, final := filepath.Join(e.root, f.temp), filepath.Join(e.root, f.final)
	w, err := os.OpenFile(temp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := w.Write(f.content); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if f.mode != rsyncReleaseLast && f.mode != rsyncStaleRelease {
		e.r.Written(app, f.temp)
	}
	setAttrs := func() error {
		if err := os.Chtimes(temp, f.mtime, f.mtime); err != nil {
			return err
		}
		return os.Chmod(temp, 0o644)
	}
	switch f.mode {
	case rsyncFree:
		if err := setAttrs(); err != nil {
			return err
		}
		if err := os.Rename(temp, final); err != nil {
			return err
		}
		e.r.Renamed(app, f.temp, f.final)
	case rsyncGoneAtHash:
		err := setAttrs()
		<-f.started
		if err == nil {
			err = os.Rename(temp, final)
		}
		close(f.onDisk)
		if err != nil {
			return err
		}
		idle(f.temp)
		e.r.Renamed(app, f.temp, f.final)
	case rsyncGoneAtRetry:
		<-f.mid
		err := setAttrs()
		close(f.resumed)
		if err != nil {
			return err
		}
		<-f.started
		err = os.Rename(temp, final)
		close(f.onDisk)
		if err != nil {
			return err
		}
		idle(f.temp)
		e.r.Renamed(app, f.temp, f.final)
	case rsyncEventMidHash:
		if err := setAttrs(); err != nil {
			close(f.resumed)
			return err
		}
		<-f.mid
		err := os.Rename(temp, final)
		if err == nil {
			e.r.Renamed(app, f.temp, f.final)
			e.r.Written(app, f.final)
		}
		close(f.resumed)
		return err
	case rsyncReleaseLast:
		if err := setAttrs(); err != nil {
			return err
		}
		if err := os.Rename(temp, final); err != nil {
			return err
		}
		e.r.Renamed(app, f.temp, f.final)
		e.r.Written(app, f.final)
	case rsyncStaleRelease:
		if err := setAttrs(); err != nil {
			return err
		}
		if err := os.Rename(temp, final); err != nil {
			return err
		}
		e.r.Renamed(app, f.temp, f.final)
		e.r.Written(app, f.temp)
	}
	return nil
}

// A directory renamed on disk while a file in it is hashed, its event
// arriving after the hash found nothing: the file is hashed at its new
// path, and the vanished path is forgotten.
func TestRecorderDirRenamedBeforeItsEvent(t *testing.T) {
	var e *recEnv
	var once sync.Once
	e = newRecEnv(t, RecorderOptions{Workers: 1, beforeHash: func(p string) {
		if p == "web/d/sub/y" {
			once.Do(func() { must(t, os.Rename(filepath.Join(e.root, "web/d"), filepath.Join(e.root, "web/e"))) })
		}
	}})
	writeFile(t, e.root, "web/d/sub/y", "why")
	writeFile(t, e.root, "web/d/z", "zed")
	e.r.Written("x", "web/d/z")
	e.flush(t)
	e.r.Written("x", "web/d/sub/y")
	e.flush(t)
	if got := e.paths(t); got != "web/d/z" {
		t.Fatalf("rows %s before the rename event; want web/d/z", got)
	}
	e.r.Renamed("x", "web/d", "web/e")
	e.flush(t)
	if got := e.paths(t); got != "web/e/sub/y,web/e/z" {
		t.Fatalf("rows %s; want web/e/sub/y,web/e/z", got)
	}
	if f, _ := e.row(t, "web/e/sub/y"); f.SHA256 != shaOf([]byte("why")) || f.App != "x" {
		t.Fatalf("%+v", f)
	}
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	if e.r.vanished.Len() != 0 || len(e.r.vanishedAt) != 0 || len(e.r.vanDirs) != 0 {
		t.Fatalf("vanished paths kept: %d %v %v", e.r.vanished.Len(), e.r.vanishedAt, e.r.vanDirs)
	}
}

// A file deleted without an event is remembered as vanished until its
// Removed arrives; a later file of that name renamed away is not hashed
// at the target on its account.
func TestRecorderRemovedForgetsVanished(t *testing.T) {
	e := newRecEnv(t, RecorderOptions{})
	writeFile(t, e.root, "web/a/gone", "x")
	// Gone before the hasher gets to it: removed before its Written is
	// handled (removing after Written raced the hasher).
	os.Remove(filepath.Join(e.root, "web/a/gone"))
	e.r.Written("x", "web/a/gone")
	e.flush(t)
	e.r.mu.Lock()
	n := e.r.vanished.Len()
	e.r.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d vanished paths, want 1", n)
	}
	e.r.Removed("x", "web/a")
	e.flush(t)
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	if e.r.vanished.Len() != 0 || len(e.r.vanishedAt) != 0 || len(e.r.vanDirs) != 0 {
		t.Fatalf("vanished paths kept after Removed: %v %v", e.r.vanishedAt, e.r.vanDirs)
	}
}

// The vanished paths are bounded: the oldest are forgotten first, and the
// directory index stays in step.
func TestRecorderVanishedIsBounded(t *testing.T) {
	e := newRecEnv(t, RecorderOptions{})
	r := e.r
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range maxVanished + 10 {
		r.addVanishedLocked(fmt.Sprintf("web/d%d/f%d", i%3, i))
	}
	r.addVanishedLocked("web/d1/f1000") // already known: no duplicate
	if r.vanished.Len() != maxVanished || len(r.vanishedAt) != maxVanished {
		t.Fatalf("%d/%d vanished paths, want %d", r.vanished.Len(), len(r.vanishedAt), maxVanished)
	}
	if r.vanishedAt["web/d0/f0"] != nil || r.vanishedAt["web/d2/f11"] == nil {
		t.Fatal("not the oldest forgotten")
	}
	if sum := r.vanDirs["web/d0"] + r.vanDirs["web/d1"] + r.vanDirs["web/d2"]; sum != maxVanished || r.vanDirs["web"] != maxVanished {
		t.Fatalf("directory index %d under web/d*, %d under web; want %d", sum, r.vanDirs["web"], maxVanished)
	}
	want := r.vanDirs["web/d1"]
	if got := len(r.takeVanishedLocked("web/d1")); got != want || r.vanDirs["web/d1"] != 0 || r.vanDirs["web"] != maxVanished-want {
		t.Fatalf("took %d under web/d1, want %d; index left %v", got, want, r.vanDirs)
	}
	if got := len(r.takeVanishedLocked("web")); got != maxVanished-want || len(r.vanDirs) != 0 || r.vanished.Len() != 0 {
		t.Fatalf("took %d under web, want %d; left %d %v", got, maxVanished-want, r.vanished.Len(), r.vanDirs)
	}
}

// A Written that names a file by the path it had before a rename (the
// FUSE release is asynchronous and may read the old name) is followed to
// the new name, through a directory rename too, and a cycle of renames of
// a deleted file ends.
func TestRecorderStaleWrittenFollowsRename(t *testing.T) {
	h := newHashLog("")
	e := newRecEnv(t, RecorderOptions{beforeHash: h.before})
	writeFile(t, e.root, "web/e/sub/y", "why")
	writeFile(t, e.root, "web/f", "eff")
	e.r.Renamed("x", "web/.f.tmp", "web/f")
	e.r.Renamed("x", "web/d", "web/e")
	e.r.Written("x", "web/.f.tmp")
	e.r.Written("x", "web/d/sub/y")
	e.flush(t)
	if got := e.paths(t); got != "web/e/sub/y,web/f" {
		t.Fatalf("rows %s; want web/e/sub/y,web/f", got)
	}
	for p, c := range map[string]string{"web/e/sub/y": "why", "web/f": "eff"} {
		if f, _ := e.row(t, p); f.SHA256 != shaOf([]byte(c)) || f.App != "x" {
			t.Fatalf("%s: %+v", p, f)
		}
	}
	// a -> b -> a, and the file is gone: each name is tried a bounded
	// number of times.
	e.r.Renamed("x", "web/a", "web/b")
	e.r.Renamed("x", "web/b", "web/a")
	e.r.Written("x", "web/a")
	e.flush(t)
	if n := h.n("web/a") + h.n("web/b"); n != maxFollow+1 {
		t.Fatalf("%d hashes of web/a and web/b, want %d", n, maxFollow+1)
	}
	if got := e.paths(t); got != "web/e/sub/y,web/f" {
		t.Fatalf("rows %s; want web/e/sub/y,web/f", got)
	}
}

// The renames remembered are bounded, the oldest forgotten first; the
// latest rename of a path wins.
func TestRecorderRenamesAreBounded(t *testing.T) {
	e := newRecEnv(t, RecorderOptions{})
	r := e.r
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range maxRenames + 10 {
		r.renames.add(fmt.Sprintf("web/t%d", i), fmt.Sprintf("web/f%d", i))
	}
	r.renames.add("web/t20", "web/g20")
	if r.renames.order.Len() != maxRenames || len(r.renames.to) != maxRenames {
		t.Fatalf("%d/%d renames, want %d", r.renames.order.Len(), len(r.renames.to), maxRenames)
	}
	for p, want := range map[string]string{"web/t0": "", "web/t9/x": "", "web/t10": "web/f10", "web/t20/x/y": "web/g20/x/y", "web/t11x": ""} {
		if got := r.renames.follow(p); got != want {
			t.Errorf("follow(%s) = %q, want %q", p, got, want)
		}
	}
}
