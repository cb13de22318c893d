package fusefs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/softxs/v2backup/fusefs/internal/prune/prunetest"
)

// TestPruneThroughMount writes more files than the cap through a real
// mount: the kernel is asked to forget the oldest, the daemon's count
// stays near the cap, and every file still reads back (a forgotten entry
// is looked up again).
func TestPruneThroughMount(t *testing.T) {
	const max, files = 64, 400
	tm := mountT(t, "web", testApps, func(c *Config) { c.MaxFileInodes = max })
	if !tm.m.server.KernelSettings().SupportsNotify(fuse.NOTIFY_PRUNE) {
		t.Skip("the kernel has no FUSE_NOTIFY_PRUNE (Linux 6.18)")
	}
	for d := range 4 {
		dir := tm.p(fmt.Sprintf("www.softxs.ch/d%d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range files / 4 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), []byte(fmt.Sprint(d, i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var live, pruned int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		live, pruned = tm.m.FileInodes()
		if live <= max {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d file inodes live after writing %d (cap %d, %d pruned)", live, files, max, pruned)
		}
	}
	// How many were pruned is not checked: under memory pressure (the
	// rest of the suite running, or drop_caches) the kernel forgets files
	// on its own, before the cap is reached. The wait above fails when
	// nothing prunes; internal/prune's tests check what is asked when.
	t.Logf("%d live, %d pruned", live, pruned)
	// Directories are not counted, and not dropped: four are still known.
	for d := range 4 {
		for i := range files / 4 {
			p := tm.p(fmt.Sprintf("www.softxs.ch/d%d/%d", d, i))
			b, err := os.ReadFile(p)
			if err != nil || string(b) != fmt.Sprint(d, i) {
				t.Fatalf("%s after pruning: %q, %v", p, b, err)
			}
		}
	}
}

// TestRelookupKeepsCount: looking up entries the kernel already knows
// again (READDIRPLUS of a directory whose files were just created, a
// LOOKUP after the entry was dropped) reuses their nodes. go-fuse keeps
// the existing node for a known identity only after the handler returns,
// so a new node made for it would be counted by the pruner as one more
// file the kernel remembers; the count grew by the tree on every walk,
// and the pruner then made the kernel forget the files of the walk.
func TestRelookupKeepsCount(t *testing.T) {
	tm := mountT(t, "web", testApps, func(c *Config) { c.MaxFileInodes = 1000 })
	dir := tm.p("www.softxs.ch/d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const files = 50
	for i := range files {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if live, _ := tm.m.FileInodes(); live > files {
		t.Fatalf("%d file inodes counted after creating %d", live, files)
	}
	walk := func() {
		ents, err := os.ReadDir(dir) // READDIRPLUS: a lookup of every entry
		if err != nil || len(ents) != files {
			t.Fatalf("readdir: %d entries, %v", len(ents), err)
		}
		for _, e := range ents {
			if _, err := os.Lstat(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	prunetest.CheckWalks(t, walk, func() int64 { live, _ := tm.m.FileInodes(); return live }, files)
}
