package roview

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/softxs/v2backup/fusefs/internal/prune"
	"golang.org/x/sys/unix"
)

// fileOpenFlags are the FOPEN flags of every file this package opens.
const fileOpenFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH

// Cache timeouts. Inside a snapshot nothing ever changes, so the kernel may
// keep entries and attributes for as long as it likes; the lists of
// snapshots and of a VM's applications change, so they are asked again
// often.
const (
	immutableTimeout = 24 * time.Hour
	listTimeout      = time.Second
)

// activity is told about every request and open handle of a tree; the
// remote view uses it to switch snapshots only between pulls.
type activity interface {
	begin()
	end()
	opened()
	released()
}

// tree is one snapshot's backing tree as seen through a view.
type tree struct {
	root  *snapRoot
	salt  uint64
	act   activity // nil: nobody is watching
	log   *slog.Logger
	prune *prune.Pruner // nil: no cap on the files the kernel remembers
	// noOpen: answer an OPEN of a file with ENOSYS, which tells the kernel
	// never to send OPEN (nor RELEASE) on this connection again: files are
	// opened in the kernel alone, with FOPEN_KEEP_CACHE, and read through
	// READ (roNode.Read), whose answers stay in the page cache. Nothing a
	// node shows ever changes, so a pull that reads every file saves a
	// round trip per file over OPEN with passthrough. Only for a mount
	// whose every file is a view's (the remote view): the history inside a
	// VM's read-write mount shares that mount's connection.
	noOpen bool
	// snap, if set, is the snapshot the nodes' paths are relative to; it
	// changes when the remote view switches (keep.go), and is read only
	// within a request, after enter. Empty: the paths name the snapshot.
	snap string
}

// path is rel relative to the snapshot directory.
func (t *tree) path(rel string) string {
	if t.snap == "" {
		return rel
	}
	return t.snap + "/" + rel
}

// newTree is a tree of the history: snapshot's nodes, unwatched and
// uncapped, with paths that name the snapshot.
func newTree(root *snapRoot, snapshot string, log *slog.Logger) *tree {
	return &tree{root: root, salt: snapshotSalt(snapshot), log: log}
}

func (t *tree) enter() func() {
	if t.act == nil {
		return func() {}
	}
	t.act.begin()
	return t.act.end
}

func (t *tree) opened() {
	if t.act != nil {
		t.act.opened()
	}
}

func (t *tree) released() {
	if t.act != nil {
		t.act.released()
	}
}

func (t *tree) errno(op, rel string, err error) syscall.Errno {
	return toErrno(t.log, op+" "+rel, err)
}

// newChild makes the node for a backing entry rel with attributes st. A
// node the parent already has under that name for the same backing inode
// is reused: after a switch of the remote view, it is one the kernel kept.
func (t *tree) newChild(ctx context.Context, parent *fs.Inode, rel string, st *syscall.Stat_t, out *fuse.EntryOut, entryTimeout time.Duration) *fs.Inode {
	out.Attr.FromStat(st)
	out.SetEntryTimeout(entryTimeout)
	out.SetAttrTimeout(immutableTimeout)
	if c := parent.GetChild(path.Base(rel)); c != nil {
		if n, ok := c.Operations().(*roNode); ok && n.t == t && n.rel == rel && n.reusable(st) && c.StableAttr().Mode == st.Mode&syscall.S_IFMT {
			t.prune.Track(n)
			return c
		}
	}
	// NewInode always makes a new node (go-fuse swaps in an existing one
	// of the same identity only after the handler returns): the check
	// above is what keeps a known entry from being counted twice.
	in := parent.NewInode(ctx, &roNode{t: t, rel: rel, dev: st.Dev, ino: st.Ino}, fs.StableAttr{Mode: st.Mode & syscall.S_IFMT, Ino: backingIno(st, t.salt)})
	if n, ok := in.Operations().(*roNode); ok {
		t.prune.Track(n)
	}
	return in
}

// validName rejects what the kernel never sends in a lookup; a belt to the
// braces of openat2's confinement.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// roNode is a read-only loopback node over one entry of an immutable
// snapshot tree: a file, directory, symlink or special file.
type roNode struct {
	fs.Inode
	readOnly
	t   *tree
	rel string // relative to the snapshot directory (NAME/vm/relpath/...), or to t.snap
	pe  prune.Entry
	// the backing entry the kernel was told about; a switch that keeps
	// the node moves it to the new snapshot's entry (keep.go), and so
	// does the first GETATTR of a node a switch dropped (Getattr)
	idMu     sync.Mutex
	dev, ino uint64
	dropped  bool // by a switch: its entry goes, and a lookup makes a new node
}

// same reports whether st is the backing entry the node stands for.
func (n *roNode) same(st *syscall.Stat_t) bool {
	n.idMu.Lock()
	defer n.idMu.Unlock()
	return n.dev == st.Dev && n.ino == st.Ino
}

// reusable reports whether a lookup that found st may answer with this
// node: it stands for st, and no switch dropped it (a dropped node that
// Getattr moved to the new file keeps the old snapshot's inode number).
func (n *roNode) reusable(st *syscall.Stat_t) bool {
	n.idMu.Lock()
	defer n.idMu.Unlock()
	return !n.dropped && n.dev == st.Dev && n.ino == st.Ino
}

// drop marks the node as one a switch dropped (keep.go).
func (n *roNode) drop() {
	n.idMu.Lock()
	n.dropped = true
	n.idMu.Unlock()
}

// become makes the node stand for the backing entry st.
func (n *roNode) become(st *syscall.Stat_t) {
	n.idMu.Lock()
	n.dev, n.ino = st.Dev, st.Ino
	n.idMu.Unlock()
}

// path is the node's backing entry relative to the snapshot directory.
func (n *roNode) path() string { return n.t.path(n.rel) }

// PruneEntry is for the view's prune.Pruner.
func (n *roNode) PruneEntry() *prune.Entry { return &n.pe }

// OnForget uncounts a file the kernel forgot.
func (n *roNode) OnForget() { n.t.prune.Forget(n) }

func (n *roNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer n.t.enter()()
	if !validName(name) {
		return nil, syscall.ENOENT
	}
	rel := n.rel + "/" + name
	p := n.t.path(rel)
	st, err := n.t.root.stat(p)
	if err != nil {
		return nil, n.t.errno("lookup", p, err)
	}
	return n.t.newChild(ctx, n.EmbeddedInode(), rel, &st, out, immutableTimeout), 0
}

func (n *roNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	defer n.t.enter()()
	st, err := n.t.root.stat(n.path())
	if err != nil {
		return n.t.errno("getattr", n.path(), err)
	}
	if st.Mode&syscall.S_IFMT != n.StableAttr().Mode {
		// Another type at this path since a switch (keep.go), until the
		// entry is dropped: gone, rather than an inode the kernel would
		// have to mark bad.
		return syscall.ENOENT
	}
	// A file whose entry a switch is about to drop (keep.go) shows the new
	// snapshot's file until then: the kernel asks for its attributes
	// before anyone opens it again, and reads (Read) follow from now on.
	// Pages the kernel held were dropped with the attributes.
	n.become(&st)
	out.FromStat(&st)
	out.SetTimeout(immutableTimeout)
	return 0
}

func (n *roNode) Access(ctx context.Context, mask uint32) syscall.Errno {
	defer n.t.enter()()
	st, err := n.t.root.stat(n.path())
	if err != nil {
		return n.t.errno("access", n.path(), err)
	}
	return access(ctx, mask, st.Mode, st.Uid, st.Gid)
}

// Read reads the backing file at off through the handle Open made or,
// where there is none (tree.noOpen), by opening the file beneath the
// snapshot root for each READ, checking that it is still the entry the
// kernel was told about, and reading it; the kernel keeps the pages. A
// file held open across a switch of the remote view to a snapshot where
// it changed gets ESTALE, never the other snapshot's bytes (an open after
// the switch asks Getattr first, which moves the node to the new file).
func (n *roNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if rf, ok := f.(*roFile); ok {
		return rf.Read(ctx, dest, off)
	}
	defer n.t.enter()()
	p := n.path()
	fd, err := n.t.root.open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOCTTY)
	if err != nil {
		return nil, n.t.errno("read", p, err)
	}
	defer unix.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, n.t.errno("read/stat", p, err)
	}
	if !n.same(&st) {
		n.t.log.Warn("roview: a file was read after the view moved to a snapshot where it differs", "path", p)
		return nil, syscall.ESTALE
	}
	k, err := unix.Pread(fd, dest, off)
	if err != nil {
		return nil, n.t.errno("read", p, err)
	}
	if off == 0 {
		n.t.prune.Touch(n)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *roNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	defer n.t.enter()()
	if n.t.noOpen {
		return nil, 0, viewOpen(flags)
	}
	if openForWrite(flags) {
		return nil, 0, syscall.EROFS
	}
	fd, err := n.t.root.open(n.path(), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOCTTY)
	if err != nil {
		return nil, 0, n.t.errno("open", n.path(), err)
	}
	n.t.opened()
	// KEEP_CACHE: the content never changes. go-fuse drops the flag when
	// it sets up kernel passthrough, which bypasses the page cache of this
	// mount and reads the backing file's own. NOFLUSH: nothing to flush on
	// a read-only file, and a FLUSH is a round trip on every close(2).
	return &roFile{fd: fd, t: n.t, rel: n.path(), node: n}, fileOpenFlags, 0
}

// Flush: nothing is ever written through a view. Where files are opened
// without OPEN (tree.noOpen) there is no handle to say FOPEN_NOFLUSH on,
// so ENOSYS tells the kernel to stop sending FLUSH on every close(2).
func (n *roNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	if n.t.noOpen {
		return syscall.ENOSYS
	}
	return 0
}

func (n *roNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	defer n.t.enter()()
	fd, err := n.t.root.open(n.path(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return nil, 0, n.t.errno("opendir", n.path(), err)
	}
	n.t.opened()
	return &roDir{node: n, fd: fd}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

func (n *roNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	defer n.t.enter()()
	fd, err := n.t.root.open(n.path(), unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return nil, n.t.errno("readlink", n.path(), err)
	}
	defer unix.Close(fd)
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		l, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return nil, n.t.errno("readlink", n.path(), err)
		}
		if l < size {
			return buf[:l], 0
		}
	}
}

// withProcPath runs fn on a /proc/self/fd path of the node's backing
// inode: the xattr calls have no descriptor-relative form that works on
// an O_PATH descriptor, and a path would follow symlinks.
func (n *roNode) withProcPath(op string, fn func(p string) (int, error)) (uint32, syscall.Errno) {
	if n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFLNK {
		// Through /proc the symlink would be followed.
		if op == "listxattr" {
			return 0, 0
		}
		return 0, syscall.ENODATA
	}
	fd, err := n.t.root.open(n.path(), unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return 0, n.t.errno(op, n.path(), err)
	}
	defer unix.Close(fd)
	sz, err := fn(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return uint32(max(sz, 0)), n.t.errno(op, n.path(), err)
	}
	return uint32(sz), 0
}

func (n *roNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	defer n.t.enter()()
	return n.withProcPath("getxattr", func(p string) (int, error) {
		sz, err := unix.Getxattr(p, attr, dest)
		if err == unix.ERANGE {
			// go-fuse wants the size that would fit with ERANGE
			if need, err2 := unix.Getxattr(p, attr, nil); err2 == nil {
				return need, unix.ERANGE
			}
		}
		return sz, err
	})
}

func (n *roNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	defer n.t.enter()()
	return n.withProcPath("listxattr", func(p string) (int, error) {
		sz, err := unix.Listxattr(p, dest)
		if err == unix.ERANGE {
			if need, err2 := unix.Listxattr(p, nil); err2 == nil {
				return need, unix.ERANGE
			}
		}
		return sz, err
	})
}

func (n *roNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	defer n.t.enter()()
	return statfs(n.t.root, n.t.log, out)
}

func statfs(r *snapRoot, log *slog.Logger, out *fuse.StatfsOut) syscall.Errno {
	fd, err := r.rootFd()
	if err != nil {
		return toErrno(log, "statfs", err)
	}
	var s syscall.Statfs_t
	if err := syscall.Fstatfs(fd, &s); err != nil {
		return toErrno(log, "statfs "+r.path, err)
	}
	out.FromStatfsT(&s)
	return 0
}

// roFile is an open backing file. The kernel reads it directly when FUSE
// passthrough is available; otherwise Read splices from it.
type roFile struct {
	fd   int
	t    *tree
	rel  string
	node *roNode

	mu     sync.Mutex
	closed bool
}

func (f *roFile) PassthroughFd() (int, bool) { return f.fd, true }

func (f *roFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	defer f.t.enter()()
	return fuse.ReadResultFd(uintptr(f.fd), off, len(dest)), 0
}

func (f *roFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	defer f.t.enter()()
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return f.t.errno("fstat", f.rel, err)
	}
	out.FromStat(&st)
	out.SetTimeout(immutableTimeout)
	return 0
}

func (f *roFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	defer f.t.enter()()
	n, err := unix.Seek(f.fd, int64(off), int(whence))
	if err != nil {
		return 0, f.t.errno("lseek", f.rel, err)
	}
	return uint64(n), 0
}

func (f *roFile) Flush(ctx context.Context) syscall.Errno { return 0 }

func (f *roFile) Release(ctx context.Context) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return syscall.EBADF
	}
	f.closed = true
	unix.Close(f.fd)
	f.t.prune.Touch(f.node)
	f.t.released()
	return 0
}

// roDir is an open backing directory. Entries are read on first use (with
// FOPEN_CACHE_DIR the kernel often never asks) and served sorted.
type roDir struct {
	node *roNode
	fd   int

	mu     sync.Mutex
	ents   []fuse.DirEntry
	loaded bool
	idx    int
	closed bool
}

func (d *roDir) load() syscall.Errno {
	if d.loaded {
		return 0
	}
	ents, err := readDirFd(d.fd, d.node.t.root.full(d.node.path()))
	if err != nil {
		return d.node.t.errno("readdir", d.node.path(), err)
	}
	d.ents = make([]fuse.DirEntry, len(ents))
	for i, e := range ents {
		st := syscall.Stat_t{Ino: e.ino}
		d.ents[i] = fuse.DirEntry{Name: e.name, Mode: e.mode, Ino: backingIno(&st, d.node.t.salt), Off: uint64(i + 1)}
	}
	d.loaded = true
	return 0
}

func (d *roDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	defer d.node.t.enter()()
	d.mu.Lock()
	defer d.mu.Unlock()
	if errno := d.load(); errno != 0 {
		return nil, errno
	}
	if d.idx >= len(d.ents) {
		return nil, 0
	}
	e := d.ents[d.idx]
	d.idx++
	return &e, 0
}

func (d *roDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	defer d.node.t.enter()()
	d.mu.Lock()
	defer d.mu.Unlock()
	if errno := d.load(); errno != 0 {
		return errno
	}
	if off > uint64(len(d.ents)) {
		return syscall.EINVAL
	}
	d.idx = int(off)
	return 0
}

// Lookup serves READDIRPLUS: one fstatat relative to the open directory,
// not following a symlink.
func (d *roDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer d.node.t.enter()()
	rel := d.node.rel + "/" + name
	if !validName(name) {
		return nil, syscall.ENOENT
	}
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, d.node.t.errno("lookup", d.node.t.path(rel), err)
	}
	// Both types are the kernel's struct stat, generated for this platform.
	sst := (*syscall.Stat_t)(unsafe.Pointer(&st))
	return d.node.t.newChild(ctx, d.node.EmbeddedInode(), rel, sst, out, immutableTimeout), 0
}

func (d *roDir) Releasedir(ctx context.Context, flags uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	unix.Close(d.fd)
	d.node.t.released()
}
