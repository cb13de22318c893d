package fusefs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDirectoryTimes: a directory's mtime, as set through the mount
// (rsync and tar set it last, with utimensat), is what the backing store
// holds, and what the mount shows stays what the backing store holds
// through every later change inside the directory, whether it came
// through the kernel (create, rename, unlink, mkdir, symlink) or from the
// daemon alone (a private copy of a file shared with a snapshot, which
// must not move the directory's times at all). The kernel caches
// attributes for an hour, so a stale cached mtime would show here.
func TestDirectoryTimes(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	const rel = "demo.softxs.ch/hydro/d"
	d := tm.p(rel)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2003, 4, 5, 6, 7, 8, 0, time.UTC)
	step := 0
	// set gives d a new mtime (and atime) with nanoseconds, through the
	// mount, and stats it there so the kernel caches the reply.
	set := func() unix.Timespec {
		t.Helper()
		step++
		ts := unix.NsecToTimespec(base.Add(time.Duration(step)*time.Hour + time.Duration(step)*123457*time.Nanosecond).UnixNano())
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, d, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("utimensat %s: %v", d, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil {
			t.Fatal(err)
		}
		return ts
	}
	// check compares d's mtime through the mount with the backing store's
	// and, when want is set, with want.
	check := func(what string, want *unix.Timespec) {
		t.Helper()
		var mst, bst unix.Stat_t
		if err := unix.Lstat(d, &mst); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lstat(tm.bp(rel), &bst); err != nil {
			t.Fatal(err)
		}
		if mst.Mtim != bst.Mtim {
			t.Errorf("%s: %s mtime through the mount %d.%09d, in the backing store %d.%09d",
				what, rel, mst.Mtim.Sec, mst.Mtim.Nsec, bst.Mtim.Sec, bst.Mtim.Nsec)
		}
		if want != nil && bst.Mtim != *want {
			t.Errorf("%s: %s mtime %d.%09d, want %d.%09d (as set)", what, rel, bst.Mtim.Sec, bst.Mtim.Nsec, want.Sec, want.Nsec)
		}
	}

	ts := set()
	check("after utimensat", &ts)

	set()
	if err := os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("after create", nil)

	set()
	if err := os.Rename(filepath.Join(d, "f"), filepath.Join(d, "g")); err != nil {
		t.Fatal(err)
	}
	check("after rename within", nil)

	set()
	if err := os.Rename(filepath.Join(d, "g"), tm.p("demo.softxs.ch/hydro/g")); err != nil {
		t.Fatal(err)
	}
	check("after rename out", nil)

	set()
	if err := os.Rename(tm.p("demo.softxs.ch/hydro/g"), filepath.Join(d, "f")); err != nil {
		t.Fatal(err)
	}
	check("after rename in", nil)

	set()
	if err := os.Mkdir(filepath.Join(d, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	check("after mkdir", nil)

	set()
	if err := os.Remove(filepath.Join(d, "sub")); err != nil {
		t.Fatal(err)
	}
	check("after rmdir", nil)

	set()
	if err := os.Symlink("f", filepath.Join(d, "l")); err != nil {
		t.Fatal(err)
	}
	check("after symlink", nil)

	set()
	if err := os.Remove(filepath.Join(d, "l")); err != nil {
		t.Fatal(err)
	}
	check("after unlink", nil)

	// rsync's order: temporary file, rename over the old one, then the
	// directory's times, last.
	if err := os.WriteFile(filepath.Join(d, ".f.tmp"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(d, ".f.tmp"), filepath.Join(d, "f")); err != nil {
		t.Fatal(err)
	}
	ts = set()
	check("after a replace and utimensat", &ts)

	// Writing to or changing a file a snapshot shares replaces it with a
	// private copy inside d, behind the kernel's back; d keeps its times.
	for _, c := range []struct {
		name   string
		change func(p string) error
	}{
		{"write", func(p string) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("z"), 0)
			return err
		}},
		{"chmod", func(p string) error { return os.Chmod(p, 0o600) }},
		{"touch", func(p string) error { n := time.Now(); return os.Chtimes(p, n, n) }},
	} {
		shared := filepath.Join(tm.local, "snapshot-"+c.name)
		if err := os.Link(tm.bp(rel+"/f"), shared); err != nil {
			t.Fatal(err)
		}
		ts := set()
		if err := c.change(filepath.Join(d, "f")); err != nil {
			t.Fatalf("%s of a shared file: %v", c.name, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(shared, &st); err != nil || st.Nlink != 1 {
			t.Fatalf("%s: the snapshot's link %s still shared (nlink %d, %v): no private copy made", c.name, shared, st.Nlink, err)
		}
		check("after a private copy ("+c.name+")", &ts)
	}

	// After a restart the new mount reads what is stored.
	ts = set()
	if err := tm.m.Unmount(); err != nil {
		t.Fatal(err)
	}
	m, err := MountVM(tm.mnt, Config{VM: "web", LocalRoot: tm.local, Apps: testApps, Recorder: tm.rec, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			unix.Unmount(tm.mnt, unix.MNT_DETACH)
		}
	})
	check("after a restart", &ts)
}
