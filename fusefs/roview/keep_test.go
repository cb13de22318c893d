package roview

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nextSnapshot builds snapshot name as tiers/snapshot would from the
// newest one: the paths in linked are hard links to prev's files, files
// are written anew, and every directory gets the mtime it had in prev
// (or mtime, if it is new).
func nextSnapshot(t *testing.T, snapDir, prev, name string, linked []string, files map[string]string, mtime time.Time) {
	t.Helper()
	tmp := filepath.Join(snapDir, ".building-"+name)
	writeTree(t, tmp, files)
	for _, p := range linked {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(tmp, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(snapDir, prev, p), filepath.Join(tmp, p)); err != nil {
			t.Fatal(err)
		}
	}
	setDirTimes(t, tmp, filepath.Join(snapDir, prev), mtime)
	if err := os.Rename(tmp, filepath.Join(snapDir, name)); err != nil {
		t.Fatal(err)
	}
}

// setDirTimes gives every directory of root the mtime of its counterpart
// in ref, or mtime where there is none; deepest first.
func setDirTimes(t *testing.T, root, ref string, mtime time.Time) {
	t.Helper()
	var dirs []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return err
	})
	slices.Reverse(dirs)
	for _, d := range dirs {
		m := mtime
		if rel, _ := filepath.Rel(root, d); ref != "" {
			if fi, err := os.Stat(filepath.Join(ref, rel)); err == nil {
				m = fi.ModTime()
			}
		}
		if err := os.Chtimes(d, m, m); err != nil {
			t.Fatal(err)
		}
	}
}

// sameTree fails unless the view at mnt shows exactly the backing tree
// at dir (and its generated files): names, types, sizes, mtimes, modes,
// contents, link targets.
func sameTree(t *testing.T, dir, mnt string) {
	t.Helper()
	type entry struct {
		mode    fs.FileMode
		size    int64
		mtime   time.Time
		content string
	}
	read := func(root string) map[string]entry {
		m := map[string]entry{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			e := entry{mode: fi.Mode(), mtime: fi.ModTime()}
			switch {
			case fi.Mode().IsRegular():
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				e.size, e.content = fi.Size(), string(b)
			case fi.Mode()&fs.ModeSymlink != 0:
				e.content, err = os.Readlink(p)
				if err != nil {
					return err
				}
			}
			rel, _ := filepath.Rel(root, p)
			m[rel] = e
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	want, got := read(dir), read(mnt)
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s: missing from the view", p)
		} else if g != w {
			t.Errorf("%s: the view shows %+v, the snapshot has %+v", p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok && p != SumsName && p != DescName && p != CatalogName {
			t.Errorf("%s: in the view, not in the snapshot", p)
		}
	}
}

// A switch keeps what the kernel knows of paths that did not change, and
// the view then shows exactly the new snapshot: changed, gone, retyped and
// new entries included, through the kernel's caches.
func TestRemoteViewSwitchKeepsUnchanged(t *testing.T) {
	snapDir := t.TempDir()
	const a, b, c = "2026-11-27T050000", "2026-11-28T050000", "2026-11-29T050000"
	day := time.Date(2026, 11, 20, 5, 0, 0, 0, time.UTC)
	makeSnapshot(t, snapDir, a, map[string]string{
		"web/demo.softxs.ch/hydro/same.txt":    "same every day",
		"web/demo.softxs.ch/hydro/changed.txt": "day 1",
		"web/demo.softxs.ch/hydro/gone.txt":    "gone on day 2",
		"web/demo.softxs.ch/hydro/kind":        "a file on day 1, a directory on day 2",
		"web/demo.softxs.ch/hydro/sub/deep":    "its directory goes on day 2",
		"web/demo.softxs.ch/quiet/q1":          "quiet 1",
		"web/demo.softxs.ch/quiet/q2":          "quiet 2",
		"web/demo.softxs.ch/grows/g1":          "only an entry is added here",
		"web/demo.softxs.ch/chmod/c1":          "only the directory's mode changes",
		"intern/intern.softxs.ch/x":            "the whole VM goes on day 2",
	})
	setDirTimes(t, filepath.Join(snapDir, a), "", day)
	clock := newFakeClock()
	v, mnt := mountRemote(t, RemoteOptions{SnapDir: snapDir, Server: testServer, Idle: 30 * time.Second, Poll: -1, Now: clock.Now})
	pullLike(t, mnt) // the first pull: the kernel now knows every entry
	sameTree(t, filepath.Join(snapDir, a), mnt)
	// A node the kernel kept keeps its inode number; one it was made to
	// drop comes back with the new snapshot's.
	ino := func(p string) uint64 {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	kept := []string{"web/demo.softxs.ch/hydro/same.txt", "web/demo.softxs.ch/quiet/q1", "web/demo.softxs.ch/quiet/q2"}
	inos := map[string]uint64{}
	for _, p := range append(kept, "web/demo.softxs.ch/hydro/changed.txt") {
		inos[p] = ino(p)
	}

	nextSnapshot(t, snapDir, a, b,
		[]string{"web/demo.softxs.ch/hydro/same.txt", "web/demo.softxs.ch/quiet/q1", "web/demo.softxs.ch/quiet/q2",
			"web/demo.softxs.ch/grows/g1", "web/demo.softxs.ch/chmod/c1"},
		map[string]string{
			"web/demo.softxs.ch/hydro/changed.txt": "day 2, longer",
			"web/demo.softxs.ch/hydro/kind/inner":  "now inside a directory",
			"web/demo.softxs.ch/hydro/added.txt":   "new on day 2",
			"web/demo.softxs.ch/grows/g2":          "added on day 2",
			"wiki/wiki.softxs.ch/w":                "a new VM",
		}, day.Add(24*time.Hour))
	if err := os.Chmod(filepath.Join(snapDir, b, "web/demo.softxs.ch/chmod"), 0o750); err != nil {
		t.Fatal(err)
	}
	// Right after the switch, before the entries it dropped are
	// invalidated (a pull may start then), the view already shows the new
	// snapshot through what the kernel kept.
	window := func() {
		if d := readDesc(t, mnt); d.Snapshot != b || d.Files != 10 {
			t.Errorf("%s right after the switch: %+v", DescName, d)
		}
		hydro := filepath.Join(mnt, "web/demo.softxs.ch/hydro")
		if b, err := os.ReadFile(filepath.Join(hydro, "changed.txt")); err != nil || string(b) != "day 2, longer" {
			t.Errorf("changed.txt right after the switch: %q, %v", b, err)
		}
		if fi, err := os.Lstat(filepath.Join(hydro, "changed.txt")); err != nil || fi.Size() != int64(len("day 2, longer")) {
			t.Errorf("lstat changed.txt right after the switch: %v, %v", fi, err)
		}
		for _, p := range []string{"gone.txt", "sub", "kind"} {
			_, err := os.Lstat(filepath.Join(hydro, p))
			wantErrno(t, "lstat "+p+" right after the switch", err, syscall.ENOENT)
		}
		want := []string{"added.txt", "changed.txt", "kind", "same.txt"}
		if got := readDirNames(t, hydro); !slices.Equal(got, want) {
			t.Errorf("hydro right after the switch = %q, want %q", got, want)
		}
		if got := readDirNames(t, filepath.Join(mnt, "web/demo.softxs.ch/grows")); !slices.Equal(got, []string{"g1", "g2"}) {
			t.Errorf("grows right after the switch = %q", got)
		}
		if fi, err := os.Stat(filepath.Join(mnt, "web/demo.softxs.ch/chmod")); err != nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("chmod right after the switch: %v, %v", fi, err)
		}
	}
	v.afterKeep = window
	switchNow(t, v, clock)
	v.afterKeep = nil
	// Then the entries the switch dropped are gone from the kernel: a
	// lookup asks the view again.
	before := requestMap(v)
	_, err := os.Lstat(filepath.Join(mnt, "web/demo.softxs.ch/hydro/gone.txt"))
	wantErrno(t, "lstat gone.txt after the switch", err, syscall.ENOENT)
	if n := requestMap(v)["LOOKUP"] - before["LOOKUP"]; n != 1 {
		t.Errorf("lstat of a dropped entry made %d LOOKUP, want 1", n)
	}

	// What did not change is served from the kernel's caches: the same
	// nodes, no LOOKUP, and the listing of a directory that did not
	// change is not asked for. (GETATTR is not counted: the root's
	// attributes last a second, and a changed directory on the way, as
	// hydro, has its attributes asked again.)
	before = requestMap(v)
	for _, p := range kept {
		if got := ino(p); got != inos[p] {
			t.Errorf("%s: inode %d after the switch, %d before; want it kept", p, got, inos[p])
		}
	}
	if names := readDirNames(t, filepath.Join(mnt, "web/demo.softxs.ch/quiet")); !slices.Equal(names, []string{"q1", "q2"}) {
		t.Errorf("quiet = %q", names)
	}
	after := requestMap(v)
	for _, op := range []string{"LOOKUP", "READDIRPLUS", "READDIR"} {
		if after[op] != before[op] {
			t.Errorf("%d %s for entries that did not change; want none", after[op]-before[op], op)
		}
	}
	if p := "web/demo.softxs.ch/hydro/changed.txt"; ino(p) == inos[p] {
		t.Errorf("%s kept its node, though its content changed", p)
	}

	// And the view shows the new snapshot exactly.
	sameTree(t, filepath.Join(snapDir, b), mnt)
	if d := readDesc(t, mnt); d.Snapshot != b {
		t.Errorf("%s names %s, want %s", DescName, d.Snapshot, b)
	}
	sums, err := os.ReadFile(filepath.Join(mnt, SumsName))
	if err != nil || !bytes.Contains(sums, []byte("web/demo.softxs.ch/hydro/added.txt")) || bytes.Contains(sums, []byte("gone.txt")) {
		t.Errorf("%s after the switch: %s, %v", SumsName, sums, err)
	}
	for _, p := range []string{"intern", "web/demo.softxs.ch/hydro/gone.txt", "web/demo.softxs.ch/hydro/sub/deep"} {
		_, err := os.Lstat(filepath.Join(mnt, p))
		wantErrno(t, "lstat "+p+" after the switch", err, syscall.ENOENT)
	}

	// The previous snapshot is gone when the next switch comes (retention
	// ran): every directory is listed again, unchanged files still kept.
	nextSnapshot(t, snapDir, b, c,
		[]string{"web/demo.softxs.ch/hydro/same.txt", "web/demo.softxs.ch/hydro/added.txt", "web/demo.softxs.ch/quiet/q1",
			"web/demo.softxs.ch/quiet/q2", "web/demo.softxs.ch/hydro/kind/inner", "wiki/wiki.softxs.ch/w"},
		map[string]string{"web/demo.softxs.ch/hydro/changed.txt": "day 3"}, day.Add(48*time.Hour))
	if err := os.RemoveAll(filepath.Join(snapDir, b)); err != nil {
		t.Fatal(err)
	}
	switchNow(t, v, clock)
	before = requestMap(v)
	if p := kept[0]; ino(p) != inos[p] {
		t.Errorf("%s: not kept after the second switch", p)
	}
	if after := requestMap(v); after["LOOKUP"] != before["LOOKUP"] {
		t.Errorf("an unchanged file was looked up again (%d LOOKUP)", after["LOOKUP"]-before["LOOKUP"])
	}
	sameTree(t, filepath.Join(snapDir, c), mnt)
}

// Requests wait while a switch checks what the kernel may keep.
func TestRemoteViewRequestsWaitForASwitch(t *testing.T) {
	v, err := NewRemoteView(RemoteOptions{SnapDir: t.TempDir(), Server: testServer, Poll: -1, Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	v.switching = true
	v.mu.Unlock()
	entered := make(chan struct{})
	go func() {
		v.begin()
		close(entered)
		v.end()
	}()
	select {
	case <-entered:
		t.Fatal("a request went on while the view was switching")
	case <-time.After(50 * time.Millisecond):
	}
	v.mu.Lock()
	v.switching = false
	v.resumed.Broadcast()
	v.mu.Unlock()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("a request still waits after the switch")
	}
}

// Pulls and switches taking turns over many snapshots: every pull sees
// exactly the snapshot SNAPSHOT.json names, whatever the kernel kept.
func TestRemoteViewSwitchesStayExact(t *testing.T) {
	snapDir := t.TempDir()
	day := time.Date(2026, 11, 1, 5, 0, 0, 0, time.UTC)
	name := func(i int) string { return day.AddDate(0, 0, i).Format("2006-01-02T150405") }
	files := map[string]string{}
	for i := range 60 {
		files[fmt.Sprintf("web/demo.softxs.ch/app/d%d/f%02d", i%6, i)] = fmt.Sprint("day 0 file ", i)
	}
	makeSnapshot(t, snapDir, name(0), files)
	setDirTimes(t, filepath.Join(snapDir, name(0)), "", day)
	clock := newFakeClock()
	v, mnt := mountRemote(t, RemoteOptions{SnapDir: snapDir, Server: testServer, Idle: 30 * time.Second, Poll: -1, Now: clock.Now})
	r := rand.New(rand.NewPCG(5, 29))
	for i := 1; i <= 12; i++ {
		pullLike(t, mnt)
		if d := readDesc(t, mnt); d.Snapshot != name(i-1) {
			t.Fatalf("pull %d: %s names %s", i, DescName, d.Snapshot)
		}
		sameTree(t, filepath.Join(snapDir, name(i-1)), mnt)
		if t.Failed() {
			t.Fatalf("pull %d: the view is not snapshot %s", i, name(i-1))
		}
		// The next night: some files change, go or come, a directory goes
		// or comes, a file becomes a directory; the rest is linked.
		var linked []string
		changed := map[string]string{}
		for _, p := range slices.Sorted(maps.Keys(files)) {
			switch k := r.IntN(20); {
			case k == 0:
				delete(files, p)
			case k == 1:
				files[p] = fmt.Sprint("day ", i, " ", p)
				changed[p] = files[p]
			case k == 2 && i%4 == 0 && !strings.Contains(p, "now-a-dir"):
				delete(files, p)
				files[p+"/now-a-dir"] = fmt.Sprint("day ", i)
				changed[p+"/now-a-dir"] = files[p+"/now-a-dir"]
			default:
				linked = append(linked, p)
			}
		}
		if i%3 == 0 {
			for p := range files {
				if strings.HasPrefix(p, fmt.Sprintf("web/demo.softxs.ch/app/d%d/", i%6)) {
					delete(files, p)
					linked = slices.DeleteFunc(linked, func(l string) bool { return l == p })
					delete(changed, p)
				}
			}
		}
		for range 3 {
			p := fmt.Sprintf("web/demo.softxs.ch/app/n%d/f%d", r.IntN(4), r.IntN(1000))
			files[p] = fmt.Sprint("new on day ", i)
			changed[p] = files[p]
		}
		nextSnapshot(t, snapDir, name(i-1), name(i), linked, changed, day.AddDate(0, 0, i))
		if i%5 == 0 { // retention took the one shown
			if err := os.RemoveAll(filepath.Join(snapDir, name(i-1))); err != nil {
				t.Fatal(err)
			}
		}
		switchNow(t, v, clock)
	}
}

// Files of the remote view are opened in the kernel alone, so a file held
// open does not hold the view. A reader that was in the middle of a file
// when the view moved to a snapshot where the file changed must never get
// the new file's bytes: the pages it had are dropped and its next READ
// gets ESTALE. Opening the path again shows the new file; a file that did
// not change reads on as before.
func TestRemoteViewReadAcrossASwitch(t *testing.T) {
	snapDir := t.TempDir()
	const a, b = "2026-11-28T050000", "2026-11-29T050000"
	old := strings.Repeat("day 1 ", 4096) // several pages
	makeSnapshot(t, snapDir, a, map[string]string{
		"web/demo.softxs.ch/hydro/changes.bin": old,
		"web/demo.softxs.ch/hydro/same.bin":    old,
	})
	clock := newFakeClock()
	v, mnt := mountRemote(t, RemoteOptions{SnapDir: snapDir, Server: testServer, Idle: 30 * time.Second, Poll: -1, Now: clock.Now})
	open := func(name string) *os.File {
		t.Helper()
		f, err := os.Open(filepath.Join(mnt, "web/demo.softxs.ch/hydro", name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		head := make([]byte, 6)
		if _, err := io.ReadFull(f, head); err != nil || string(head) != "day 1 " {
			t.Fatalf("%s starts %q, %v", name, head, err)
		}
		return f
	}
	changes, same := open("changes.bin"), open("same.bin")

	nextSnapshot(t, snapDir, a, b, []string{"web/demo.softxs.ch/hydro/same.bin"},
		map[string]string{"web/demo.softxs.ch/hydro/changes.bin": strings.Repeat("day 2 ", 4096)}, time.Now())
	switchNow(t, v, clock) // the open files do not keep it from switching
	if v.Snapshot() != b {
		t.Fatalf("view shows %s", v.Snapshot())
	}

	_, err := io.ReadAll(changes)
	wantErrno(t, "read on in a file that changed with the switch", err, syscall.ESTALE)
	rest, err := io.ReadAll(same)
	if err != nil || string(rest) != old[6:] {
		t.Errorf("read on in a file the switch kept: %d bytes, %v; want %d", len(rest), err, len(old)-6)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "web/demo.softxs.ch/hydro/changes.bin"))
	if err != nil || !strings.HasPrefix(string(got), "day 2 ") || len(got) != len(old) {
		t.Errorf("changes.bin opened again after the switch: %.12q (%d bytes), %v", got, len(got), err)
	}
}
