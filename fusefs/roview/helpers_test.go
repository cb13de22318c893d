package roview

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// writeTree creates files under root: a value starting with "->" makes a
// symlink to the rest, a key ending in "/" an empty directory.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// makeSnapshot builds a snapshot the way tiers/snapshot does: under a
// temporary name, renamed into place when complete, then latest updated.
func makeSnapshot(t *testing.T, snapDir, name string, files map[string]string) {
	t.Helper()
	tmp := filepath.Join(snapDir, ".building-"+name)
	writeTree(t, tmp, files)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(snapDir, name)); err != nil {
		t.Fatal(err)
	}
	latest := filepath.Join(snapDir, "latest")
	os.Remove(latest)
	if err := os.Symlink(name, latest); err != nil {
		t.Fatal(err)
	}
}

// testRoot stands in for the read-write VM mount's root: a directory
// that embeds the .history node.
type testRoot struct {
	fs.Inode
	history fs.InodeEmbedder
}

func (r *testRoot) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, r.history, fs.StableAttr{Mode: syscall.S_IFDIR})
	r.AddChild(".history", ch, false)
}

// mountNode mounts root at a new directory in-process and unmounts it when
// the test ends, lazily if it is still busy.
func mountNode(t *testing.T, root fs.InodeEmbedder) string {
	t.Helper()
	mnt := t.TempDir()
	opts := &fs.Options{MountOptions: fuse.MountOptions{
		DirectMount: true, Debug: testing.Verbose() && os.Getenv("FUSE_DEBUG") != "",
		FsName: "roview-test", Name: "v2backup-test",
	}}
	srv, err := fs.Mount(mnt, root, opts)
	if err != nil {
		t.Fatalf("mount %s: %v", mnt, err)
	}
	t.Cleanup(func() { unmountServer(t, srv, mnt) })
	return mnt
}

func unmountServer(t *testing.T, srv *fuse.Server, mnt string) {
	if err := srv.Unmount(); err != nil {
		t.Logf("unmount %s: %v; detaching", mnt, err)
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("lazy unmount %s: %v", mnt, err)
		}
	}
}

func mountHistory(t *testing.T, snapDir, vm string, relpaths func() []string) string {
	t.Helper()
	return mountNode(t, &testRoot{history: NewHistory(snapDir, vm, relpaths)})
}

func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

// eventually polls cond until it holds or a deadline passes: kernel
// caches time out on their own schedule.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// switchNow moves the view to the newest snapshot once it is idle: the
// kernel sends RELEASE in the background, after close(2) returned.
func switchNow(t *testing.T, v *RemoteView, clock *fakeClock) {
	t.Helper()
	eventually(t, "the view to switch", func() bool {
		clock.Advance(time.Hour)
		switched, err := v.Refresh()
		if err != nil {
			t.Fatal(err)
		}
		return switched
	})
}

// fakeClock is an injected clock the test moves by hand.
type fakeClock struct {
	mu  chan struct{}
	now time.Time
}

func newFakeClock() *fakeClock {
	c := &fakeClock{mu: make(chan struct{}, 1), now: time.Date(2026, 11, 28, 6, 0, 0, 0, time.UTC)}
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu <- struct{}{}
	defer func() { <-c.mu }()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu <- struct{}{}
	defer func() { <-c.mu }()
	c.now = c.now.Add(d)
}
