package roview

import (
	"context"
	"log/slog"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// synthDirAttr fills the attributes of a directory that has no backing
// directory of its own; times and owner come from ref (a snapshot
// directory) when there is one.
func synthDirAttr(a *fuse.Attr, ref *syscall.Stat_t) {
	if ref != nil {
		a.FromStat(ref)
	}
	a.Mode = syscall.S_IFDIR | 0o555
	a.Nlink = 2
	a.Size = 0
	a.Blocks = 0
}

// symNode is a synthesized symlink whose target is computed on each
// readlink: latest, pointing at the newest snapshot.
type symNode struct {
	fs.Inode
	readOnly
	target func() (string, error)
	log    *slog.Logger
}

func (n *symNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.target()
	if err != nil {
		return nil, toErrno(n.log, "readlink latest", err)
	}
	if t == "" {
		return nil, syscall.ENOENT
	}
	return []byte(t), 0
}

func (n *symNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	t, err := n.target()
	if err != nil {
		return toErrno(n.log, "getattr latest", err)
	}
	out.Mode = syscall.S_IFLNK | 0o777
	out.Size = uint64(len(t))
	out.Nlink = 1
	out.SetTimeout(listTimeout)
	return 0
}

func (n *symNode) Access(ctx context.Context, mask uint32) syscall.Errno {
	return access(ctx, mask, syscall.S_IFLNK|0o777, 0, 0)
}

// genFile is a generated read-only file with fixed content: SHA256SUMS
// and SNAPSHOT.json of one snapshot.
type genFile struct {
	fs.Inode
	readOnly
	data  []byte
	mtime time.Time
	t     *tree // for activity accounting
}

func (n *genFile) attr(a *fuse.Attr) { fileAttr(a, int64(len(n.data)), n.mtime) }

// fileAttr fills the attributes of a read-only regular file the view makes
// up (generated or exported): mode 0444, one link, every time mtime.
func fileAttr(a *fuse.Attr, size int64, mtime time.Time) {
	a.Mode = syscall.S_IFREG | 0o444
	a.Size = uint64(size)
	a.Nlink = 1
	a.Blocks = (a.Size + 511) / 512
	sec, nsec := uint64(mtime.Unix()), uint32(mtime.Nanosecond())
	a.Mtime, a.Mtimensec = sec, nsec
	a.Ctime, a.Ctimensec = sec, nsec
	a.Atime, a.Atimensec = sec, nsec
}

func (n *genFile) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	defer n.t.enter()()
	n.attr(&out.Attr)
	out.SetTimeout(immutableTimeout)
	return 0
}

func (n *genFile) Access(ctx context.Context, mask uint32) syscall.Errno {
	return access(ctx, mask, syscall.S_IFREG|0o444, 0, 0)
}

// Open and Flush: like every file of the remote view (tree.noOpen), a
// generated file is opened and closed in the kernel alone.
func (n *genFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, viewOpen(flags)
}

func (n *genFile) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno { return syscall.ENOSYS }

func (n *genFile) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	defer n.t.enter()()
	if off >= int64(len(n.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(n.data)))
	return fuse.ReadResultData(n.data[off:end]), 0
}

// listDir is a directory handle over a fixed, sorted listing whose
// open and release the remote view counts.
type listDir struct {
	ents []fuse.DirEntry
	idx  int
	t    *tree
}

func (d *listDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.idx >= len(d.ents) {
		return nil, 0
	}
	e := d.ents[d.idx]
	d.idx++
	e.Off = uint64(d.idx)
	return &e, 0
}

func (d *listDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(len(d.ents)) {
		return syscall.EINVAL
	}
	d.idx = int(off)
	return 0
}

func (d *listDir) Releasedir(ctx context.Context, flags uint32) { d.t.released() }
