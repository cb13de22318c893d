package vhost

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FUSE opcodes (go-fuse keeps its constants unexported).
const (
	opLookup = 1
	opOpen   = 14
	opInit   = 26
	opCreate = 35
)

// guest speaks raw FUSE to the server's protocol handler, the way the
// vhost-user device hands it the guest's virtqueue buffers.
type guest struct {
	t      *testing.T
	s      *Server
	unique uint64
}

// raw is the in-memory layout of a FUSE struct, which is its wire format
// (go-fuse and the kernel both rely on this).
func raw[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// call sends one request (in, a struct that starts with fuse.InHeader,
// followed by name when not empty) and returns the reply's status and
// body. The body is zero-padded: a short (older minor) reply decodes too.
func call[T any](g *guest, opcode uint32, nodeID uint64, in *T, name string) (int32, []byte) {
	g.t.Helper()
	g.unique++
	req := append([]byte{}, raw(in)...)
	if name != "" {
		req = append(append(req, name...), 0)
	}
	hdr := (*fuse.InHeader)(unsafe.Pointer(&req[0]))
	*hdr = fuse.InHeader{
		Length: uint32(len(req)), Opcode: opcode, Unique: g.unique, NodeId: nodeID,
		Caller: fuse.Caller{Owner: fuse.Owner{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}},
	}

	reply := make([]byte, 64<<10)
	n, _ := g.s.ps.HandleRequest([][]byte{req}, [][]byte{reply})
	var oh fuse.OutHeader
	if n < len(raw(&oh)) {
		g.t.Fatalf("opcode %d: reply of %d bytes", opcode, n)
	}
	copy(raw(&oh), reply)
	if oh.Unique != g.unique {
		g.t.Fatalf("opcode %d: reply for request %d, want %d", opcode, oh.Unique, g.unique)
	}
	return oh.Status, reply[len(raw(&oh)):]
}

// session serves a loopback of a directory holding file "f" and runs the
// guest's INIT, offering every capability a 6.6+ guest offers.
func session(t *testing.T, pageCache bool) (*guest, fuse.InitOut) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := fs.NewLoopbackRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ServeWith(context.Background(), filepath.Join(t.TempDir(), "vm.sock"), root, Options{PageCache: pageCache}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	g := &guest{t: t, s: s}
	const initExt = 1 << 30 // FUSE_INIT_EXT: Flags2 is valid
	offered := uint64(fuse.CAP_ASYNC_READ|fuse.CAP_BIG_WRITES|fuse.CAP_MAX_PAGES|fuse.CAP_AUTO_INVAL_DATA|initExt) |
		fuse.CAP_DIRECT_IO_ALLOW_MMAP
	var out fuse.InitOut
	st, body := call(g, opInit, 0, &fuse.InitIn{Major: 7, Minor: 38, MaxReadAhead: 128 << 10,
		Flags: uint32(offered), Flags2: uint32(offered >> 32)}, "")
	if st != 0 {
		t.Fatalf("INIT: status %d", st)
	}
	copy(raw(&out), body)
	return g, out
}

func (g *guest) lookup(name string) uint64 {
	g.t.Helper()
	var e fuse.EntryOut
	st, body := call(g, opLookup, fuse.FUSE_ROOT_ID, &fuse.InHeader{}, name)
	if st != 0 {
		g.t.Fatalf("LOOKUP %s: status %d", name, st)
	}
	copy(raw(&e), body)
	return e.NodeId
}

func (g *guest) open(node uint64, flags uint32) fuse.OpenOut {
	g.t.Helper()
	var o fuse.OpenOut
	st, body := call(g, opOpen, node, &fuse.OpenIn{Flags: flags}, "")
	if st != 0 {
		g.t.Fatalf("OPEN node %d flags %#o: status %d", node, flags, st)
	}
	copy(raw(&o), body)
	return o
}

func (g *guest) create(name string) fuse.CreateOut {
	g.t.Helper()
	var o fuse.CreateOut
	st, body := call(g, opCreate, fuse.FUSE_ROOT_ID, &fuse.CreateIn{Flags: syscall.O_WRONLY | syscall.O_CREAT, Mode: 0o644}, name)
	if st != 0 {
		g.t.Fatalf("CREATE %s: status %d", name, st)
	}
	copy(raw(&o), body)
	return o
}

func TestDefaultExportIsDirectIO(t *testing.T) {
	g, init := session(t, false)
	flags := uint64(init.Flags) | uint64(init.Flags2)<<32
	if flags&fuse.CAP_DIRECT_IO_ALLOW_MMAP == 0 {
		t.Errorf("INIT reply flags %#x lack DIRECT_IO_ALLOW_MMAP (shared mmap on 6.6+ guests)", flags)
	}
	if init.MaxWrite != DefaultMaxWrite || int(init.MaxPages)*os.Getpagesize() != DefaultMaxWrite {
		t.Errorf("INIT reply: max_write %d, max_pages %d; want %d bytes both", init.MaxWrite, init.MaxPages, DefaultMaxWrite)
	}

	f := g.lookup("f")
	for _, fl := range []uint32{syscall.O_RDONLY, syscall.O_WRONLY, syscall.O_RDWR} {
		if o := g.open(f, fl); o.OpenFlags&fuse.FOPEN_DIRECT_IO == 0 || o.OpenFlags&fuse.FOPEN_KEEP_CACHE != 0 {
			t.Errorf("OPEN flags %#o: reply open flags %#x, want DIRECT_IO without KEEP_CACHE", fl, o.OpenFlags)
		}
	}
	if o := g.create("g"); o.OpenFlags&fuse.FOPEN_DIRECT_IO == 0 {
		t.Errorf("CREATE: reply open flags %#x, want DIRECT_IO", o.OpenFlags)
	}
	// A failed open is passed through untouched.
	if st, _ := call(g, opOpen, f+1000, &fuse.OpenIn{}, ""); st == 0 {
		t.Errorf("OPEN of unknown node %d succeeded", f+1000)
	}
	if st, _ := call(g, opCreate, fuse.FUSE_ROOT_ID, &fuse.CreateIn{Flags: syscall.O_WRONLY | syscall.O_CREAT | syscall.O_EXCL, Mode: 0o644}, "f"); st != -int32(syscall.EEXIST) {
		t.Errorf("CREATE O_EXCL of existing f: status %d, want %d (EEXIST)", st, -int32(syscall.EEXIST))
	}
}

func TestPageCacheExport(t *testing.T) {
	g, init := session(t, true)
	if flags := uint64(init.Flags) | uint64(init.Flags2)<<32; flags&fuse.CAP_DIRECT_IO_ALLOW_MMAP != 0 {
		t.Errorf("INIT reply flags %#x offer DIRECT_IO_ALLOW_MMAP without direct I/O", flags)
	}
	if o := g.open(g.lookup("f"), syscall.O_RDWR); o.OpenFlags&fuse.FOPEN_DIRECT_IO != 0 {
		t.Errorf("OPEN: reply open flags %#x, want no DIRECT_IO", o.OpenFlags)
	}
	if o := g.create("g"); o.OpenFlags&fuse.FOPEN_DIRECT_IO != 0 {
		t.Errorf("CREATE: reply open flags %#x, want no DIRECT_IO", o.OpenFlags)
	}
}
