package uring

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{
		"0":           {0},
		"0-1":         {0, 1},
		"0-3,8,10-11": {0, 1, 2, 3, 8, 10, 11},
		"":            nil,
		"x,2":         {2},
	} {
		if got := parseCPUList(in); !slices.Equal(got, want) {
			t.Errorf("parseCPUList(%q) = %v, want %v", in, got, want)
		}
	}
}

// needURing skips unless this test can mount, and makes the kernel offer
// FUSE over io_uring for the test's duration when it does not already.
func needURing(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("mounts")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := os.Stat(ParamPath); errors.Is(err, os.ErrNotExist) {
		t.Skip("this kernel has no FUSE over io_uring (Linux 6.14+, CONFIG_FUSE_IO_URING)")
	}
	restore, err := Enable()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restore)
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func mountOpts() *fuse.MountOptions {
	return &fuse.MountOptions{
		DirectMount: true,
		MaxWrite:    1 << 20,
		FsName:      "uringtest",
		Name:        "uringtest",
	}
}

func mountLoopback(t *testing.T, noURing bool) (backing, mnt string, c *Conn) {
	t.Helper()
	dir := t.TempDir()
	backing, mnt = filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		t.Fatal(err)
	}
	raw := fs.NewNodeFS(root, &fs.Options{})
	c, err = NewServer(raw, mnt, mountOpts(), noURing, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return backing, mnt, c
}

// TestLoopbackThroughRings copies a tree in and out of a loopback mount
// served through io_uring, with the tools a user would use, and checks
// every request went through the rings.
func TestLoopbackThroughRings(t *testing.T) {
	needURing(t)
	backing, mnt, c := mountLoopback(t, false)
	if c.Transport() != TransportURing {
		t.Fatalf("transport %q, want %q", c.Transport(), TransportURing)
	}
	// PerQueue threads for each online CPU (CPU 0 at least), one for
	// each other possible CPU.
	if q, n := c.rings.Queues(); q < 1 || n < q+PerQueue-1 || n > q*PerQueue {
		t.Fatalf("%d queues, %d threads", q, n)
	}
	before := c.RingRequests()

	src := t.TempDir()
	for i := range 50 {
		d := filepath.Join(src, "d"+string(rune('a'+i%5)))
		os.MkdirAll(d, 0o750)
		b := make([]byte, 100*i)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(d, "f"+string(rune('a'+i%26))+string(rune('0'+i/26))), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("da/fa0", filepath.Join(src, "link"))
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run("rsync", "-a", src+"/", filepath.Join(mnt, "copy")+"/")
	run("diff", "-r", "--no-dereference", src, filepath.Join(backing, "copy"))
	run("cp", "-a", filepath.Join(mnt, "copy"), filepath.Join(t.TempDir(), "back"))
	run("diff", "-r", "--no-dereference", src, filepath.Join(mnt, "copy"))
	if err := os.Rename(filepath.Join(mnt, "copy/da"), filepath.Join(mnt, "copy/renamed")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(mnt, "copy")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(backing, "copy")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("removed through the mount, still in the backing dir: %v", err)
	}
	if got := c.RingRequests() - before; got < 500 {
		t.Fatalf("%d requests through the rings, want hundreds", got)
	}
}

// TestLargeReadsAndWrites moves 1 MiB requests through the payload
// buffers (an in-memory file: no passthrough).
func TestLargeReadsAndWrites(t *testing.T) {
	needURing(t)
	mnt := t.TempDir()
	file := &fs.MemRegularFile{Attr: fuse.Attr{Mode: 0o644}}
	root := &fs.Inode{}
	raw := fs.NewNodeFS(root, &fs.Options{OnAdd: func(ctx context.Context) {
		root.AddChild("data", root.NewPersistentInode(ctx, file, fs.StableAttr{}), false)
	}})
	c, err := NewServer(raw, mnt, mountOpts(), false, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Unmount() })
	if c.Transport() != TransportURing {
		t.Fatalf("transport %q", c.Transport())
	}
	before := c.RingRequests()
	want := make([]byte, 5<<20+123)
	rand.Read(want)
	f, err := os.OpenFile(filepath.Join(mnt, "data"), os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	// O_DIRECT: each write(2) of 1 MiB is one WRITE request.
	for off := 0; off < len(want); off += 1 << 20 {
		if _, err := f.Write(want[off:min(off+1<<20, len(want))]); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	got, err := os.ReadFile(filepath.Join(mnt, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, differs from the %d written", len(got), len(want))
	}
	// 6 WRITEs and at least 6 READs of up to 1 MiB.
	if n := c.RingRequests() - before; n < 12 {
		t.Fatalf("%d requests through the rings, want at least 12", n)
	}
}

// TestNoURing: asked not to, the connection is served through /dev/fuse
// even where the kernel offers io_uring.
func TestNoURing(t *testing.T) {
	needURing(t)
	_, mnt, c := mountLoopback(t, true)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c.Transport() != TransportDev || c.RingRequests() != 0 {
		t.Fatalf("transport %q with %d ring requests, want %q and none", c.Transport(), c.RingRequests(), TransportDev)
	}
}

// TestStartFailureFallsBack: once INIT has accepted io_uring the kernel
// holds every request until the rings are ready; when Start fails before
// registering, it must make the kernel fall back to /dev/fuse instead of
// leaving the mount hanging.
func TestStartFailureFallsBack(t *testing.T) {
	needURing(t)
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	os.Mkdir(backing, 0o755)
	os.Mkdir(mnt, 0o755)
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		t.Fatal(err)
	}
	raw := fs.NewNodeFS(root, &fs.Options{})
	rings, err := Prepare(PerQueue, 1<<20, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	o := mountOpts()
	o.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
	fd, err := Mount(mnt, o)
	if err != nil {
		t.Fatal(err)
	}
	o.DirectMount = false
	srv, err := fuse.NewServer(raw, DevPath(fd), o)
	if err != nil {
		unix.Unmount(mnt, unix.MNT_DETACH)
		t.Fatal(err)
	}
	c := &Conn{Server: srv, mountpoint: mnt, own: true}
	t.Cleanup(func() { c.Unmount() })
	if srv.KernelSettings().Flags64()&fuse.CAP_OVER_IO_URING == 0 {
		t.Fatal("the kernel did not offer io_uring")
	}
	bad := *srv.KernelSettings()
	bad.Major = 1 // go-fuse refuses this INIT
	err = rings.Start(fd, raw, o, &bad)
	if err == nil || !strings.Contains(err.Error(), "INIT") {
		t.Fatalf("Start with a bad INIT: %v, want an INIT error", err)
	}
	go srv.Serve()
	if err := pollHack(mnt); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("served"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(backing, "f")); err != nil || string(b) != "served" {
		t.Fatalf("backing file: %q, %v", b, err)
	}
	if n := rings.Requests(); n != 0 {
		t.Fatalf("%d requests through rings that never registered", n)
	}
	rings.Wait() // every thread ended
}

// TestPrepareClose: threads prepared for a mount that never happened end
// on Close.
func TestPrepareClose(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("io_uring may be restricted to root")
	}
	rings, err := Prepare(2, 1<<20, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	q, n := rings.Queues()
	if q < 1 || n < q+1 || n > 2*q {
		t.Fatalf("%d queues, %d threads", q, n)
	}
	rings.Close()
	rings.Wait()
}

// TestThreadBudget: a connection whose threads would take the process
// over MaxThreads is refused before any thread starts, and its mount is
// served through /dev/fuse; the threads of a connection give their share
// back when they end.
func TestThreadBudget(t *testing.T) {
	needURing(t)
	before := threads.Load()
	saved := MaxThreads
	t.Cleanup(func() { MaxThreads = saved })
	MaxThreads = before + 1 // less than any connection needs (two per online CPU)

	if rings, err := Prepare(PerQueue, 1<<20, quietLogger()); err == nil || !strings.Contains(err.Error(), "MaxThreads") {
		if rings != nil {
			rings.Close()
			rings.Wait()
		}
		t.Fatalf("Prepare over the budget: %v, want an error naming MaxThreads", err)
	}
	if n := threads.Load(); n != before {
		t.Fatalf("a refused Prepare left %d threads counted, want %d", n, before)
	}
	_, mnt, c := mountLoopback(t, false)
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c.Transport() != TransportDev {
		t.Fatalf("transport %q over the budget, want %q", c.Transport(), TransportDev)
	}

	MaxThreads = saved
	rings, err := Prepare(PerQueue, 1<<20, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	_, n := rings.Queues()
	if got := threads.Load(); got != before+int64(n) {
		t.Fatalf("%d threads counted with %d prepared, want %d", got, n, before+int64(n))
	}
	rings.Close()
	rings.Wait()
	if got := threads.Load(); got != before {
		t.Fatalf("%d threads counted after they ended, want %d", got, before)
	}
}

// TestABISizes: the structures shared with the kernel have the sizes of
// linux/io_uring.h and linux/fuse.h.
func TestABISizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"io_uring_sqe (SQE128)", unsafe.Sizeof(sqe{}), sqeSize},
		{"io_uring_cqe", unsafe.Sizeof(cqe{}), cqeSize},
		{"io_uring_params", unsafe.Sizeof(params{}), 120},
		{"fuse_in_header", uintptr(inHeaderSize), 40},
		{"fuse_out_header", uintptr(outHeaderSize), 16},
		{"fuse_uring_req_header", headerSize, 288},
		{"sqe.cmd offset", unsafe.Offsetof(sqe{}.cmd), 48},
		{"sqe.userData offset", unsafe.Offsetof(sqe{}.userData), 32},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, c.got, c.want)
		}
	}
}
