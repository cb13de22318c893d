package roview

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

var snapA = map[string]string{
	"web/demo.softxs.ch/hydro/a.txt":       "hydro a",
	"web/demo.softxs.ch/hydro/sub/b.txt":   "hydro b",
	"web/demo.softxs.ch/hydro/db/":         "",
	"web/demo.softxs.ch/other/secret.txt":  "other app of web",
	"web/wiki.softxs.ch/secret.txt":        "wiki of web, not listed",
	"intern/demo.softxs.ch/hydro/x.txt":    "intern's hydro",
	"intern/intern.softxs.ch/app/y.txt":    "intern app",
	"web/demo.softxs.ch/hydro/up":          "->../other",
	"web/demo.softxs.ch/hydro/etc":         "->/etc",
	"web/demo.softxs.ch/hydro/sub/escape":  "->../../../../intern/intern.softxs.ch/app/y.txt",
	"web/git.softxs.ch/repos/project.git/": "",
}

func TestHistoryShowsOnlyTheVMsRelpaths(t *testing.T) {
	snapDir := t.TempDir()
	makeSnapshot(t, snapDir, "2026-11-28T050000", snapA)
	mnt := mountHistory(t, snapDir, "web", func() []string {
		return []string{"demo.softxs.ch/hydro", "git.softxs.ch/repos", "bad..relpath", "new.softxs.ch/later"}
	})
	h := filepath.Join(mnt, ".history")

	if got, want := readDirNames(t, h), []string{"2026-11-28T050000", "latest"}; !slices.Equal(got, want) {
		t.Errorf(".history = %q, want %q", got, want)
	}
	snap := filepath.Join(h, "2026-11-28T050000")
	// new.softxs.ch/later did not exist at the snapshot: absent.
	if got, want := readDirNames(t, snap), []string{"demo.softxs.ch", "git.softxs.ch"}; !slices.Equal(got, want) {
		t.Errorf("snapshot = %q, want %q", got, want)
	}
	if got, want := readDirNames(t, filepath.Join(snap, "demo.softxs.ch")), []string{"hydro"}; !slices.Equal(got, want) {
		t.Errorf("demo.softxs.ch = %q, want %q", got, want)
	}
	if got, want := readDirNames(t, filepath.Join(snap, "demo.softxs.ch/hydro")), []string{"a.txt", "db", "etc", "sub", "up"}; !slices.Equal(got, want) {
		t.Errorf("hydro = %q, want %q", got, want)
	}
	if got, want := readDirNames(t, filepath.Join(snap, "git.softxs.ch/repos")), []string{"project.git"}; !slices.Equal(got, want) {
		t.Errorf("repos = %q, want %q", got, want)
	}
	b, err := os.ReadFile(filepath.Join(snap, "demo.softxs.ch/hydro/sub/b.txt"))
	if err != nil || string(b) != "hydro b" {
		t.Errorf("read b.txt = %q, %v", b, err)
	}
	for _, p := range []string{
		"demo.softxs.ch/other/secret.txt", // another app of the same VM
		"demo.softxs.ch/other",            //
		"wiki.softxs.ch",                  // a relpath not in the list
		"web", "intern",                   // VM names
		"intern.softxs.ch", // another VM's app
		"new.softxs.ch",    // not in this snapshot
		"demo.softxs.ch/hydro/../other/secret.txt", // the kernel resolves ..
		"demo.softxs.ch/hydro/up/secret.txt",       // a symlink to ../other, resolved in the mount
		"demo.softxs.ch/hydro/sub/escape",          // a symlink climbing to another VM
		"../../intern",
	} {
		_, err := os.Stat(filepath.Join(snap, p))
		wantErrno(t, "stat "+p, err, syscall.ENOENT)
	}
}

func TestHistorySymlinksAreShownNotFollowed(t *testing.T) {
	snapDir := t.TempDir()
	makeSnapshot(t, snapDir, "2026-11-28T050000", snapA)
	mnt := mountHistory(t, snapDir, "web", func() []string { return []string{"demo.softxs.ch/hydro"} })
	hydro := filepath.Join(mnt, ".history/2026-11-28T050000/demo.softxs.ch/hydro")
	for name, target := range map[string]string{"up": "../other", "etc": "/etc", "sub/escape": "../../../../intern/intern.softxs.ch/app/y.txt"} {
		fi, err := os.Lstat(filepath.Join(hydro, name))
		if err != nil {
			t.Fatalf("lstat %s: %v", name, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: mode %v, want a symlink", name, fi.Mode())
		}
		got, err := os.Readlink(filepath.Join(hydro, name))
		if err != nil || got != target {
			t.Errorf("readlink %s = %q, %v; want %q", name, got, err, target)
		}
	}
	// The server itself never resolves through a symlink of the backing
	// tree, even if asked for a path that crosses one.
	r := newSnapRoot(snapDir)
	defer r.close()
	_, err := r.stat("2026-11-28T050000/web/demo.softxs.ch/hydro/up/secret.txt")
	wantErrno(t, "stat through a symlink", err, syscall.ELOOP)
	_, err = r.stat("2026-11-28T050000/../../x")
	wantErrno(t, "stat ..", err, syscall.EXDEV)
	if errno := toErrno(discardLog(), "test", err); errno != syscall.EIO {
		t.Errorf("toErrno(EXDEV) = %v, want EIO", errno)
	}
}

func TestHistoryLatestNewAndPrunedSnapshots(t *testing.T) {
	snapDir := t.TempDir()
	mnt := mountHistory(t, snapDir+"/not-yet", "web", func() []string { return []string{"demo.softxs.ch/hydro"} })
	h := filepath.Join(mnt, ".history")
	if got := readDirNames(t, h); len(got) != 0 {
		t.Errorf("history without a snapshot directory = %q, want empty", got)
	}
	_, err := os.Readlink(filepath.Join(h, "latest"))
	wantErrno(t, "readlink latest with no snapshot", err, syscall.ENOENT)

	snapDir += "/not-yet"
	makeSnapshot(t, snapDir, "2026-11-28T050000", snapA)
	eventually(t, "the first snapshot", func() bool {
		return slices.Equal(readDirNames(t, h), []string{"2026-11-28T050000", "latest"})
	})
	// a snapshot being built is never shown
	writeTree(t, filepath.Join(snapDir, ".building-2026-11-29T050000"), map[string]string{"web/demo.softxs.ch/hydro/a.txt": "partial"})
	writeTree(t, snapDir, map[string]string{"junk/": "", "2026-11-30T050000.tmp/": ""})
	if got, want := readDirNames(t, h), []string{"2026-11-28T050000", "latest"}; !slices.Equal(got, want) {
		t.Errorf(".history while building = %q, want %q", got, want)
	}
	_, err = os.Stat(filepath.Join(h, ".building-2026-11-29T050000"))
	wantErrno(t, "stat .building", err, syscall.ENOENT)
	if got, err := os.Readlink(filepath.Join(h, "latest")); err != nil || got != "2026-11-28T050000" {
		t.Errorf("latest = %q, %v", got, err)
	}

	makeSnapshot(t, snapDir, "2026-11-29T050000", map[string]string{"web/demo.softxs.ch/hydro/a.txt": "hydro a, day 2"})
	eventually(t, "the second snapshot", func() bool {
		return slices.Equal(readDirNames(t, h), []string{"2026-11-28T050000", "2026-11-29T050000", "latest"})
	})
	eventually(t, "latest to move", func() bool {
		got, _ := os.Readlink(filepath.Join(h, "latest"))
		return got == "2026-11-29T050000"
	})
	b, err := os.ReadFile(filepath.Join(h, "latest/demo.softxs.ch/hydro/a.txt"))
	if err != nil || string(b) != "hydro a, day 2" {
		t.Errorf("latest a.txt = %q, %v", b, err)
	}
	b, err = os.ReadFile(filepath.Join(h, "2026-11-28T050000/demo.softxs.ch/hydro/a.txt"))
	if err != nil || string(b) != "hydro a" {
		t.Errorf("old a.txt = %q, %v", b, err)
	}

	// pruning: renamed away, then deleted
	if err := os.Rename(filepath.Join(snapDir, "2026-11-28T050000"), filepath.Join(snapDir, ".deleting-2026-11-28T050000")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pruned snapshot to vanish", func() bool {
		_, err := os.Stat(filepath.Join(h, "2026-11-28T050000"))
		return errorsIsENOENT(err) && slices.Equal(readDirNames(t, h), []string{"2026-11-29T050000", "latest"})
	})
}

func errorsIsENOENT(err error) bool { return isNotExist(err) }

func TestHistoryFollowsRelpathChanges(t *testing.T) {
	snapDir := t.TempDir()
	makeSnapshot(t, snapDir, "2026-11-28T050000", snapA)
	var mu sync.Mutex
	rels := []string{"demo.softxs.ch/hydro"}
	mnt := mountHistory(t, snapDir, "web", func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(rels)
	})
	snap := filepath.Join(mnt, ".history/2026-11-28T050000")
	if _, err := os.Stat(filepath.Join(snap, "demo.softxs.ch/hydro/a.txt")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	rels = []string{"wiki.softxs.ch"} // hydro moved to another VM, wiki added (SIGHUP)
	mu.Unlock()
	eventually(t, "the reload to apply", func() bool {
		_, errOld := os.Stat(filepath.Join(snap, "demo.softxs.ch/hydro/a.txt"))
		_, errNew := os.Stat(filepath.Join(snap, "wiki.softxs.ch/secret.txt"))
		return errorsIsENOENT(errOld) && errNew == nil
	})
	if got, want := readDirNames(t, snap), []string{"wiki.softxs.ch"}; !slices.Equal(got, want) {
		t.Errorf("snapshot after reload = %q, want %q", got, want)
	}
}

func TestHistoryWritesFailWithEROFS(t *testing.T) {
	snapDir := t.TempDir()
	makeSnapshot(t, snapDir, "2026-11-28T050000", snapA)
	mnt := mountHistory(t, snapDir, "web", func() []string { return []string{"demo.softxs.ch/hydro"} })
	h := filepath.Join(mnt, ".history")
	snap := filepath.Join(h, "2026-11-28T050000")
	host := filepath.Join(snap, "demo.softxs.ch")
	hydro := filepath.Join(host, "hydro")
	file := filepath.Join(hydro, "a.txt")
	latest := filepath.Join(h, "latest")

	dirs := map[string]string{".history": h, "snapshot": snap, "host": host, "app": hydro, "app/sub": filepath.Join(hydro, "sub")}
	for what, d := range dirs {
		_, err := os.Create(filepath.Join(d, "new"))
		wantErrno(t, "create in "+what, err, syscall.EROFS)
		wantErrno(t, "mkdir in "+what, os.Mkdir(filepath.Join(d, "newdir"), 0o755), syscall.EROFS)
		wantErrno(t, "symlink in "+what, os.Symlink("x", filepath.Join(d, "newlink")), syscall.EROFS)
		wantErrno(t, "mkfifo in "+what, syscall.Mkfifo(filepath.Join(d, "fifo"), 0o644), syscall.EROFS)
		wantErrno(t, "link into "+what, os.Link(file, filepath.Join(d, "hard")), syscall.EROFS)
		wantErrno(t, "chmod "+what, os.Chmod(d, 0o700), syscall.EROFS)
		wantErrno(t, "setxattr "+what, unix.Setxattr(d, "user.x", []byte("1"), 0), syscall.EROFS)
		wantErrno(t, "access W_OK "+what, unix.Access(d, unix.W_OK), syscall.EROFS)
		_, err = unix.Open(d, unix.O_TMPFILE|unix.O_RDWR, 0o644)
		if err == nil || (!isErrno(err, syscall.EROFS) && !isErrno(err, syscall.EOPNOTSUPP)) {
			t.Errorf("O_TMPFILE in %s: %v, want EROFS", what, err)
		}
	}
	for _, flags := range []int{os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND, os.O_RDWR | os.O_CREATE} {
		_, err := os.OpenFile(file, flags, 0o644)
		wantErrno(t, "open file for writing", err, syscall.EROFS)
	}
	wantErrno(t, "truncate", os.Truncate(file, 0), syscall.EROFS)
	wantErrno(t, "chmod file", os.Chmod(file, 0o600), syscall.EROFS)
	wantErrno(t, "chown file", os.Lchown(file, 1, 1), syscall.EROFS)
	wantErrno(t, "utimes file", unix.UtimesNano(file, []unix.Timespec{{Sec: 1}, {Sec: 1}}), syscall.EROFS)
	wantErrno(t, "unlink file", os.Remove(file), syscall.EROFS)
	wantErrno(t, "rmdir", syscall.Rmdir(filepath.Join(hydro, "db")), syscall.EROFS)
	wantErrno(t, "rmdir app", syscall.Rmdir(hydro), syscall.EROFS)
	wantErrno(t, "rmdir snapshot", syscall.Rmdir(snap), syscall.EROFS)
	wantErrno(t, "unlink latest", os.Remove(latest), syscall.EROFS)
	wantErrno(t, "rename file", os.Rename(file, filepath.Join(hydro, "b.txt")), syscall.EROFS)
	wantErrno(t, "rename snapshot", os.Rename(snap, filepath.Join(h, "2026-11-30T050000")), syscall.EROFS)
	wantErrno(t, "setxattr file", unix.Setxattr(file, "user.x", []byte("1"), 0), syscall.EROFS)
	wantErrno(t, "removexattr file", unix.Removexattr(file, "user.x"), syscall.EROFS)
	wantErrno(t, "lchown latest", os.Lchown(latest, 1, 1), syscall.EROFS)

	// still intact, and still readable
	if b, err := os.ReadFile(filepath.Join(snapDir, "2026-11-28T050000/web/demo.softxs.ch/hydro/a.txt")); err != nil || string(b) != "hydro a" {
		t.Errorf("backing a.txt = %q, %v", b, err)
	}
	if err := unix.Access(file, unix.R_OK); err != nil {
		t.Errorf("access R_OK: %v", err)
	}
}

func isErrno(err error, e syscall.Errno) bool { return errorsIs(err, e) }

func TestHistoryXattrStatfsAndInodes(t *testing.T) {
	snapDir := t.TempDir()
	makeSnapshot(t, snapDir, "2026-11-28T050000", snapA)
	backing := filepath.Join(snapDir, "2026-11-28T050000/web/demo.softxs.ch/hydro/a.txt")
	if err := unix.Setxattr(backing, "user.v2backup.test", []byte("value-1"), 0); err != nil {
		t.Skipf("backing filesystem has no user xattrs: %v", err)
	}
	// the second snapshot shares a.txt as a hard link, as rsnapshot does
	if err := os.MkdirAll(filepath.Join(snapDir, ".building-2026-11-29T050000/web/demo.softxs.ch/hydro"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(backing, filepath.Join(snapDir, ".building-2026-11-29T050000/web/demo.softxs.ch/hydro/a.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(snapDir, ".building-2026-11-29T050000"), filepath.Join(snapDir, "2026-11-29T050000")); err != nil {
		t.Fatal(err)
	}
	mnt := mountHistory(t, snapDir, "web", func() []string { return []string{"demo.softxs.ch/hydro"} })
	f1 := filepath.Join(mnt, ".history/2026-11-28T050000/demo.softxs.ch/hydro/a.txt")
	f2 := filepath.Join(mnt, ".history/2026-11-29T050000/demo.softxs.ch/hydro/a.txt")

	buf := make([]byte, 64)
	n, err := unix.Getxattr(f1, "user.v2backup.test", buf)
	if err != nil || string(buf[:n]) != "value-1" {
		t.Errorf("getxattr = %q, %v", buf[:max(n, 0)], err)
	}
	if n, err := unix.Getxattr(f1, "user.v2backup.test", nil); err != nil || n != 7 {
		t.Errorf("getxattr size = %d, %v; want 7", n, err)
	}
	_, err = unix.Getxattr(f1, "user.v2backup.test", make([]byte, 2))
	wantErrno(t, "getxattr into a short buffer", err, syscall.ERANGE)
	_, err = unix.Getxattr(f1, "user.absent", buf)
	wantErrno(t, "getxattr absent", err, syscall.ENODATA)
	n, err = unix.Listxattr(f1, buf)
	if err != nil || !slices.Contains(splitNul(buf[:n]), "user.v2backup.test") {
		t.Errorf("listxattr = %q, %v", buf[:max(n, 0)], err)
	}
	_, err = unix.Lgetxattr(filepath.Join(mnt, ".history/2026-11-28T050000/demo.softxs.ch/hydro/up"), "user.v2backup.test", buf)
	wantErrno(t, "lgetxattr on a symlink", err, syscall.ENODATA)

	var sfs unix.Statfs_t
	if err := unix.Statfs(f1, &sfs); err != nil || sfs.Blocks == 0 {
		t.Errorf("statfs = %+v, %v", sfs, err)
	}

	var st1, st2, st1again unix.Stat_t
	if err := unix.Stat(f1, &st1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(f2, &st2); err != nil {
		t.Fatal(err)
	}
	if st1.Ino == st2.Ino {
		t.Errorf("a hard link shared by two snapshots has one inode number %d in the view; want one per snapshot", st1.Ino)
	}
	var bst unix.Stat_t
	if err := unix.Stat(backing, &bst); err != nil {
		t.Fatal(err)
	}
	if st1.Ino == bst.Ino {
		t.Errorf("view inode %d equals the backing one; the live mount may use that", st1.Ino)
	}
	// stable across a remount
	mnt2 := mountHistory(t, snapDir, "web", func() []string { return []string{"demo.softxs.ch/hydro"} })
	if err := unix.Stat(filepath.Join(mnt2, ".history/2026-11-28T050000/demo.softxs.ch/hydro/a.txt"), &st1again); err != nil {
		t.Fatal(err)
	}
	if st1again.Ino != st1.Ino {
		t.Errorf("inode number changed across mounts: %d then %d", st1.Ino, st1again.Ino)
	}
	if st1.Size != 7 || st1.Mode&0o777 != 0o644 || st1.Mtim != bst.Mtim {
		t.Errorf("attributes differ from the backing file: %+v vs %+v", st1, bst)
	}
}

func splitNul(b []byte) []string {
	var out []string
	for _, s := range slices.Collect(func(yield func(string) bool) {
		start := 0
		for i, c := range b {
			if c == 0 {
				if !yield(string(b[start:i])) {
					return
				}
				start = i + 1
			}
		}
	}) {
		out = append(out, s)
	}
	return out
}
