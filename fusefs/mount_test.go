package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// memRecorder keeps Recorder events in memory.
type memRecorder struct {
	mu     sync.Mutex
	events []string
}

func (r *memRecorder) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}
func (r *memRecorder) Written(app, path string)     { r.add("written " + app + " " + path) }
func (r *memRecorder) Removed(app, path string)     { r.add("removed " + app + " " + path) }
func (r *memRecorder) Renamed(app, from, to string) { r.add("renamed " + app + " " + from + " " + to) }

func (r *memRecorder) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.events, s)
}

// waitEvent polls for an event: Release reaches the daemon after close(2)
// returns, asynchronously.
func (r *memRecorder) waitEvent(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !r.has(s) {
		if time.Now().After(deadline) {
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("event %q not recorded; got %q", s, r.events)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type testMount struct {
	mnt, local string
	m          *Mount
	rec        *memRecorder
}

var testApps = []App{
	{Name: "hydro", Relpath: "demo.softxs.ch/hydro"},
	{Name: "www", Relpath: "www.softxs.ch"},
	{Name: "blog", Relpath: "www.softxs.ch/blog"},
}

func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func mountT(t *testing.T, vm string, apps []App, mod func(*Config)) *testMount {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("fusefs tests need root (the daemon runs as root and mounts with allow_other)")
	}
	dir := t.TempDir()
	tm := &testMount{mnt: filepath.Join(dir, "mnt"), local: filepath.Join(dir, "local"), rec: &memRecorder{}}
	if err := os.Mkdir(tm.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{VM: vm, LocalRoot: tm.local, Apps: apps, Recorder: tm.rec, Logger: testLogger(t), Debug: testing.Verbose() && os.Getenv("FUSE_TRACE") != ""}
	if mod != nil {
		mod(&cfg)
	}
	m, err := MountVM(tm.mnt, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tm.m = m
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			unix.Unmount(tm.mnt, unix.MNT_DETACH)
		}
	})
	return tm
}

func (tm *testMount) p(rel string) string  { return filepath.Join(tm.mnt, rel) }
func (tm *testMount) bp(rel string) string { return filepath.Join(tm.local, "web", rel) }

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func TestTreeAndRouting(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	names := func(dir string) []string {
		t.Helper()
		es, err := os.ReadDir(tm.p(dir))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.Name())
		}
		return out
	}
	if got := names(""); !slices.Equal(got, []string{"demo.softxs.ch", "www.softxs.ch"}) {
		t.Errorf("root lists %q", got)
	}
	if got := names("demo.softxs.ch"); !slices.Equal(got, []string{"hydro"}) {
		t.Errorf("demo.softxs.ch lists %q", got)
	}
	// Leftovers in the backing tree of a synthetic directory stay hidden.
	if err := os.MkdirAll(tm.bp("demo.softxs.ch/old-app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tm.p("demo.softxs.ch/old-app")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of unrouted backing dir: %v", err)
	}
	st, err := os.Stat(tm.p("demo.softxs.ch"))
	if err != nil || st.Mode() != os.ModeDir|0o555 {
		t.Errorf("synthetic dir: %v %v", st.Mode(), err)
	}
	// Application directories exist in the backing tree from the start.
	for _, a := range testApps {
		if fi, err := os.Stat(tm.bp(a.Relpath)); err != nil || !fi.IsDir() {
			t.Errorf("backing dir of %s: %v", a.Name, err)
		}
	}
	// A nested application's directory is listed inside its parent's.
	if err := os.WriteFile(tm.p("www.softxs.ch/index.html"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := names("www.softxs.ch"); !slices.Equal(got, []string{"blog", "index.html"}) {
		t.Errorf("www.softxs.ch lists %q", got)
	}
	b, err := os.ReadFile(tm.bp("www.softxs.ch/index.html"))
	if err != nil || string(b) != "hi" {
		t.Errorf("backing content %q %v", b, err)
	}
	// Listings the kernel caches follow changes made through the mount.
	for _, step := range []struct {
		do   func() error
		want []string
	}{
		{func() error { return os.WriteFile(tm.p("www.softxs.ch/a"), nil, 0o644) }, []string{"a", "blog", "index.html"}},
		{func() error { return os.Rename(tm.p("www.softxs.ch/a"), tm.p("www.softxs.ch/z")) }, []string{"blog", "index.html", "z"}},
		{func() error { return os.Mkdir(tm.p("www.softxs.ch/d"), 0o755) }, []string{"blog", "d", "index.html", "z"}},
		{func() error { return os.Remove(tm.p("www.softxs.ch/z")) }, []string{"blog", "d", "index.html"}},
		{func() error { return os.Remove(tm.p("www.softxs.ch/d")) }, []string{"blog", "index.html"}},
	} {
		if err := step.do(); err != nil {
			t.Fatal(err)
		}
		if got := names("www.softxs.ch"); !slices.Equal(got, step.want) {
			t.Errorf("www.softxs.ch lists %q, want %q", got, step.want)
		}
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(tm.p("demo.softxs.ch/hydro"), &sfs); err != nil || sfs.Blocks == 0 {
		t.Errorf("statfs: %v blocks=%d", err, sfs.Blocks)
	}
}

func TestEscapes(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	app := tm.p("demo.softxs.ch/hydro")
	if err := os.WriteFile(filepath.Join(app, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(app, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}

	// Creating at the root or in a synthetic directory.
	wantErrno(t, "create at root", os.WriteFile(tm.p("x"), nil, 0o644), syscall.EACCES)
	wantErrno(t, "mkdir at root", os.Mkdir(tm.p("newhost.ch"), 0o755), syscall.EACCES)
	wantErrno(t, "create in synthetic dir", os.WriteFile(tm.p("demo.softxs.ch/x"), nil, 0o644), syscall.EACCES)
	wantErrno(t, "symlink in synthetic dir", os.Symlink("hydro", tm.p("demo.softxs.ch/l")), syscall.EACCES)
	wantErrno(t, "rmdir app dir", os.Remove(app), syscall.EACCES)
	wantErrno(t, "chmod synthetic dir", os.Chmod(tm.p("demo.softxs.ch"), 0o777), syscall.EACCES)
	wantErrno(t, "setxattr synthetic dir", unix.Setxattr(tm.p("demo.softxs.ch"), "user.x", []byte("1"), 0), syscall.EACCES)

	// "..": the kernel resolves it; it never leaves the mount's tree.
	var rootSt, upSt unix.Stat_t
	if err := unix.Stat(tm.mnt, &rootSt); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(filepath.Join(app, "..", ".."), &upSt); err != nil || upSt.Ino != rootSt.Ino || upSt.Dev != rootSt.Dev {
		t.Errorf("app/../.. is not the mount root: %v", err)
	}
	wantErrno(t, "create via ..", os.WriteFile(filepath.Join(app, "..", "escaped"), nil, 0o644), syscall.EACCES)

	// Symlinks pointing out, absolute and relative.
	for _, target := range []string{"/etc/passwd", "../x", "../../www.softxs.ch/index.html", "sub/../../x", "../../../../../../etc",
		filepath.Join(tm.local, "web", "www.softxs.ch")} {
		wantErrno(t, "symlink -> "+target, os.Symlink(target, filepath.Join(app, "l")), syscall.EACCES)
	}
	// Symlinks inside are stored as symlinks.
	for name, target := range map[string]string{"l1": "f", "sub/l2": "../f", "l3": filepath.Join(tm.local, "web/demo.softxs.ch/hydro/f")} {
		if err := os.Symlink(target, filepath.Join(app, name)); err != nil {
			t.Errorf("symlink %s -> %s: %v", name, target, err)
			continue
		}
		got, err := os.Readlink(tm.bp("demo.softxs.ch/hydro/" + name))
		if err != nil || got != target {
			t.Errorf("backing symlink %s = %q %v", name, got, err)
		}
	}

	// Hard links.
	wantErrno(t, "hard link", os.Link(filepath.Join(app, "f"), filepath.Join(app, "f2")), syscall.EPERM)
	wantErrno(t, "hard link across apps", os.Link(filepath.Join(app, "f"), tm.p("www.softxs.ch/f2")), syscall.EPERM)

	// Renames across applications and out of the tree.
	wantErrno(t, "rename across apps", os.Rename(filepath.Join(app, "f"), tm.p("www.softxs.ch/f")), syscall.EXDEV)
	wantErrno(t, "rename into nested app", os.Rename(tm.p("www.softxs.ch/blog"), tm.p("www.softxs.ch/blog2")), syscall.EACCES)
	wantErrno(t, "rename to synthetic dir", os.Rename(filepath.Join(app, "f"), tm.p("demo.softxs.ch/f")), syscall.EACCES)
	wantErrno(t, "rename to root", os.Rename(filepath.Join(app, "f"), tm.p("f")), syscall.EACCES)
	wantErrno(t, "rename app dir", os.Rename(app, tm.p("demo.softxs.ch/hydro2")), syscall.EACCES)
	wantErrno(t, "whiteout rename", unix.Renameat2(unix.AT_FDCWD, filepath.Join(app, "f"), unix.AT_FDCWD, filepath.Join(app, "g"), unix.RENAME_WHITEOUT), syscall.EINVAL)
	if err := os.Rename(filepath.Join(app, "f"), filepath.Join(app, "sub", "f")); err != nil {
		t.Errorf("rename inside app: %v", err)
	}

	// Device nodes, FIFOs, sockets.
	wantErrno(t, "mknod char", unix.Mknod(filepath.Join(app, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))), syscall.EPERM)
	wantErrno(t, "mknod block", unix.Mknod(filepath.Join(app, "sda"), unix.S_IFBLK|0o666, int(unix.Mkdev(8, 0))), syscall.EPERM)
	wantErrno(t, "mkfifo", unix.Mkfifo(filepath.Join(app, "fifo"), 0o644), syscall.EPERM)
	if err := unix.Mknod(filepath.Join(app, "plain"), unix.S_IFREG|0o640, 0); err != nil {
		t.Errorf("mknod regular: %v", err)
	} else if fi, err := os.Lstat(tm.bp("demo.softxs.ch/hydro/plain")); err != nil || fi.Mode() != 0o640 {
		t.Errorf("mknod regular in backing: %v %v", fi.Mode(), err)
	}

	// A symlink planted in the backing tree is never followed by the
	// daemon: the mount shows it as a symlink, and a directory swapped
	// for a symlink behind the daemon's back fails instead of leading out.
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, tm.bp("demo.softxs.ch/hydro/planted")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(app, "planted")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("planted symlink seen as %v %v", fi, err)
	}
	if err := os.Mkdir(filepath.Join(app, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(app, "d")); err != nil { // kernel now caches "d" as a directory
		t.Fatal(err)
	}
	if err := os.Remove(tm.bp("demo.softxs.ch/hydro/d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, tm.bp("demo.softxs.ch/hydro/d")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(app, "d", "secret")); err == nil {
		t.Errorf("read through a planted symlink: %q", b)
	}
	if err := os.WriteFile(filepath.Join(app, "d", "new"), []byte("x"), 0o644); err == nil {
		t.Error("created a file through a planted symlink")
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
		t.Error("file appeared outside the tree")
	}
}

func TestOtherVMInvisible(t *testing.T) {
	web := mountT(t, "web", testApps, nil)
	intern := mountT(t, "intern", []App{{Name: "track", Relpath: "intern.softxs.ch/tracking"}}, func(c *Config) {
		c.LocalRoot = web.local
	})
	if err := os.WriteFile(web.p("demo.softxs.ch/hydro/secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(intern.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Name() != "intern.softxs.ch" {
		t.Errorf("intern root lists %v", es)
	}
	for _, p := range []string{"demo.softxs.ch", "demo.softxs.ch/hydro/secret", "web", "../web"} {
		if _, err := os.Stat(filepath.Join(intern.mnt, p)); err == nil {
			t.Errorf("intern mount sees %s", p)
		}
	}
	wantErrno(t, "symlink to other VM", os.Symlink("../../../web/demo.softxs.ch/hydro/secret", intern.p("intern.softxs.ch/tracking/l")), syscall.EACCES)
}

func TestMetadata(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	app := tm.p("demo.softxs.ch/hydro")
	// As another user: the kernel sends the caller's credentials; Go
	// cannot switch one thread's uid safely, so use chown after create
	// (root) and check both paths: creation owner = caller (root here),
	// then explicit chown and chmod.
	f := filepath.Join(app, "f")
	if err := os.WriteFile(f, []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(f, 4321, 8765); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(f, 0o4751); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2001, 2, 3, 4, 5, 6, 789, time.UTC)
	if err := os.Chtimes(f, mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(f, "user.v2", []byte("value"), 0); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f, tm.bp("demo.softxs.ch/hydro/f")} {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 4321 || st.Gid != 8765 || st.Mode&0o7777 != 0o4751 || st.Mtim.Sec != mt.Unix() || st.Mtim.Nsec != 789 {
			t.Errorf("%s: uid %d gid %d mode %o mtime %v", p, st.Uid, st.Gid, st.Mode&0o7777, st.Mtim)
		}
		buf := make([]byte, 64)
		n, err := unix.Getxattr(p, "user.v2", buf)
		if err != nil || string(buf[:n]) != "value" {
			t.Errorf("%s xattr: %q %v", p, buf[:n], err)
		}
	}
	// A new file has no security.capability (answered from memory), and
	// one set later is read from the backing file.
	nf := filepath.Join(app, "new")
	if err := os.WriteFile(nf, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(nf, "security.capability", make([]byte, 64)); !errors.Is(err, unix.ENODATA) {
		t.Errorf("security.capability of a new file: %v", err)
	}
	capv := []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // VFS_CAP_REVISION_2, cap_net_bind_service
	if err := unix.Setxattr(nf, "security.capability", capv, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := unix.Getxattr(nf, "security.capability", make([]byte, 64)); err != nil || n != len(capv) {
		t.Errorf("security.capability after set: %d %v", n, err)
	}
	// Listxattr with a too small buffer, then the right one.
	sz, err := unix.Listxattr(f, nil)
	if err != nil || sz == 0 {
		t.Fatalf("listxattr size: %d %v", sz, err)
	}
	if _, err := unix.Listxattr(f, make([]byte, 1)); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("listxattr small buffer: %v", err)
	}
	if err := unix.Removexattr(f, "user.v2"); err != nil {
		t.Errorf("removexattr: %v", err)
	}
	if _, err := unix.Getxattr(f, "user.v2", make([]byte, 8)); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr after remove: %v", err)
	}
	// Modes are honoured exactly, whatever the daemon's umask.
	old := unix.Umask(0)
	defer unix.Umask(old)
	if err := os.Mkdir(filepath.Join(app, "d"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "d", "g"), nil, 0o666); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{"demo.softxs.ch/hydro/d": os.ModeDir | 0o777, "demo.softxs.ch/hydro/d/g": 0o666} {
		fi, err := os.Lstat(tm.bp(p))
		if err != nil || fi.Mode() != want {
			t.Errorf("%s mode %v, want %v (%v)", p, fi.Mode(), want, err)
		}
	}
	// Times on a symlink itself.
	l := filepath.Join(app, "l")
	if err := os.Symlink("f", l); err != nil {
		t.Fatal(err)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, l, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(l, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(tm.bp("demo.softxs.ch/hydro/l"), &st); err != nil || st.Mtim.Sec != mt.Unix() || st.Uid != 1234 {
		t.Errorf("symlink lstat %+v %v", st, err)
	}
	// Truncate and fallocate through a handle.
	fh, err := os.OpenFile(filepath.Join(app, "d", "g"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("0123456789"), 0); err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(4); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	if b, _ := os.ReadFile(tm.bp("demo.softxs.ch/hydro/d/g")); string(b) != "0123" {
		t.Errorf("after truncate: %q", b)
	}
}

func TestRecorderEvents(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	app := tm.p("demo.softxs.ch/hydro")
	if err := os.MkdirAll(filepath.Join(app, "db", "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "db", "x.sql"), []byte("dump"), 0o644); err != nil {
		t.Fatal(err)
	}
	tm.rec.waitEvent(t, "written hydro web/demo.softxs.ch/hydro/db/x.sql")
	if err := os.Rename(filepath.Join(app, "db", "x.sql"), filepath.Join(app, "db", "y.sql")); err != nil {
		t.Fatal(err)
	}
	tm.rec.waitEvent(t, "renamed hydro web/demo.softxs.ch/hydro/db/x.sql web/demo.softxs.ch/hydro/db/y.sql")
	if err := os.Remove(filepath.Join(app, "db", "y.sql")); err != nil {
		t.Fatal(err)
	}
	tm.rec.waitEvent(t, "removed hydro web/demo.softxs.ch/hydro/db/y.sql")
	if err := os.Remove(filepath.Join(app, "db", "old")); err != nil {
		t.Fatal(err)
	}
	tm.rec.waitEvent(t, "removed hydro web/demo.softxs.ch/hydro/db/old")
	if err := os.WriteFile(tm.p("www.softxs.ch/blog/post"), []byte("p"), 0o644); err != nil {
		t.Fatal(err)
	}
	tm.rec.waitEvent(t, "written blog web/www.softxs.ch/blog/post")
	// Opening for reading records nothing.
	tm.rec.mu.Lock()
	before := len(tm.rec.events)
	tm.rec.mu.Unlock()
	if _, err := os.ReadFile(tm.p("www.softxs.ch/blog/post")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tm.p("www.softxs.ch/marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tm.rec.waitEvent(t, "written www web/www.softxs.ch/marker")
	tm.rec.mu.Lock()
	after := tm.rec.events[before:]
	tm.rec.mu.Unlock()
	if len(after) != 1 {
		t.Errorf("events after a read and one write: %q", after)
	}
}

// shared makes a hard link of a backing file outside the mount, standing
// in for a snapshot, and returns its path.
func (tm *testMount) shared(t *testing.T, rel string, content string) string {
	t.Helper()
	if err := os.WriteFile(tm.p(rel), []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(tm.p(rel), 1001, 1002); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(tm.p(rel), "user.tag", []byte("snap"), 0); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(tm.p(rel), old, old); err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(tm.local, "..", "snap")
	os.MkdirAll(snapDir, 0o755)
	snap := filepath.Join(snapDir, strings.ReplaceAll(rel, "/", "_"))
	if err := os.Link(tm.bp(rel), snap); err != nil {
		t.Fatal(err)
	}
	return snap
}

type fileState struct {
	content string
	mode    uint32
	uid     uint32
	gid     uint32
	mtime   int64
	xattr   string
	nlink   uint64
}

func stateOf(t *testing.T, p string) fileState {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	x := make([]byte, 64)
	n, _ := unix.Lgetxattr(p, "user.tag", x)
	return fileState{string(b), st.Mode, st.Uid, st.Gid, st.Mtim.Sec, string(x[:max(n, 0)]), st.Nlink}
}

func TestCopyOnWrite(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	const dir = "demo.softxs.ch/hydro/"
	for _, c := range []struct {
		name   string
		change func(p string) error
		check  func(t *testing.T, live fileState)
	}{
		{"write-at-offset", func(p string) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("XY"), 2)
			return err
		}, func(t *testing.T, l fileState) {
			if l.content != "abXYefgh" || l.xattr != "snap" || l.uid != 1001 {
				t.Errorf("live %+v", l)
			}
		}},
		{"append", func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte("++"))
			return err
		}, func(t *testing.T, l fileState) {
			if l.content != "abcdefgh++" {
				t.Errorf("live %+v", l)
			}
		}},
		{"o_trunc", func(p string) error { return os.WriteFile(p, []byte("new"), 0o600) }, func(t *testing.T, l fileState) {
			if l.content != "new" || l.mode&0o777 != 0o640 || l.uid != 1001 {
				t.Errorf("live %+v", l)
			}
		}},
		{"chmod", func(p string) error { return os.Chmod(p, 0o600) }, func(t *testing.T, l fileState) {
			if l.mode&0o777 != 0o600 || l.content != "abcdefgh" {
				t.Errorf("live %+v", l)
			}
		}},
		{"chown", func(p string) error { return os.Lchown(p, 77, 88) }, func(t *testing.T, l fileState) {
			if l.uid != 77 || l.gid != 88 || l.content != "abcdefgh" {
				t.Errorf("live %+v", l)
			}
		}},
		{"touch", func(p string) error { n := time.Now(); return os.Chtimes(p, n, n) }, func(t *testing.T, l fileState) {
			if l.mtime < time.Now().Add(-time.Hour).Unix() || l.content != "abcdefgh" {
				t.Errorf("live %+v", l)
			}
		}},
		{"truncate", func(p string) error { return os.Truncate(p, 3) }, func(t *testing.T, l fileState) {
			if l.content != "abc" {
				t.Errorf("live %+v", l)
			}
		}},
		{"truncate0", func(p string) error { return os.Truncate(p, 0) }, func(t *testing.T, l fileState) {
			if l.content != "" || l.mode&0o777 != 0o640 {
				t.Errorf("live %+v", l)
			}
		}},
		{"setxattr", func(p string) error { return unix.Setxattr(p, "user.tag", []byte("live"), 0) }, func(t *testing.T, l fileState) {
			if l.xattr != "live" || l.content != "abcdefgh" {
				t.Errorf("live %+v", l)
			}
		}},
		{"removexattr", func(p string) error { return unix.Removexattr(p, "user.tag") }, func(t *testing.T, l fileState) {
			if l.xattr != "" || l.content != "abcdefgh" {
				t.Errorf("live %+v", l)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rel := dir + c.name
			snap := tm.shared(t, rel, "abcdefgh")
			before := stateOf(t, snap)
			// Read it first, so a passthrough backing file is bound to
			// the shared inode when the writer comes.
			if _, err := os.ReadFile(tm.p(rel)); err != nil {
				t.Fatal(err)
			}
			if err := c.change(tm.p(rel)); err != nil {
				t.Fatal(err)
			}
			after := stateOf(t, snap)
			before.nlink, after.nlink = 0, 0
			if before != after {
				t.Errorf("snapshot changed: %+v -> %+v", before, after)
			}
			live := stateOf(t, tm.bp(rel))
			if live.nlink != 1 {
				t.Errorf("live file still shared: nlink %d", live.nlink)
			}
			c.check(t, live)
			// And the mount shows the live file.
			if got := stateOf(t, tm.p(rel)); got.content != live.content {
				t.Errorf("mount shows %q, backing %q", got.content, live.content)
			}
		})
	}
	// No temporary file is left behind.
	es, _ := os.ReadDir(tm.bp(dir))
	for _, e := range es {
		if strings.HasPrefix(e.Name(), ".v2backup-cow") {
			t.Errorf("left over %s", e.Name())
		}
	}
}

// TestCopyOnWriteWhileReading: a reader holds a passthrough handle on the
// shared inode while a writer opens the file. The kernel binds one backing
// file per inode, so the writer cannot get the private copy through that
// inode: it fails with ETXTBSY (never writing into the snapshot's inode),
// and succeeds once the reader is gone. A metadata change meanwhile is
// fine, and later opens reach the copy.
func TestCopyOnWriteWhileReading(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	rel := "demo.softxs.ch/hydro/busy"
	snap := tm.shared(t, rel, "original")
	r, err := os.Open(tm.p(rel))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = os.OpenFile(tm.p(rel), os.O_WRONLY, 0)
	if tm.m.Passthrough() {
		wantErrno(t, "write open while a reader holds the shared file", err, syscall.ETXTBSY)
	} else if err != nil {
		t.Errorf("write open without passthrough: %v", err)
	}
	if err := unix.Chmod(tm.p(rel), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(tm.p(rel), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("CHANGED!"), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	if _, err := r.ReadAt(b, 0); err != nil || string(b) != "original" {
		t.Errorf("reader sees %q %v", b, err)
	}
	r.Close()
	if s := stateOf(t, snap); s.content != "original" || s.mode&0o777 != 0o640 {
		t.Errorf("snapshot %+v", s)
	}
	if b, _ := os.ReadFile(tm.bp(rel)); string(b) != "CHANGED!" {
		t.Errorf("live content %q", b)
	}
	w2, err := os.OpenFile(tm.p(rel), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w2.WriteAt([]byte("c"), 0); err != nil {
		t.Fatal(err)
	}
	w2.Close()
	if b, _ := os.ReadFile(tm.p(rel)); string(b) != "cHANGED!" {
		t.Errorf("live content through the mount %q", b)
	}
}

func TestSetApps(t *testing.T) {
	tm := mountT(t, "web", testApps[:1], nil)
	if _, err := os.Stat(tm.p("www.softxs.ch")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("www before reload: %v", err)
	}
	if err := os.WriteFile(tm.p("demo.softxs.ch/hydro/keep"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tm.m.SetApps([]App{testApps[1]}); err != nil {
		t.Fatal(err)
	}
	// The negative entry cached for www.softxs.ch was dropped.
	if fi, err := os.Stat(tm.p("www.softxs.ch")); err != nil || !fi.IsDir() {
		t.Errorf("www after reload: %v", err)
	}
	if _, err := os.Stat(tm.p("demo.softxs.ch/hydro/keep")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed app still visible: %v", err)
	}
	if _, err := os.Stat(tm.bp("demo.softxs.ch/hydro/keep")); err != nil {
		t.Errorf("removed app's data gone from disk: %v", err)
	}
	// A nested application added inside a listed application directory
	// shows up in the (kernel-cached) listing.
	if err := os.WriteFile(tm.p("www.softxs.ch/page"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if es, err := os.ReadDir(tm.p("www.softxs.ch")); err != nil || len(es) != 1 {
		t.Fatalf("www lists %v %v", es, err)
	}
	if err := tm.m.SetApps([]App{testApps[1], testApps[2]}); err != nil {
		t.Fatal(err)
	}
	if es, err := os.ReadDir(tm.p("www.softxs.ch")); err != nil || len(es) != 2 || es[0].Name() != "blog" {
		t.Errorf("www lists %v %v after adding blog", es, err)
	}
	if err := os.WriteFile(tm.p("www.softxs.ch/blog/post"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tm.rec.waitEvent(t, "written blog web/www.softxs.ch/blog/post")
	// A broken list leaves the routing alone.
	if err := tm.m.SetApps([]App{{Name: "a", Relpath: "/abs"}}); err == nil || !strings.Contains(err.Error(), `"/abs"`) {
		t.Errorf("bad SetApps: %v", err)
	}
	if _, err := os.Stat(tm.p("www.softxs.ch")); err != nil {
		t.Errorf("www after failed reload: %v", err)
	}
}

// roDir is a minimal Extra entry.
type roDir struct{ fs.Inode }

func TestExtraAndConfigErrors(t *testing.T) {
	tm := mountT(t, "web", testApps, func(c *Config) { c.Extra = map[string]fs.InodeEmbedder{".history": &roDir{}} })
	es, err := os.ReadDir(tm.mnt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{".history", "demo.softxs.ch", "www.softxs.ch"}) {
		t.Errorf("root lists %q", names)
	}
	if fi, err := os.Stat(tm.p(".history")); err != nil || !fi.IsDir() {
		t.Errorf(".history: %v", err)
	}
	if err := tm.m.SetApps([]App{{Name: "h", Relpath: ".history"}}); err == nil {
		t.Error("SetApps accepted a relpath colliding with an extra entry")
	}

	dir := t.TempDir()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{VM: "", LocalRoot: dir}, "invalid VM name"},
		{Config{VM: "a/b", LocalRoot: dir}, "invalid VM name"},
		{Config{VM: "web", LocalRoot: "rel"}, "must be an absolute path"},
		{Config{VM: "web", LocalRoot: dir, Apps: []App{{Name: "x", Relpath: "a/../b"}}}, `relpath "a/../b"`},
		{Config{VM: "web", LocalRoot: dir, Extra: map[string]fs.InodeEmbedder{"a/b": &roDir{}}}, "invalid extra root entry name"},
		{Config{VM: "web", LocalRoot: dir, Extra: map[string]fs.InodeEmbedder{"x": nil}}, "is nil"},
		{Config{VM: "web", LocalRoot: dir, Apps: testApps, Extra: map[string]fs.InodeEmbedder{"www.softxs.ch": &roDir{}}}, "collides"},
		{Config{VM: "web", LocalRoot: "/proc/self/nonexistent"}, "create backing directory"},
	} {
		_, err := MountVM(filepath.Join(dir, "nomnt"), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("MountVM(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
	if _, err := MountVM(filepath.Join(dir, "no-such-dir"), Config{VM: "web", LocalRoot: dir}); err == nil || !strings.Contains(err.Error(), "mount VM") {
		t.Errorf("mount on a missing directory: %v", err)
	}
	if err := RecoverStale(tm.mnt); err != nil {
		t.Errorf("RecoverStale on a healthy mount: %v", err)
	}
	if err := RecoverStale(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("RecoverStale on a missing dir: %v", err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := tm.p(fmt.Sprintf("demo.softxs.ch/hydro/w%d", w))
			if err := os.Mkdir(d, 0o755); err != nil {
				errs <- err
				return
			}
			for i := 0; i < 50; i++ {
				data := bytes.Repeat([]byte{byte(w)}, 1000+i)
				p := filepath.Join(d, fmt.Sprintf("f%d", i))
				if err := os.WriteFile(p+".tmp", data, 0o644); err != nil {
					errs <- err
					return
				}
				if err := os.Rename(p+".tmp", p); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for w := 0; w < 8; w++ {
		for i := 0; i < 50; i++ {
			b, err := os.ReadFile(tm.bp(fmt.Sprintf("demo.softxs.ch/hydro/w%d/f%d", w, i)))
			if err != nil || len(b) != 1000+i || b[0] != byte(w) {
				t.Fatalf("w%d/f%d: %d bytes, %v", w, i, len(b), err)
			}
		}
	}
}

// TestCreateOverFileMadeOnHost: a file made in the backing tree behind
// the kernel's back, after the kernel cached that the name is absent, is
// opened by an open(O_CREAT) through the mount (the kernel sends CREATE;
// the backing create finds the file). It once failed with ENOENT: the
// node made for the file is in no directory until the create returns,
// and the open resolved its path through the tree. A file shared with a
// snapshot is copied first, as by any open for writing.
func TestCreateOverFileMadeOnHost(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	for _, tc := range []struct {
		name   string
		shared bool
		flags  int
		want   string
	}{
		{"plain", false, os.O_WRONLY, "over on the host"},
		{"truncating", false, os.O_WRONLY | os.O_TRUNC, "over"},
		{"shared with a snapshot", true, os.O_WRONLY, "over on the host"},
	} {
		rel := "www.softxs.ch/late-" + strings.ReplaceAll(tc.name, " ", "-")
		if _, err := os.Lstat(tm.p(rel)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: %v before it exists", tc.name, err)
		}
		if err := os.WriteFile(tm.bp(rel), []byte("made on the host"), 0o644); err != nil {
			t.Fatal(err)
		}
		snap := ""
		if tc.shared {
			snap = filepath.Join(tm.local, "..", "snap-"+filepath.Base(rel))
			if err := os.Link(tm.bp(rel), snap); err != nil {
				t.Fatal(err)
			}
		}
		f, err := os.OpenFile(tm.p(rel), os.O_CREATE|tc.flags, 0o644)
		if err != nil {
			t.Fatalf("%s: open(O_CREAT) over a file the kernel believed absent: %v", tc.name, err)
		}
		if _, err := f.WriteString("over"); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(tm.bp(rel)); err != nil || string(b) != tc.want {
			t.Errorf("%s: backing file %q, %v; want %q", tc.name, b, err, tc.want)
		}
		if b, err := os.ReadFile(tm.p(rel)); err != nil || string(b) != tc.want {
			t.Errorf("%s: through the mount %q, %v; want %q", tc.name, b, err, tc.want)
		}
		if snap != "" {
			if b, err := os.ReadFile(snap); err != nil || string(b) != "made on the host" {
				t.Errorf("%s: the snapshot's copy became %q, %v", tc.name, b, err)
			}
		}
	}
}
