package fusefs

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/fusefs/internal/prune"
	"github.com/softxs/v2backup/fusefs/internal/xattrat"
	"github.com/softxs/v2backup/fusefs/route"
)

// node is a backing entry inside an application: the application's own
// directory or anything below it. It keeps no descriptor: every operation
// resolves its path from the VM's backing directory with openat2 and
// RESOLVE_NO_SYMLINKS, so a symlink planted in the backing tree is never
// followed.
type node struct {
	fs.Inode
	fsys *filesystem
	app  string

	mu sync.Mutex
	// pt is the backing file bound to kernel passthrough for this node.
	// go-fuse registers one backing file per node and reuses it while any
	// passthrough handle is open; after a private copy replaced the file
	// that would send writes to the snapshot's inode, so a handle on a
	// different file is served without passthrough.
	pt     fileKey
	ptOpen int // passthrough handles open on pt
	// noCaps: the file was created through this node and has had no
	// extended attribute set since, so it has no security.capability.
	// The kernel asks for that attribute before the first write of every
	// file; answering from memory saves the backing lookups.
	noCaps bool
	dref   *dirRef // cached descriptor of this directory, or nil

	pe prune.Entry // the mount's pruner's bookkeeping
}

// PruneEntry is for the mount's prune.Pruner.
func (n *node) PruneEntry() *prune.Entry { return &n.pe }

type fileKey struct{ ino, gen uint64 }

func keyOf(st *unix.Statx_t) fileKey {
	return fileKey{st.Ino, uint64(st.Btime.Sec)*1e9 + uint64(st.Btime.Nsec)}
}

// newChild returns the node for name in parent, the backing entry st:
// the one parent already has when it is the same entry (a second lookup,
// or READDIRPLUS of a known directory), else a new one. NewInode always
// makes a new node; go-fuse keeps the existing one for the same identity
// only after the handler returns, so a new node made for a known entry
// would be dropped unseen, and counted by the pruner as a file the
// kernel remembers.
func newChild(ctx context.Context, parent *fs.Inode, fsys *filesystem, app, name string, st *unix.Statx_t, out *fuse.EntryOut) *fs.Inode {
	attrFromStatx(st, &out.Attr)
	id := fsys.idFromStat(st)
	in := parent.GetChild(name)
	if in == nil || in.StableAttr() != id {
		in = parent.NewInode(ctx, &node{fsys: fsys, app: app}, id)
	}
	if n, ok := in.Operations().(*node); ok {
		fsys.prune.Track(n)
	}
	return in
}

// attr reports st under n's own inode number, which stays the same when a
// private copy replaced the backing file.
func (n *node) attr(st *unix.Statx_t, out *fuse.Attr) {
	attrFromStatx(st, out)
	out.Ino = n.StableAttr().Ino
}

func (n *node) vpath() string { return n.Path(n.fsys.root.EmbeddedInode()) }

// at opens the parent directory of n: the *at calls then name n by its
// last component, with AT_SYMLINK_NOFOLLOW. Call release when done.
func (n *node) at(op string) (dirfd int, name, vpath string, release func(), errno syscall.Errno) {
	vpath = n.vpath()
	dirfd, name, release, errno = n.atPath(op, vpath)
	return dirfd, name, vpath, release, errno
}

// atPath is at for a caller that knows n's path: a node made for an entry
// found by a create is in no directory until the create returns.
func (n *node) atPath(op, vpath string) (dirfd int, name string, release func(), errno syscall.Errno) {
	if !n.fsys.live(n.app, vpath) {
		return -1, "", nil, syscall.ENOENT
	}
	dir, name := split(vpath)
	if _, parent := n.Parent(); parent != nil {
		if pn, ok := parent.Operations().(*node); ok {
			// dir is the parent's path: no second walk up the tree.
			dirfd, release, errno := pn.selfAt(op, dir)
			return dirfd, name, release, errno
		}
	}
	dirfd, err := n.fsys.openDir(dir)
	if err != nil {
		return -1, "", nil, n.fsys.toErrno(op, vpath, err)
	}
	return dirfd, name, func() { unix.Close(dirfd) }, 0
}

// dirRef is a directory descriptor cached by its node, counted so that
// a forget never closes it under a running operation.
type dirRef struct {
	fd   int
	refs int // guarded by the node's mu
}

// self returns an O_PATH descriptor of n itself, a directory. The first
// use resolves n's path from the VM's backing directory without following
// symlinks; the descriptor is then kept (it follows the directory through
// renames) until the kernel forgets the node, within a budget of
// descriptors. Call release when done.
func (n *node) self(op string) (fd int, vpath string, release func(), errno syscall.Errno) {
	vpath = n.vpath()
	fd, release, errno = n.selfAt(op, vpath)
	return fd, vpath, release, errno
}

// selfAt is self for a caller that already knows n's path.
func (n *node) selfAt(op, vpath string) (fd int, release func(), errno syscall.Errno) {
	if !n.fsys.live(n.app, vpath) {
		return -1, nil, syscall.ENOENT
	}
	n.mu.Lock()
	if r := n.dref; r != nil {
		r.refs++
		n.mu.Unlock()
		return r.fd, func() { n.unref(r) }, 0
	}
	n.mu.Unlock()
	fd, err := n.fsys.openDir(vpath)
	if err != nil {
		return -1, nil, n.fsys.toErrno(op, vpath, err)
	}
	uncached := func() { unix.Close(fd) }
	if n.fsys.dirFds.Add(1) > n.fsys.maxDirFds {
		n.fsys.dirFds.Add(-1)
		return fd, uncached, 0
	}
	// Forgotten takes go-fuse's lock, which may be held around OnForget
	// (which takes n.mu): ask before taking n.mu.
	forgotten := n.Forgotten()
	n.mu.Lock()
	if n.dref != nil || forgotten {
		n.mu.Unlock()
		n.fsys.dirFds.Add(-1)
		return fd, uncached, 0
	}
	r := &dirRef{fd: fd, refs: 2} // the cache's and the caller's
	n.dref = r
	n.mu.Unlock()
	return fd, func() { n.unref(r) }, 0
}

func (n *node) unref(r *dirRef) {
	n.mu.Lock()
	r.refs--
	last := r.refs == 0
	n.mu.Unlock()
	if last {
		unix.Close(r.fd)
		n.fsys.dirFds.Add(-1)
	}
}

// OnForget drops the cached directory descriptor. go-fuse may call it
// spuriously; the next operation then opens the directory again.
func (n *node) OnForget() {
	n.fsys.prune.Forget(n)
	n.mu.Lock()
	r := n.dref
	n.dref = nil
	n.mu.Unlock()
	if r != nil {
		n.unref(r)
	}
}

// Lookup stats a name in the backing directory.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dirfd, vpath, release, errno := n.self("lookup")
	if errno != 0 {
		return nil, errno
	}
	defer release()
	child := join(vpath, name)
	var st unix.Statx_t
	if err := statAt(dirfd, name, &st); err != nil {
		return nil, n.fsys.toErrno("lookup", child, err)
	}
	app := n.app
	if a, ok := n.fsys.table.Load().AppAt(child); ok {
		app = a
	}
	return newChild(ctx, &n.Inode, n.fsys, app, name, &st, out), 0
}

// Readdir lists the backing directory, sorted by name.
func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	vpath := n.vpath()
	if !n.fsys.live(n.app, vpath) {
		return nil, syscall.ENOENT
	}
	fd, err := n.fsys.openAt(vpath, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, n.fsys.toErrno("readdir", vpath, err)
	}
	defer unix.Close(fd)
	entries, err := readDirents(ctx, fd)
	if err != nil {
		return nil, n.fsys.toErrno("readdir", vpath, err)
	}
	sortEntries(entries)
	return fs.NewListDirStream(entries), 0
}

// readDirents reads a whole directory with getdents64, skipping "." and "..".
func readDirents(ctx context.Context, fd int) ([]fuse.DirEntry, error) {
	var entries []fuse.DirEntry
	buf := make([]byte, 32<<10)
	for {
		if ctx.Err() != nil {
			return nil, syscall.EINTR
		}
		nb, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if nb <= 0 {
			return entries, nil
		}
		for off := 0; off < nb; {
			rec := buf[off:nb]
			ino := binary.NativeEndian.Uint64(rec[0:8])
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			typ := rec[18]
			name := rec[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			off += reclen
			s := string(name)
			if s == "." || s == ".." {
				continue
			}
			entries = append(entries, fuse.DirEntry{Name: s, Ino: ino, Mode: dtToMode(typ)})
		}
	}
}

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return syscall.S_IFDIR
	case unix.DT_LNK:
		return syscall.S_IFLNK
	case unix.DT_CHR:
		return syscall.S_IFCHR
	case unix.DT_BLK:
		return syscall.S_IFBLK
	case unix.DT_FIFO:
		return syscall.S_IFIFO
	case unix.DT_SOCK:
		return syscall.S_IFSOCK
	}
	return syscall.S_IFREG
}

func sortEntries(e []fuse.DirEntry) {
	sort.Slice(e, func(i, j int) bool { return e[i].Name < e[j].Name })
}

// Getattr stats the backing entry (or the open file).
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st unix.Statx_t
	if h := asFile(f); h != nil {
		if err := statFd(h.fd, &st); err != nil {
			return n.fsys.toErrno("getattr", n.vpath(), err)
		}
		n.attr(&st, &out.Attr)
		return 0
	}
	dirfd, name, vpath, release, errno := n.at("getattr")
	if errno != 0 {
		return errno
	}
	defer release()
	if err := statAt(dirfd, name, &st); err != nil {
		return n.fsys.toErrno("getattr", vpath, err)
	}
	n.attr(&st, &out.Attr)
	return 0
}

// Setattr changes mode, owner, size and times. A file shared with a
// snapshot is first replaced by a private copy, so the snapshot keeps its
// content and metadata.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	dirfd, name, vpath, release, errno := n.at("setattr")
	if errno != 0 {
		return errno
	}
	defer release()
	var st unix.Statx_t
	if err := statAt(dirfd, name, &st); err != nil {
		return n.fsys.toErrno("setattr", vpath, err)
	}
	size, sizeOK := in.GetSize()
	copied := false
	if route.NeedsPrivateCopy(uint32(st.Mode), uint64(st.Nlink)) {
		if errno := n.privateCopy(ctx, dirfd, name, vpath, &st, !sizeOK || size > 0, false); errno != 0 {
			return errno
		}
		copied = true
	}
	if mode, ok := in.GetMode(); ok {
		if err := unix.Fchmodat(dirfd, name, mode&0o7777, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return n.fsys.toErrno("chmod", vpath, err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		if err := unix.Fchownat(dirfd, name, u, g, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return n.fsys.toErrno("chown", vpath, err)
		}
	}
	// Truncate before setting times, so an explicit mtime sticks.
	if sizeOK {
		h := asFile(f)
		var err error
		if h != nil && h.write && !copied {
			err = unix.Ftruncate(h.fd, int64(size))
		} else {
			var fd int
			fd, err = unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			if err == nil {
				err = unix.Ftruncate(fd, int64(size))
				unix.Close(fd)
			}
		}
		if err != nil {
			return n.fsys.toErrno("truncate", vpath, err)
		}
	}
	// A truncate by an unprivileged caller (FUSE_HANDLE_KILLPRIV_V2).
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 {
		if err := statAt(dirfd, name, &st); err != nil {
			return n.fsys.toErrno("setattr", vpath, err)
		}
		if privBits(uint32(st.Mode)) != 0 {
			if err := unix.Fchmodat(dirfd, name, withoutPriv(uint32(st.Mode)), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return n.fsys.toErrno("chmod", vpath, err)
			}
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if in.Valid&fuse.FATTR_ATIME != 0 {
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
			if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
				ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
			}
		}
		if in.Valid&fuse.FATTR_MTIME != 0 {
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
			if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
				ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
			}
		}
		if err := unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return n.fsys.toErrno("utimens", vpath, err)
		}
	}
	if err := statAt(dirfd, name, &st); err != nil {
		return n.fsys.toErrno("setattr", vpath, err)
	}
	n.attr(&st, &out.Attr)
	// A new size or mtime makes the catalog's row stale (rsync sets the
	// mtime after writing): record the file again, as after a write.
	if st.Mode&unix.S_IFMT == unix.S_IFREG && (sizeOK || in.Valid&fuse.FATTR_MTIME != 0) && n.fsys.live(n.app, vpath) {
		n.fsys.recordWritten(n.app, vpath)
	}
	// go-fuse leaves SETATTR replies uncacheable, so the kernel would ask
	// for these very attributes again at once (rsync and cp -a: one
	// GETATTR per chmod/utimes). They are fresh and only this daemon
	// changes the file, so they may be cached like any other reply.
	out.SetTimeout(n.fsys.ttl)
	return 0
}

// chownNew gives a new entry (name in dirfd, fd its descriptor or -1,
// st its fresh stat) to the caller, except that a set-group-ID directory
// hands down its group (the backing filesystem already did). Nothing is
// changed, nor the parent stat'ed, when the entry already has the caller's
// owner and group (a root caller, as for most copies): the group is then
// right whatever the parent's mode. changed reports whether st is stale.
func (n *node) chownNew(ctx context.Context, dirfd int, name string, fd int, st *unix.Statx_t) (changed bool, err error) {
	if !n.fsys.asRoot {
		return false, nil
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return false, nil
	}
	uid, gid := int(caller.Uid), int(caller.Gid)
	if st.Gid == caller.Gid {
		gid = -1
	} else {
		var pst unix.Statx_t
		if err := statFd(dirfd, &pst); err == nil && pst.Mode&syscall.S_ISGID != 0 {
			gid = -1
		}
	}
	if st.Uid == caller.Uid {
		uid = -1
	}
	if uid == -1 && gid == -1 {
		return false, nil
	}
	if fd >= 0 {
		return true, unix.Fchown(fd, uid, gid)
	}
	return true, unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// needsChmod: the kernel already applied the caller's umask; the daemon's
// own umask must not take more bits away, and special bits are set
// explicitly.
func (n *node) needsChmod(mode uint32) bool {
	return mode&n.fsys.umask != 0 || mode&(syscall.S_ISUID|syscall.S_ISGID|syscall.S_ISVTX) != 0
}

// Create makes a new regular file owned by the caller.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	dirfd, vpath, release, errno := n.self("create")
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer release()
	child := join(vpath, name)
	oflags := openFlags(flags) &^ unix.O_TRUNC
	fd, err := unix.Openat(dirfd, name, oflags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode&0o7777)
	if err == unix.EEXIST && flags&syscall.O_EXCL == 0 {
		// The kernel believed the name absent; open what is there the
		// way Open would (private copy included).
		var st unix.Statx_t
		if err := statAt(dirfd, name, &st); err != nil {
			return nil, nil, 0, n.fsys.toErrno("create", child, err)
		}
		ch := newChild(ctx, &n.Inode, n.fsys, n.app, name, &st, out)
		cn, ok := ch.Operations().(*node)
		if !ok {
			return nil, nil, 0, syscall.EIO
		}
		fh, ff, errno := cn.openPath(ctx, flags, child)
		return ch, fh, ff, errno
	}
	if err != nil {
		return nil, nil, 0, n.fsys.toErrno("create", child, err)
	}
	fail := func(op string, err error) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
		unix.Close(fd)
		unix.Unlinkat(dirfd, name, 0)
		return nil, nil, 0, n.fsys.toErrno(op, child, err)
	}
	var st unix.Statx_t
	if err := statFd(fd, &st); err != nil {
		return fail("create/stat", err)
	}
	stale, err := n.chownNew(ctx, dirfd, name, fd, &st)
	if err != nil {
		return fail("create/chown", err)
	}
	if n.needsChmod(mode) {
		if err := unix.Fchmod(fd, mode&0o7777); err != nil {
			return fail("create/chmod", err)
		}
		stale = true
	}
	if isWrite(flags) && dropsPriv(ctx, uint32(st.Mode)) {
		if err := dropPriv(fd, &st.Mode); err != nil {
			return fail("create/killpriv", err)
		}
	}
	if stale {
		if err := statFd(fd, &st); err != nil {
			return fail("create/stat", err)
		}
	}
	ch := newChild(ctx, &n.Inode, n.fsys, n.app, name, &st, out)
	cn, ok := ch.Operations().(*node)
	if !ok {
		unix.Close(fd)
		return nil, nil, 0, syscall.EIO
	}
	cn.mu.Lock()
	cn.noCaps = true
	cn.mu.Unlock()
	fh, ff, errno := cn.newHandle(fd, &st, true)
	if errno != 0 {
		unix.Close(fd)
	}
	return ch, fh, ff, errno
}

// openFlags keeps the open flags that make sense on the backing file.
// O_APPEND is dropped because the kernel sends explicit offsets, O_DIRECT
// because the daemon's buffers are not aligned.
func openFlags(flags uint32) int {
	const keep = unix.O_ACCMODE | unix.O_TRUNC | unix.O_NONBLOCK | unix.O_SYNC | unix.O_DSYNC | unix.O_NOATIME | unix.O_LARGEFILE
	return int(flags) & keep
}

func isWrite(flags uint32) bool {
	return int(flags)&unix.O_ACCMODE != unix.O_RDONLY || int(flags)&unix.O_TRUNC != 0
}

// Open opens the backing file. Before a file shared with a snapshot is
// opened for writing it is replaced by a private copy (an empty one when
// O_TRUNC is given), so in-place writers cannot change history.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return n.openPath(ctx, flags, n.vpath())
}

// openPath is Open for a caller that knows n's path (see atPath).
func (n *node) openPath(ctx context.Context, flags uint32, vpath string) (fs.FileHandle, uint32, syscall.Errno) {
	if !n.fsys.live(n.app, vpath) {
		return nil, 0, syscall.ENOENT
	}
	wr := isWrite(flags)
	trunc := int(flags)&unix.O_TRUNC != 0
	oflags := openFlags(flags) &^ unix.O_TRUNC
	if wr && oflags&unix.O_ACCMODE == unix.O_RDONLY {
		oflags |= unix.O_WRONLY // O_RDONLY|O_TRUNC
	}
	var st unix.Statx_t
	for attempt := 0; ; attempt++ {
		fd, err := n.fsys.openAt(vpath, oflags, 0)
		if err != nil {
			return nil, 0, n.fsys.toErrno("open", vpath, err)
		}
		if err := statFd(fd, &st); err != nil {
			unix.Close(fd)
			return nil, 0, n.fsys.toErrno("open/stat", vpath, err)
		}
		if !wr || !route.NeedsPrivateCopy(uint32(st.Mode), uint64(st.Nlink)) {
			if wr && dropsPriv(ctx, uint32(st.Mode)) {
				if err := dropPriv(fd, &st.Mode); err != nil {
					unix.Close(fd)
					return nil, 0, n.fsys.toErrno("open/killpriv", vpath, err)
				}
				n.staleAttr()
			}
			if trunc {
				if err := unix.Ftruncate(fd, 0); err != nil {
					unix.Close(fd)
					return nil, 0, n.fsys.toErrno("open/truncate", vpath, err)
				}
			}
			fh, ff, errno := n.newHandle(fd, &st, wr)
			if errno != 0 {
				unix.Close(fd)
			}
			return fh, ff, errno
		}
		unix.Close(fd)
		if n.fsys.passthrough.Load() && n.stillBusy(ctx) {
			// A reader holds the shared file in passthrough; the copy
			// could not be opened through this node until it closes.
			return nil, 0, syscall.ETXTBSY
		}
		if attempt > 0 {
			n.fsys.log.Error("fusefs: file still shared after a private copy", "vm", n.fsys.vm, "path", vpath, "nlink", st.Nlink)
			return nil, 0, syscall.EIO
		}
		dirfd, name, release, errno := n.atPath("open/copy", vpath)
		if errno != 0 {
			return nil, 0, errno
		}
		errno = n.privateCopy(ctx, dirfd, name, vpath, &st, !trunc, true)
		release()
		if errno != 0 {
			return nil, 0, errno
		}
	}
}

// newHandle wraps an open backing descriptor. FOPEN_NOFLUSH spares every
// close(2) a FLUSH round trip: data is in the backing file as soon as a
// write returns (no writeback cache) and the daemon has nothing to do at
// flush. With passthrough the kernel
// reads and writes the backing file itself. The kernel binds one backing
// file to an inode while any passthrough handle is open on it and refuses
// other opens meanwhile, and go-fuse reuses the registered backing file
// for every open of the node; so a node whose path now names another file
// (after a private copy) is served without passthrough, and cannot be
// opened at all while a passthrough handle on the old file is open.
func (n *node) newHandle(fd int, st *unix.Statx_t, wr bool) (fs.FileHandle, uint32, syscall.Errno) {
	h := &file{fd: fd, node: n, write: wr}
	if !n.fsys.passthrough.Load() {
		return h, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0
	}
	key := keyOf(st)
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.pt == (fileKey{}) || n.pt == key:
		n.pt = key
		n.ptOpen++
		return &ptFile{h}, fuse.FOPEN_NOFLUSH, 0
	case n.ptOpen > 0:
		return nil, 0, syscall.ETXTBSY
	}
	return h, fuse.FOPEN_NOFLUSH, 0
}

// busyElsewhere reports whether passthrough handles are open on a file
// other than key: a private copy could then not be opened through n.
// releaseWait bounds how long a copy-on-write open waits for passthrough
// handles that were closed but whose RELEASE has not arrived yet: the
// kernel sends RELEASE asynchronously after close(2), so a program that
// reads a file and then opens it for writing would otherwise see ETXTBSY.
const releaseWait = 2 * time.Second

// stillBusy reports whether passthrough handles stay open on the node's
// file after waiting up to releaseWait for pending releases.
func (n *node) stillBusy(ctx context.Context) bool {
	deadline := time.Now().Add(releaseWait)
	for n.busyElsewhere(fileKey{}) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

func (n *node) busyElsewhere(key fileKey) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ptOpen > 0 && n.pt != key
}

// Mkdir makes a directory owned by the caller.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dirfd, vpath, release, errno := n.self("mkdir")
	if errno != 0 {
		return nil, errno
	}
	defer release()
	child := join(vpath, name)
	if err := unix.Mkdirat(dirfd, name, mode&0o7777); err != nil {
		return nil, n.fsys.toErrno("mkdir", child, err)
	}
	fail := func(op string, err error) (*fs.Inode, syscall.Errno) {
		unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
		return nil, n.fsys.toErrno(op, child, err)
	}
	var st unix.Statx_t
	if err := statAt(dirfd, name, &st); err != nil {
		return fail("mkdir/stat", err)
	}
	if stale, err := n.chownNew(ctx, dirfd, name, -1, &st); err != nil {
		return fail("mkdir/chown", err)
	} else if stale {
		if err := statAt(dirfd, name, &st); err != nil {
			return fail("mkdir/stat", err)
		}
	}
	if n.needsChmod(mode) {
		// Keep the set-group-ID bit a set-group-ID parent handed down.
		m := mode&0o7777 | uint32(st.Mode)&syscall.S_ISGID
		if err := unix.Fchmodat(dirfd, name, m, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fail("mkdir/chmod", err)
		}
		if err := statAt(dirfd, name, &st); err != nil {
			return fail("mkdir/stat", err)
		}
	}
	return newChild(ctx, &n.Inode, n.fsys, n.app, name, &st, out), 0
}

// Mknod makes regular files only; device nodes, FIFOs and sockets are
// refused with EPERM.
func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := route.MknodCheck(mode); errno != 0 {
		n.fsys.log.Info("fusefs: refused mknod", "vm", n.fsys.vm, "app", n.app, "name", name, "mode", fmt.Sprintf("%o", mode))
		return nil, errno
	}
	ch, fh, _, errno := n.Create(ctx, name, unix.O_WRONLY|unix.O_EXCL, mode&0o7777, out)
	if errno != 0 {
		return nil, errno
	}
	if r, ok := fh.(fs.FileReleaser); ok {
		r.Release(ctx)
	}
	return ch, 0
}

// Symlink stores a symlink whose target stays inside the application
// (see route.SymlinkCheck); others are refused with EACCES.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dirfd, vpath, release, errno := n.self("symlink")
	if errno != 0 {
		return nil, errno
	}
	defer release()
	rel, _ := n.fsys.table.Load().Relpath(n.app)
	if err := route.SymlinkCheck(rel, vpath, n.fsys.backing+"/"+rel, target); err != nil {
		n.fsys.log.Info("fusefs: refused symlink", "vm", n.fsys.vm, "app", n.app, "path", join(vpath, name), "reason", err)
		return nil, syscall.EACCES
	}
	child := join(vpath, name)
	if err := unix.Symlinkat(target, dirfd, name); err != nil {
		return nil, n.fsys.toErrno("symlink", child, err)
	}
	var st unix.Statx_t
	if err := statAt(dirfd, name, &st); err != nil {
		unix.Unlinkat(dirfd, name, 0)
		return nil, n.fsys.toErrno("symlink/stat", child, err)
	}
	if stale, err := n.chownNew(ctx, dirfd, name, -1, &st); err != nil {
		unix.Unlinkat(dirfd, name, 0)
		return nil, n.fsys.toErrno("symlink/chown", child, err)
	} else if stale {
		if err := statAt(dirfd, name, &st); err != nil {
			unix.Unlinkat(dirfd, name, 0)
			return nil, n.fsys.toErrno("symlink/stat", child, err)
		}
	}
	return newChild(ctx, &n.Inode, n.fsys, n.app, name, &st, out), 0
}

// Link refuses hard links: only snapshots may share an inode with a live
// file, which is how the mount knows when to copy before a change.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.fsys.log.Info("fusefs: refused hard link", "vm", n.fsys.vm, "app", n.app, "name", name)
	return nil, syscall.EPERM
}

// Readlink reads the symlink itself; the daemon never follows it.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	dirfd, name, vpath, release, errno := n.at("readlink")
	if errno != 0 {
		return nil, errno
	}
	defer release()
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		nb, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return nil, n.fsys.toErrno("readlink", vpath, err)
		}
		if nb < size {
			return buf[:nb], 0
		}
	}
}

// Unlink removes a file or symlink.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, 0)
}

// Rmdir removes an empty directory.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, unix.AT_REMOVEDIR)
}

func (n *node) remove(name string, flags int) syscall.Errno {
	dirfd, vpath, release, errno := n.self("remove")
	if errno != 0 {
		return errno
	}
	defer release()
	child := join(vpath, name)
	if _, ok := n.fsys.table.Load().AppAt(child); ok {
		return syscall.EACCES // another application's directory
	}
	if err := unix.Unlinkat(dirfd, name, flags); err != nil {
		return n.fsys.toErrno("remove", child, err)
	}
	n.fsys.recordRemoved(n.app, child)
	return 0
}

// Rename moves an entry within its application. Between applications it
// fails with EXDEV (mv then copies and deletes, each within an
// application); out of the applications' trees, or moving an
// application's own directory, with EACCES.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		if _, synth := newParent.(*synthDir); synth {
			return syscall.EACCES
		}
		return syscall.EXDEV
	}
	if flags&unix.RENAME_WHITEOUT != 0 {
		return syscall.EINVAL
	}
	sdir, svpath, srelease, errno := n.self("rename")
	if errno != 0 {
		return errno
	}
	defer srelease()
	ddir, dvpath, drelease, errno := np.self("rename")
	if errno != 0 {
		return errno
	}
	defer drelease()
	src, dst := join(svpath, name), join(dvpath, newName)
	if v := n.fsys.table.Load().RenameCheck(src, dst); v != route.Allow {
		n.fsys.log.Info("fusefs: refused rename", "vm", n.fsys.vm, "from", src, "to", dst, "errno", syscall.Errno(v))
		return syscall.Errno(v)
	}
	if err := unix.Renameat2(sdir, name, ddir, newName, uint(flags)); err != nil {
		return n.fsys.toErrno("rename", src, err)
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		n.fsys.recordWritten(n.app, src)
		n.fsys.recordWritten(n.app, dst)
	} else {
		n.fsys.recordRenamed(n.app, src, dst)
	}
	return 0
}

// Statfs reports the backing filesystem.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return n.fsys.statfs(out)
}

func (f *filesystem) statfs(out *fuse.StatfsOut) syscall.Errno {
	var s syscall.Statfs_t
	if err := syscall.Fstatfs(f.rootFd, &s); err != nil {
		return f.toErrno("statfs", "", err)
	}
	out.FromStatfsT(&s)
	return 0
}

// Getxattr reads an extended attribute of the backing entry.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr == "security.capability" {
		n.mu.Lock()
		none := n.noCaps
		n.mu.Unlock()
		if none {
			return 0, syscall.ENODATA
		}
	}
	dirfd, name, vpath, release, errno := n.at("getxattr")
	if errno != 0 {
		return 0, errno
	}
	defer release()
	sz, err := xattrat.Get(dirfd, name, attr, dest)
	if err == unix.ERANGE {
		sz, err = xattrat.Get(dirfd, name, attr, nil)
		if err == nil {
			return uint32(sz), syscall.ERANGE
		}
	}
	if err != nil {
		return 0, n.fsys.toErrno("getxattr", vpath, err)
	}
	return uint32(sz), 0
}

// Listxattr lists the extended attributes of the backing entry.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	dirfd, name, vpath, release, errno := n.at("listxattr")
	if errno != 0 {
		return 0, errno
	}
	defer release()
	sz, err := xattrat.List(dirfd, name, dest)
	if err == unix.ERANGE {
		sz, err = xattrat.List(dirfd, name, nil)
		if err == nil {
			return uint32(sz), syscall.ERANGE
		}
	}
	if err != nil {
		return 0, n.fsys.toErrno("listxattr", vpath, err)
	}
	return uint32(sz), 0
}

// Setxattr sets an extended attribute, after a private copy if the file
// is shared with a snapshot.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.changeXattr(ctx, "setxattr", func(dirfd int, name string) error { return xattrat.Set(dirfd, name, attr, data, int(flags)) })
}

// Removexattr removes an extended attribute, after a private copy if the
// file is shared with a snapshot.
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.changeXattr(ctx, "removexattr", func(dirfd int, name string) error { return xattrat.Remove(dirfd, name, attr) })
}

func (n *node) changeXattr(ctx context.Context, op string, change func(dirfd int, name string) error) syscall.Errno {
	n.mu.Lock()
	n.noCaps = false
	n.mu.Unlock()
	dirfd, name, vpath, release, errno := n.at(op)
	if errno != 0 {
		return errno
	}
	defer release()
	var st unix.Statx_t
	if err := statAt(dirfd, name, &st); err != nil {
		return n.fsys.toErrno(op, vpath, err)
	}
	if route.NeedsPrivateCopy(uint32(st.Mode), uint64(st.Nlink)) {
		if errno := n.privateCopy(ctx, dirfd, name, vpath, &st, true, false); errno != 0 {
			return errno
		}
	}
	if err := change(dirfd, name); err != nil {
		return n.fsys.toErrno(op, vpath, err)
	}
	return 0
}
