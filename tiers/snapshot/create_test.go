package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/tiers"
)

const testName = "2026-11-28T050000"

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(content), 0o644))
}

// sampleTree builds a tier with every kind of entry and metadata a
// snapshot must carry, plus things outside it that must not be reached.
func sampleTree(t *testing.T) (src, outside string) {
	t.Helper()
	base := t.TempDir()
	src = filepath.Join(base, "local")
	outside = filepath.Join(base, "outside")
	write(t, filepath.Join(outside, "secret"), "outside data")

	app := filepath.Join(src, "web", "demo.softxs.ch", "hydro")
	write(t, filepath.Join(app, "db", "hydro.sql"), "CREATE TABLE x;\n")
	write(t, filepath.Join(app, "shared", "var", "a.pdf"), strings.Repeat("pdf", 100000))
	write(t, filepath.Join(app, "empty-file"), "")
	write(t, filepath.Join(src, "intern", "intern.softxs.ch", "tracking", "x.txt"), "tracking")
	must(t, os.MkdirAll(filepath.Join(app, "empty-dir"), 0o755))
	must(t, os.Chmod(filepath.Join(app, "db", "hydro.sql"), 0o600))
	must(t, os.Chown(filepath.Join(app, "db", "hydro.sql"), 1234, 5678))
	must(t, os.Symlink("shared/var", filepath.Join(app, "var")))
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(app, "abs-out")))
	must(t, os.Symlink("../../../../outside", filepath.Join(app, "rel-out-dir")))
	must(t, os.Symlink("dangling-target", filepath.Join(app, "dangling")))
	must(t, unix.Mkfifo(filepath.Join(app, "fifo"), 0o640))
	must(t, unix.Setxattr(filepath.Join(app, "shared"), "user.v2backup-test", []byte("kept"), 0))

	// Directory metadata, set bottom-up after the contents.
	must(t, os.Chown(filepath.Join(app, "shared"), 1000, 1001))
	must(t, os.Chmod(filepath.Join(app, "shared"), 0o2750))
	must(t, os.Chmod(filepath.Join(app, "db"), 0o500))
	old := time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC)
	for i, d := range []string{"db", "shared/var", "shared", "empty-dir", "."} {
		ts := old.Add(time.Duration(i) * time.Hour)
		must(t, os.Chtimes(filepath.Join(app, d), ts, ts))
	}
	ts := old.Add(-time.Hour)
	must(t, os.Chtimes(filepath.Join(app, "db", "hydro.sql"), ts, ts))
	must(t, os.Chtimes(src, ts, ts))
	return src, outside
}

type node struct {
	mode     fs.FileMode
	uid, gid uint32
	mtime    int64
	ino      uint64
	target   string
	xattr    string
}

// scan describes a tree by relative path, without following links.
func scan(t *testing.T, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := node{mode: fi.Mode(), uid: st.Uid, gid: st.Gid, mtime: fi.ModTime().UnixNano(), ino: st.Ino}
		if fi.Mode()&fs.ModeSymlink != 0 {
			n.target, _ = os.Readlink(p)
		}
		if fi.IsDir() {
			b := make([]byte, 64)
			if k, err := unix.Lgetxattr(p, "user.v2backup-test", b); err == nil {
				n.xattr = string(b[:k])
			}
		}
		out[rel] = n
		return nil
	})
	must(t, err)
	return out
}

type collector struct {
	mu      sync.Mutex
	entries map[string]Entry
	calls   int
}

func (c *collector) emit(b []Entry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]Entry{}
	}
	c.calls++
	for _, e := range b {
		if _, dup := c.entries[e.Path]; dup {
			return fmt.Errorf("entry %s emitted twice", e.Path)
		}
		c.entries[e.Path] = e
	}
	return nil
}

func sha(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	must(t, err)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestCreateIsIdenticalToSource(t *testing.T) {
	src, outside := sampleTree(t)
	snapdir := filepath.Join(filepath.Dir(src), "snapshots", "local")
	c := &collector{}
	res, err := Create(context.Background(), Options{Source: src, SnapDir: snapdir, Name: testName, Emit: c.emit, BatchSize: 3})
	must(t, err)
	snap := filepath.Join(snapdir, testName)
	if res.Path != snap {
		t.Errorf("Result.Path = %s, want %s", res.Path, snap)
	}

	want, got := scan(t, src), scan(t, snap)
	for rel, w := range want {
		g, ok := got[rel]
		if !ok {
			t.Errorf("%s missing from the snapshot", rel)
			continue
		}
		if w.mode != g.mode || w.uid != g.uid || w.gid != g.gid || w.mtime != g.mtime || w.target != g.target || w.xattr != g.xattr {
			t.Errorf("%s: snapshot has %+v, source %+v", rel, g, w)
		}
		if !w.mode.IsDir() && w.ino != g.ino {
			t.Errorf("%s: not a hard link of the source (inode %d, source %d)", rel, g.ino, w.ino)
		}
		if w.mode.IsDir() && rel != "." && w.ino == g.ino {
			t.Errorf("%s: directory shares the source's inode", rel)
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s is in the snapshot, not in the source", rel)
		}
	}
	if got["web/demo.softxs.ch/hydro/shared"].xattr != "kept" {
		t.Errorf("directory xattr not copied: %+v", got["web/demo.softxs.ch/hydro/shared"])
	}
	// Links out of the tree are copied as links, never followed.
	if _, err := os.Lstat(filepath.Join(snap, "web/demo.softxs.ch/hydro/rel-out-dir/secret")); err == nil {
		if fi, _ := os.Lstat(filepath.Join(snap, "web/demo.softxs.ch/hydro/rel-out-dir")); fi.Mode()&fs.ModeSymlink == 0 {
			t.Error("rel-out-dir was followed")
		}
	}
	if n := scan(t, outside); len(n) != 2 {
		t.Errorf("outside tree changed: %v", n)
	}

	// The manifest: every non-directory once, regular files hashed.
	var wantPaths []string
	for rel, w := range want {
		if !w.mode.IsDir() {
			wantPaths = append(wantPaths, rel)
		}
	}
	var gotPaths []string
	for p := range c.entries {
		gotPaths = append(gotPaths, p)
	}
	sort.Strings(wantPaths)
	sort.Strings(gotPaths)
	if strings.Join(wantPaths, " ") != strings.Join(gotPaths, " ") {
		t.Fatalf("manifest paths\n got %v\nwant %v", gotPaths, wantPaths)
	}
	for p, e := range c.entries {
		w := want[p]
		if e.Mode != w.mode || e.MTime.UnixNano() != w.mtime || e.UID != w.uid || e.GID != w.gid || e.Target != w.target {
			t.Errorf("manifest %s = %+v, source %+v", p, e, w)
		}
		if e.Mode.IsRegular() {
			if s := sha(t, filepath.Join(src, p)); e.SHA256 != s || e.Reused {
				t.Errorf("manifest %s: sha256 %q reused=%v, want %q", p, e.SHA256, e.Reused, s)
			}
		} else if e.SHA256 != "" {
			t.Errorf("manifest %s: a %v has a hash", p, e.Mode.Type())
		}
	}
	if e := c.entries["web/demo.softxs.ch/hydro/shared/var/a.pdf"]; e.Size != 300000 {
		t.Errorf("a.pdf size %d", e.Size)
	}
	if res.Files != 4 || res.Symlinks != 4 || res.Others != 1 || res.Dirs != 11 || res.Hashed != 4 || res.Reused != 0 || res.Bytes != 300000+16+8 {
		t.Errorf("result counts %+v", res)
	}
	if c.calls < 2 {
		t.Errorf("Emit called %d times with BatchSize 3", c.calls)
	}
	if left, _ := filepath.Glob(filepath.Join(snapdir, ".*")); len(left) != 0 {
		t.Errorf("work directories left: %v", left)
	}
}

func TestCreateReusesKnownHashes(t *testing.T) {
	src, _ := sampleTree(t)
	snapdir := filepath.Join(filepath.Dir(src), "snaps")
	known := "web/demo.softxs.ch/hydro/shared/var/a.pdf"
	fi, err := os.Stat(filepath.Join(src, known))
	must(t, err)
	var hashAsked atomic.Int32
	var mu sync.Mutex
	var reads []string
	c := &collector{}
	res, err := Create(context.Background(), Options{
		Source: src, SnapDir: snapdir, Name: testName, Emit: c.emit,
		Hash: func(rel string, size, mtimeNs int64) (string, bool) {
			hashAsked.Add(1)
			if rel == known && size == fi.Size() && mtimeNs == fi.ModTime().UnixNano() {
				return "feedface", true
			}
			return "", false
		},
		beforeRead: func(rel string) { mu.Lock(); reads = append(reads, rel); mu.Unlock() },
	})
	must(t, err)
	for _, r := range reads {
		if r == known {
			t.Errorf("%s was read although its hash was known", known)
		}
	}
	if len(reads) != 3 || hashAsked.Load() != 4 {
		t.Errorf("files read %v, hash asked %d times; want 3 reads, 4 asks", reads, hashAsked.Load())
	}
	if e := c.entries[known]; e.SHA256 != "feedface" || !e.Reused {
		t.Errorf("known entry %+v", e)
	}
	if res.Reused != 1 || res.Hashed != 3 {
		t.Errorf("reused %d hashed %d", res.Reused, res.Hashed)
	}
}

func TestCreateCancelledLeavesNothingVisible(t *testing.T) {
	src, _ := sampleTree(t)
	snapdir := filepath.Join(filepath.Dir(src), "snaps")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var listed atomic.Int32
	_, err := Create(ctx, Options{Source: src, SnapDir: snapdir, Name: testName, Workers: 1,
		afterList: func(string) {
			if listed.Add(1) == 3 {
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Create after cancel: %v, want context.Canceled", err)
	}
	if l, _ := List(snapdir); len(l) != 0 {
		t.Fatalf("cancelled run left snapshots %v", l)
	}
	if _, err := os.Stat(filepath.Join(snapdir, ".deleting-"+testName)); err != nil {
		t.Fatalf("cancelled run's tree not moved aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(snapdir, ".building-"+testName)); err == nil {
		t.Fatal(".building- left after cancel")
	}

	// A run killed half way leaves .building-*: the next run moves it aside.
	killed := filepath.Join(snapdir, ".building-2026-11-27T050000")
	write(t, filepath.Join(killed, "web", "half"), "half")
	res, err := Create(context.Background(), Options{Source: src, SnapDir: snapdir, Name: testName})
	must(t, err)
	if len(res.Cleaned) != 1 || res.Cleaned[0] != ".deleting-2026-11-27T050000" {
		t.Errorf("Cleaned = %v", res.Cleaned)
	}
	purged, err := Purge(context.Background(), snapdir, PurgeOptions{Batch: 2})
	must(t, err)
	if len(purged) != 2 {
		t.Errorf("purged %v, want the cancelled and the killed run", purged)
	}
	des, err := os.ReadDir(snapdir)
	must(t, err)
	if len(des) != 1 || des[0].Name() != testName {
		t.Errorf("snapdir holds %v, want only %s", des, testName)
	}
	// Purging removed only links: the source is intact.
	if got := sha(t, filepath.Join(src, "web/demo.softxs.ch/hydro/db/hydro.sql")); got != sha(t, filepath.Join(snapdir, testName, "web/demo.softxs.ch/hydro/db/hydro.sql")) {
		t.Error("source and snapshot differ after purge")
	}
}

func TestCreateEmitFailure(t *testing.T) {
	src, _ := sampleTree(t)
	snapdir := filepath.Join(filepath.Dir(src), "snaps")
	_, err := Create(context.Background(), Options{Source: src, SnapDir: snapdir, Name: testName,
		Emit: func([]Entry) error { return errors.New("catalog is locked") }})
	if err == nil || !strings.Contains(err.Error(), "catalog is locked") || !strings.Contains(err.Error(), "manifest") {
		t.Fatalf("Create with failing Emit: %v", err)
	}
	if l, _ := List(snapdir); len(l) != 0 {
		t.Fatalf("failed run left snapshots %v", l)
	}
}

func TestCreateRejects(t *testing.T) {
	src, _ := sampleTree(t)
	snapdir := filepath.Join(filepath.Dir(src), "snaps")
	ctx := context.Background()

	_, err := Create(ctx, Options{Source: src, SnapDir: snapdir, Name: "2026-11-28T05:00:00"})
	var ne *tiers.NameError
	if !errors.As(err, &ne) || ne.Field != "snapshot" {
		t.Errorf("name with colons: %v", err)
	}
	_, err = Create(ctx, Options{Source: filepath.Join(src, "nope"), SnapDir: snapdir, Name: testName})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing source: %v", err)
	}
	_, err = Create(ctx, Options{Source: src, SnapDir: snapdir, Name: testName})
	must(t, err)
	_, err = Create(ctx, Options{Source: src, SnapDir: snapdir, Name: testName})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second snapshot with one name: %v", err)
	}
	_, err = Create(ctx, Options{Source: src, SnapDir: filepath.Join(src, "web", "snaps"), Name: testName})
	if err == nil || !strings.Contains(err.Error(), "inside the source") {
		t.Errorf("snapdir inside the source: %v", err)
	}
	blocker := filepath.Join(filepath.Dir(src), "file")
	write(t, blocker, "x")
	_, err = Create(ctx, Options{Source: src, SnapDir: filepath.Join(blocker, "snaps"), Name: testName})
	if err == nil || !strings.Contains(err.Error(), "snapshot directory") {
		t.Errorf("snapdir under a file: %v", err)
	}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		var a, b unix.Stat_t
		if unix.Stat("/dev/shm", &a) == nil && unix.Stat(src, &b) == nil && a.Dev != b.Dev {
			other, err := os.MkdirTemp("/dev/shm", "v2backup-test")
			must(t, err)
			t.Cleanup(func() { os.RemoveAll(other) })
			_, err = Create(ctx, Options{Source: src, SnapDir: other, Name: testName})
			if err == nil || !strings.Contains(err.Error(), "different filesystems") {
				t.Errorf("snapdir on another filesystem: %v", err)
			}
		}
	}
}

func TestCreateKeepsSubtreeFromElsewhere(t *testing.T) {
	src, _ := sampleTree(t)
	snapdir := filepath.Join(filepath.Dir(src), "snaps")
	ctx := context.Background()
	_, err := Create(ctx, Options{Source: src, SnapDir: snapdir, Name: "2026-11-27T050000"})
	must(t, err)
	prev := filepath.Join(snapdir, "2026-11-27T050000")

	// hydro's backup is half written tonight, tracking's first one too.
	app := filepath.Join(src, "web/demo.softxs.ch/hydro")
	write(t, filepath.Join(app, "db", "half-written.sql"), "INSERT")
	write(t, filepath.Join(src, "intern/intern.softxs.ch/tracking/partial"), "p")
	c := &collector{}
	res, err := Create(ctx, Options{Source: src, SnapDir: snapdir, Name: testName, Emit: c.emit,
		Keep: func(rel string) (string, bool) {
			switch rel {
			case "web/demo.softxs.ch/hydro":
				return filepath.Join(prev, rel), true
			case "intern/intern.softxs.ch/tracking":
				return "", true
			}
			return "", false
		}})
	must(t, err)
	snap := filepath.Join(snapdir, testName)
	if _, err := os.Lstat(filepath.Join(snap, "web/demo.softxs.ch/hydro/db/half-written.sql")); err == nil {
		t.Error("half-written file of a kept application is in the snapshot")
	}
	if _, err := os.Lstat(filepath.Join(snap, "intern/intern.softxs.ch/tracking")); err == nil {
		t.Error("application left out is in the snapshot")
	}
	if _, ok := c.entries["web/demo.softxs.ch/hydro/db/half-written.sql"]; ok {
		t.Error("half-written file in the manifest")
	}
	e, ok := c.entries["web/demo.softxs.ch/hydro/db/hydro.sql"]
	if !ok || e.SHA256 == "" {
		t.Errorf("kept file's entry under its live path: %+v %v", e, ok)
	}
	want, got := scan(t, filepath.Join(prev, "web/demo.softxs.ch/hydro")), scan(t, filepath.Join(snap, "web/demo.softxs.ch/hydro"))
	for rel, w := range want {
		g := got[rel]
		if w.mode != g.mode || w.mtime != g.mtime || (!w.mode.IsDir() && w.ino != g.ino) {
			t.Errorf("kept %s: %+v, previous snapshot %+v", rel, g, w)
		}
	}
	if len(want) != len(got) || len(res.Kept) != 2 {
		t.Errorf("kept tree has %d entries, previous %d; Kept %v", len(got), len(want), res.Kept)
	}

	_, err = Create(ctx, Options{Source: src, SnapDir: snapdir, Name: "2026-11-29T050000",
		Keep: func(rel string) (string, bool) {
			if rel == "web/demo.softxs.ch/hydro" {
				return filepath.Join(snapdir, "2020-01-01T000000", rel), true
			}
			return "", false
		}})
	if err == nil || !strings.Contains(err.Error(), "taking web/demo.softxs.ch/hydro from") {
		t.Errorf("Keep from a missing directory: %v", err)
	}
}

func TestCreateToleratesVanishingEntries(t *testing.T) {
	src, _ := sampleTree(t)
	snapdir := filepath.Join(filepath.Dir(src), "snaps")
	app := filepath.Join(src, "web/demo.softxs.ch/hydro")
	res, err := Create(context.Background(), Options{Source: src, SnapDir: snapdir, Name: testName, Workers: 1,
		afterList: func(rel string) {
			if rel == "web/demo.softxs.ch/hydro" {
				must(t, os.Remove(filepath.Join(app, "empty-file")))
				must(t, os.Remove(filepath.Join(app, "empty-dir")))
			}
		}})
	must(t, err)
	if res.Vanished != 2 {
		t.Errorf("Vanished = %d, want 2", res.Vanished)
	}
	snap := filepath.Join(snapdir, testName, "web/demo.softxs.ch/hydro")
	for _, n := range []string{"empty-file", "empty-dir"} {
		if _, err := os.Lstat(filepath.Join(snap, n)); err == nil {
			t.Errorf("vanished %s is in the snapshot", n)
		}
	}
}

func TestCreateRereadsFilesChangingWhileHashed(t *testing.T) {
	src, _ := sampleTree(t)
	snapdir := filepath.Join(filepath.Dir(src), "snaps")
	once := "web/demo.softxs.ch/hydro/db/hydro.sql"
	always := "intern/intern.softxs.ch/tracking/x.txt"
	var n atomic.Int32
	appendTo := func(rel string) {
		f, err := os.OpenFile(filepath.Join(src, rel), os.O_WRONLY|os.O_APPEND, 0)
		must(t, err)
		_, err = f.WriteString("more")
		must(t, err)
		must(t, f.Close())
	}
	c := &collector{}
	res, err := Create(context.Background(), Options{Source: src, SnapDir: snapdir, Name: testName, Emit: c.emit,
		beforeRead: func(rel string) {
			if rel == always || (rel == once && n.Add(1) == 1) {
				appendTo(rel)
			}
		}})
	must(t, err)
	if e := c.entries[always]; e.SHA256 != "" || res.Unhashed != 1 {
		t.Errorf("always-changing file: %+v, Unhashed %d", e, res.Unhashed)
	}
	e := c.entries[once]
	if want := sha(t, filepath.Join(src, once)); e.SHA256 != want || e.Size != int64(len("CREATE TABLE x;\nmore")) {
		t.Errorf("file changed once: %+v, want sha %s", e, want)
	}
}

func TestCreateNeverFollowsSymlinkSwappedIn(t *testing.T) {
	// A directory replaced by a symlink between listing and opening is
	// treated as vanished: never followed out of the tree.
	src, outside := sampleTree(t)
	snapdir := filepath.Join(filepath.Dir(src), "snaps")
	shared := filepath.Join(src, "web/demo.softxs.ch/hydro/shared")
	c := &collector{}
	res, err := Create(context.Background(), Options{Source: src, SnapDir: snapdir, Name: testName, Workers: 1, Emit: c.emit,
		afterList: func(rel string) {
			if rel == "web/demo.softxs.ch/hydro" {
				must(t, os.Rename(shared, shared+".moved"))
				must(t, os.Symlink(outside, shared))
			}
		}})
	must(t, err)
	if res.Vanished != 1 {
		t.Errorf("Vanished = %d, want 1", res.Vanished)
	}
	snap := filepath.Join(snapdir, testName)
	if _, err := os.Lstat(filepath.Join(snap, "web/demo.softxs.ch/hydro/shared")); err == nil {
		t.Error("swapped directory is in the snapshot")
	}
	for p := range c.entries {
		if strings.Contains(p, "secret") {
			t.Errorf("followed the swapped-in symlink: %s", p)
		}
	}
}

func TestCreateStopsAtMountPoints(t *testing.T) {
	src, _ := sampleTree(t)
	snapdir := filepath.Join(filepath.Dir(src), "snaps")
	mnt := filepath.Join(src, "web", "mounted")
	must(t, os.Mkdir(mnt, 0o755))
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	_, err := Create(context.Background(), Options{Source: src, SnapDir: snapdir, Name: testName})
	if err == nil || !strings.Contains(err.Error(), "another filesystem") || !strings.Contains(err.Error(), mnt) {
		t.Fatalf("Create over a mount point: %v", err)
	}
	if l, _ := List(snapdir); len(l) != 0 {
		t.Fatalf("failed run left snapshots %v", l)
	}
}
