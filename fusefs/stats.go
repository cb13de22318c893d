package fusefs

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// OpStats is what one kind of FUSE request cost the daemon.
type OpStats struct {
	Op    string        // FUSE opcode name, e.g. "LOOKUP"
	Count uint64        // requests answered
	Time  time.Duration // total time spent in the handlers
}

// opCounter accumulates OpStats for one opcode.
type opCounter struct {
	count atomic.Uint64
	nanos atomic.Int64
}

// statsFS counts the requests the kernel sends and the time their
// handlers take. Only used when Config.Stats is set: it measures the
// daemon's side of a workload independently of machine load.
type statsFS struct {
	fuse.RawFileSystem
	mu  sync.Mutex
	ops map[string]*opCounter
}

func newStatsFS(raw fuse.RawFileSystem) *statsFS {
	return &statsFS{RawFileSystem: raw, ops: map[string]*opCounter{}}
}

func (s *statsFS) counter(op string) *opCounter {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.ops[op]
	if c == nil {
		c = &opCounter{}
		s.ops[op] = c
	}
	return c
}

// track starts timing one request; call the result when it is answered.
func (s *statsFS) track(op string) func() {
	c := s.counter(op)
	start := time.Now()
	return func() {
		c.count.Add(1)
		c.nanos.Add(int64(time.Since(start)))
	}
}

// snapshot returns the counters sorted by opcode name.
func (s *statsFS) snapshot() []OpStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]OpStats, 0, len(s.ops))
	for op, c := range s.ops {
		if n := c.count.Load(); n > 0 {
			out = append(out, OpStats{Op: op, Count: n, Time: time.Duration(c.nanos.Load())})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Op < out[j].Op })
	return out
}

// Stats returns per-opcode request counts and handler time since the
// mount, sorted by opcode; nil unless Config.Stats was set.
func (m *Mount) Stats() []OpStats {
	if m.stats == nil {
		return nil
	}
	return m.stats.snapshot()
}

func (s *statsFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer s.track("LOOKUP")()
	return s.RawFileSystem.Lookup(cancel, h, name, out)
}

func (s *statsFS) Forget(nodeid, nlookup uint64) {
	defer s.track("FORGET")()
	s.RawFileSystem.Forget(nodeid, nlookup)
}

func (s *statsFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer s.track("GETATTR")()
	return s.RawFileSystem.GetAttr(cancel, in, out)
}

func (s *statsFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer s.track("SETATTR")()
	return s.RawFileSystem.SetAttr(cancel, in, out)
}

func (s *statsFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	defer s.track("MKNOD")()
	return s.RawFileSystem.Mknod(cancel, in, name, out)
}

func (s *statsFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer s.track("MKDIR")()
	return s.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (s *statsFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer s.track("UNLINK")()
	return s.RawFileSystem.Unlink(cancel, h, name)
}

func (s *statsFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer s.track("RMDIR")()
	return s.RawFileSystem.Rmdir(cancel, h, name)
}

func (s *statsFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	defer s.track("RENAME")()
	return s.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (s *statsFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	defer s.track("LINK")()
	return s.RawFileSystem.Link(cancel, in, name, out)
}

func (s *statsFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	defer s.track("SYMLINK")()
	return s.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (s *statsFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	defer s.track("READLINK")()
	return s.RawFileSystem.Readlink(cancel, h)
}

func (s *statsFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	defer s.track("ACCESS")()
	return s.RawFileSystem.Access(cancel, in)
}

func (s *statsFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	defer s.track("GETXATTR")()
	return s.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

func (s *statsFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	defer s.track("LISTXATTR")()
	return s.RawFileSystem.ListXAttr(cancel, h, dest)
}

func (s *statsFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	defer s.track("SETXATTR")()
	return s.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

func (s *statsFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	defer s.track("REMOVEXATTR")()
	return s.RawFileSystem.RemoveXAttr(cancel, h, attr)
}

func (s *statsFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer s.track("CREATE")()
	return s.RawFileSystem.Create(cancel, in, name, out)
}

func (s *statsFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	defer s.track("TMPFILE")()
	return s.RawFileSystem.Tmpfile(cancel, in, out)
}

func (s *statsFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer s.track("OPEN")()
	return s.RawFileSystem.Open(cancel, in, out)
}

func (s *statsFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer s.track("READ")()
	return s.RawFileSystem.Read(cancel, in, buf)
}

func (s *statsFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	defer s.track("LSEEK")()
	return s.RawFileSystem.Lseek(cancel, in, out)
}

func (s *statsFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	defer s.track("GETLK")()
	return s.RawFileSystem.GetLk(cancel, in, out)
}

func (s *statsFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	defer s.track("SETLK")()
	return s.RawFileSystem.SetLk(cancel, in)
}

func (s *statsFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	defer s.track("SETLKW")()
	return s.RawFileSystem.SetLkw(cancel, in)
}

func (s *statsFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	defer s.track("RELEASE")()
	s.RawFileSystem.Release(cancel, in)
}

func (s *statsFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer s.track("WRITE")()
	return s.RawFileSystem.Write(cancel, in, data)
}

func (s *statsFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	defer s.track("WRITE")()
	return s.RawFileSystem.Writev(cancel, in, data)
}

func (s *statsFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	defer s.track("COPY_FILE_RANGE")()
	return s.RawFileSystem.CopyFileRange(cancel, in)
}

func (s *statsFS) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	defer s.track("IOCTL")()
	return s.RawFileSystem.Ioctl(cancel, in, inbuf, out, outbuf)
}

func (s *statsFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	defer s.track("FLUSH")()
	return s.RawFileSystem.Flush(cancel, in)
}

func (s *statsFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer s.track("FSYNC")()
	return s.RawFileSystem.Fsync(cancel, in)
}

func (s *statsFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	defer s.track("FALLOCATE")()
	return s.RawFileSystem.Fallocate(cancel, in)
}

func (s *statsFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer s.track("OPENDIR")()
	return s.RawFileSystem.OpenDir(cancel, in, out)
}

func (s *statsFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer s.track("READDIR")()
	return s.RawFileSystem.ReadDir(cancel, in, out)
}

func (s *statsFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer s.track("READDIRPLUS")()
	return s.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (s *statsFS) ReleaseDir(in *fuse.ReleaseIn) {
	defer s.track("RELEASEDIR")()
	s.RawFileSystem.ReleaseDir(in)
}

func (s *statsFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	defer s.track("FSYNCDIR")()
	return s.RawFileSystem.FsyncDir(cancel, in)
}

func (s *statsFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	defer s.track("STATFS")()
	return s.RawFileSystem.StatFs(cancel, h, out)
}

func (s *statsFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	defer s.track("STATX")()
	return s.RawFileSystem.Statx(cancel, in, out)
}
