package roview

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/softxs/v2backup/fusefs/internal/prune/prunetest"
)

// TestRemoteViewPrunesInodes: a pull reads every file of the snapshot;
// past MaxFileInodes the view has the kernel forget the oldest, and a
// second pull still reads every file with its content.
func TestRemoteViewPrunesInodes(t *testing.T) {
	const max, files = 32, 300
	snapDir := t.TempDir()
	tree := map[string]string{}
	for i := range files {
		tree[fmt.Sprintf("web/demo.softxs.ch/hydro/d%d/f%03d", i%3, i)] = fmt.Sprint("content ", i)
	}
	makeSnapshot(t, snapDir, "2026-11-28T050000", tree)
	v, mnt := mountRemote(t, RemoteOptions{SnapDir: snapDir, Server: testServer, Poll: -1, MaxFileInodes: max})
	if !v.Server().KernelSettings().SupportsNotify(fuse.NOTIFY_PRUNE) {
		t.Skip("the kernel has no FUSE_NOTIFY_PRUNE (Linux 6.18)")
	}
	pull := func() {
		t.Helper()
		for name, want := range tree {
			b, err := os.ReadFile(filepath.Join(mnt, name))
			if err != nil || sha256.Sum256(b) != sha256.Sum256([]byte(want)) {
				t.Fatalf("%s: %q, %v; want %q", name, b, err, want)
			}
		}
	}
	pull()
	var live, pruned int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if live, pruned = v.FileInodes(); live <= max {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d file inodes live after reading %d (cap %d, %d pruned)", live, files, max, pruned)
		}
	}
	// How many were pruned is not checked: under memory pressure (the
	// rest of the suite running, or drop_caches) the kernel forgets files
	// on its own, before the cap is reached. The wait above fails when
	// nothing prunes; internal/prune's tests check what is asked when.
	t.Logf("%d live, %d pruned", live, pruned)
	pull()
}

// TestRemoteViewRelookupKeepsCount: walking the view again (READDIRPLUS
// of known directories, lookups of known names) reuses the nodes, so the
// count of files the kernel remembers stays at the number of files.
func TestRemoteViewRelookupKeepsCount(t *testing.T) {
	const files = 60
	snapDir := t.TempDir()
	tree := map[string]string{}
	for i := range files {
		tree[fmt.Sprintf("web/demo.softxs.ch/hydro/d%d/f%03d", i%3, i)] = fmt.Sprint("content ", i)
	}
	makeSnapshot(t, snapDir, "2026-11-28T050000", tree)
	v, mnt := mountRemote(t, RemoteOptions{SnapDir: snapDir, Server: testServer, Poll: -1, MaxFileInodes: 1000})
	walk := func() {
		seen := 0
		err := filepath.WalkDir(filepath.Join(mnt, "web"), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if _, err := os.Lstat(p); err != nil {
				return err
			}
			if d.Type().IsRegular() {
				seen++
			}
			return nil
		})
		if err != nil || seen != files {
			t.Fatalf("walk: %d files, %v", seen, err)
		}
	}
	prunetest.CheckWalks(t, walk, func() int64 { live, _ := v.FileInodes(); return live }, files)
}
