// Package opstats counts the requests the kernel sends a FUSE mount, per
// opcode, with the time their handlers take and the errors they return. The
// VM mounts (fusefs) and the remote view (fusefs/roview) wrap their raw
// filesystems in it.
package opstats

import (
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Stats is what one kind of FUSE request cost the daemon.
type Stats struct {
	Op    string        // FUSE opcode name, e.g. "LOOKUP"
	Count uint64        // requests answered
	Time  time.Duration // total time spent in the handlers
	// Errors counts the replies with an error status, except the ones a
	// healthy filesystem gives all the time: ENOENT to LOOKUP (every
	// create and every negative lookup) and ENODATA to GETXATTR (an
	// attribute the file does not have, e.g. security.capability).
	Errors uint64
}

// opcode indexes the counters: a fixed array, so counting a request costs
// three atomic adds and no lock or map lookup, cheap enough to be always on.
type opcode int

const (
	opLookup opcode = iota
	opForget
	opGetattr
	opSetattr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opGetxattr
	opListxattr
	opSetxattr
	opRemovexattr
	opCreate
	opTmpfile
	opOpen
	opRead
	opLseek
	opGetlk
	opSetlk
	opSetlkw
	opRelease
	opWrite
	opCopyFileRange
	opIoctl
	opFlush
	opFsync
	opFallocate
	opOpendir
	opReaddir
	opReaddirplus
	opReleasedir
	opFsyncdir
	opStatfs
	opStatx
	numOps
)

// opNames are the FUSE protocol's names of the opcodes, sorted as the
// constants are, which is not alphabetically.
var opNames = [numOps]string{
	"LOOKUP",
	"FORGET",
	"GETATTR",
	"SETATTR",
	"MKNOD",
	"MKDIR",
	"UNLINK",
	"RMDIR",
	"RENAME",
	"LINK",
	"SYMLINK",
	"READLINK",
	"ACCESS",
	"GETXATTR",
	"LISTXATTR",
	"SETXATTR",
	"REMOVEXATTR",
	"CREATE",
	"TMPFILE",
	"OPEN",
	"READ",
	"LSEEK",
	"GETLK",
	"SETLK",
	"SETLKW",
	"RELEASE",
	"WRITE",
	"COPY_FILE_RANGE",
	"IOCTL",
	"FLUSH",
	"FSYNC",
	"FALLOCATE",
	"OPENDIR",
	"READDIR",
	"READDIRPLUS",
	"RELEASEDIR",
	"FSYNCDIR",
	"STATFS",
	"STATX",
}

// opCounter accumulates Stats for one opcode.
type opCounter struct {
	count  atomic.Uint64
	errors atomic.Uint64
	nanos  atomic.Int64
}

// FS counts the requests the kernel sends, the time their handlers take
// and the errors they return. The daemon keeps it on (metrics); a
// benchmark uses it to measure the daemon's side of a workload
// independently of machine load.
type FS struct {
	fuse.RawFileSystem
	ops [numOps]opCounter
}

// Wrap counts the requests answered by raw.
func Wrap(raw fuse.RawFileSystem) *FS {
	return &FS{RawFileSystem: raw}
}

// done counts one answered request of op that started at start.
func (s *FS) done(op opcode, start time.Time, st fuse.Status) {
	c := &s.ops[op]
	c.count.Add(1)
	c.nanos.Add(int64(time.Since(start)))
	if isError(op, st) {
		c.errors.Add(1)
	}
}

// isError reports whether st is an error worth counting for op.
func isError(op opcode, st fuse.Status) bool {
	switch {
	case st == fuse.OK:
		return false
	case op == opLookup && st == fuse.ENOENT:
		return false
	case op == opGetxattr && st == fuse.Status(syscall.ENODATA):
		return false
	}
	return true
}

// Snapshot returns the counters of the opcodes seen, sorted by name.
func (s *FS) Snapshot() []Stats {
	out := make([]Stats, 0, numOps)
	for op := range numOps {
		c := &s.ops[op]
		if n := c.count.Load(); n > 0 {
			out = append(out, Stats{Op: opNames[op], Count: n, Time: time.Duration(c.nanos.Load()), Errors: c.errors.Load()})
		}
	}
	slices.SortFunc(out, func(a, b Stats) int { return strings.Compare(a.Op, b.Op) })
	return out
}

func (s *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Lookup(cancel, h, name, out)
	s.done(opLookup, t, st)
	return st
}

func (s *FS) Forget(nodeid, nlookup uint64) {
	t := time.Now()
	s.RawFileSystem.Forget(nodeid, nlookup)
	s.done(opForget, t, fuse.OK)
}

func (s *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.GetAttr(cancel, in, out)
	s.done(opGetattr, t, st)
	return st
}

func (s *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.SetAttr(cancel, in, out)
	s.done(opSetattr, t, st)
	return st
}

func (s *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Mknod(cancel, in, name, out)
	s.done(opMknod, t, st)
	return st
}

func (s *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Mkdir(cancel, in, name, out)
	s.done(opMkdir, t, st)
	return st
}

func (s *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Unlink(cancel, h, name)
	s.done(opUnlink, t, st)
	return st
}

func (s *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Rmdir(cancel, h, name)
	s.done(opRmdir, t, st)
	return st
}

func (s *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Rename(cancel, in, oldName, newName)
	s.done(opRename, t, st)
	return st
}

func (s *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Link(cancel, in, name, out)
	s.done(opLink, t, st)
	return st
}

func (s *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Symlink(cancel, h, target, name, out)
	s.done(opSymlink, t, st)
	return st
}

func (s *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t := time.Now()
	v, st := s.RawFileSystem.Readlink(cancel, h)
	s.done(opReadlink, t, st)
	return v, st
}

func (s *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Access(cancel, in)
	s.done(opAccess, t, st)
	return st
}

func (s *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	v, st := s.RawFileSystem.GetXAttr(cancel, h, attr, dest)
	s.done(opGetxattr, t, st)
	return v, st
}

func (s *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	v, st := s.RawFileSystem.ListXAttr(cancel, h, dest)
	s.done(opListxattr, t, st)
	return v, st
}

func (s *FS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.SetXAttr(cancel, in, attr, data)
	s.done(opSetxattr, t, st)
	return st
}

func (s *FS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.RemoveXAttr(cancel, h, attr)
	s.done(opRemovexattr, t, st)
	return st
}

func (s *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Create(cancel, in, name, out)
	s.done(opCreate, t, st)
	return st
}

func (s *FS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Tmpfile(cancel, in, out)
	s.done(opTmpfile, t, st)
	return st
}

func (s *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Open(cancel, in, out)
	s.done(opOpen, t, st)
	return st
}

func (s *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := time.Now()
	v, st := s.RawFileSystem.Read(cancel, in, buf)
	s.done(opRead, t, st)
	return v, st
}

func (s *FS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Lseek(cancel, in, out)
	s.done(opLseek, t, st)
	return st
}

func (s *FS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.GetLk(cancel, in, out)
	s.done(opGetlk, t, st)
	return st
}

func (s *FS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.SetLk(cancel, in)
	s.done(opSetlk, t, st)
	return st
}

func (s *FS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.SetLkw(cancel, in)
	s.done(opSetlkw, t, st)
	return st
}

func (s *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	t := time.Now()
	s.RawFileSystem.Release(cancel, in)
	s.done(opRelease, t, fuse.OK)
}

func (s *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := time.Now()
	v, st := s.RawFileSystem.Write(cancel, in, data)
	s.done(opWrite, t, st)
	return v, st
}

func (s *FS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t := time.Now()
	v, st := s.RawFileSystem.Writev(cancel, in, data)
	s.done(opWrite, t, st)
	return v, st
}

func (s *FS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	t := time.Now()
	v, st := s.RawFileSystem.CopyFileRange(cancel, in)
	s.done(opCopyFileRange, t, st)
	return v, st
}

func (s *FS) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Ioctl(cancel, in, inbuf, out, outbuf)
	s.done(opIoctl, t, st)
	return st
}

func (s *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Flush(cancel, in)
	s.done(opFlush, t, st)
	return st
}

func (s *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Fsync(cancel, in)
	s.done(opFsync, t, st)
	return st
}

func (s *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Fallocate(cancel, in)
	s.done(opFallocate, t, st)
	return st
}

func (s *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.OpenDir(cancel, in, out)
	s.done(opOpendir, t, st)
	return st
}

func (s *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.ReadDir(cancel, in, out)
	s.done(opReaddir, t, st)
	return st
}

func (s *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.ReadDirPlus(cancel, in, out)
	s.done(opReaddirplus, t, st)
	return st
}

func (s *FS) ReleaseDir(in *fuse.ReleaseIn) {
	t := time.Now()
	s.RawFileSystem.ReleaseDir(in)
	s.done(opReleasedir, t, fuse.OK)
}

func (s *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.FsyncDir(cancel, in)
	s.done(opFsyncdir, t, st)
	return st
}

func (s *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.StatFs(cancel, h, out)
	s.done(opStatfs, t, st)
	return st
}

func (s *FS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Statx(cancel, in, out)
	s.done(opStatx, t, st)
	return st
}
