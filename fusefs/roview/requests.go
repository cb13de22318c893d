package roview

import (
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// RequestCount is how many requests of one FUSE opcode a mount answered
// and the time its handlers took (not the kernel's round trip).
type RequestCount struct {
	Op    string // the protocol's name, e.g. "OPEN"
	Count uint64
	Time  time.Duration
}

// countedOps are the opcodes a read-only view is sent in practice, in the
// order reported. Mutating requests never reach it: the mount is MS_RDONLY.
var countedOps = [numCounted]string{
	"LOOKUP", "FORGET", "GETATTR", "ACCESS", "READLINK", "GETXATTR", "LISTXATTR",
	"OPEN", "READ", "LSEEK", "FLUSH", "RELEASE",
	"OPENDIR", "READDIR", "READDIRPLUS", "RELEASEDIR", "STATFS", "STATX",
}

const (
	cLookup = iota
	cForget
	cGetattr
	cAccess
	cReadlink
	cGetxattr
	cListxattr
	cOpen
	cRead
	cLseek
	cFlush
	cRelease
	cOpendir
	cReaddir
	cReaddirplus
	cReleasedir
	cStatfs
	cStatx
	numCounted
)

// requestCounter counts the requests the kernel sends a mount, so the cost
// of a workload can be told in round trips independently of machine load.
// Two atomic adds and a clock read per request: cheap enough to be always
// on.
type requestCounter struct {
	fuse.RawFileSystem
	n     [numCounted]atomic.Uint64
	nanos [numCounted]atomic.Int64
}

// done counts a request of op that started at start.
func (c *requestCounter) done(op int, start time.Time) {
	c.n[op].Add(1)
	c.nanos[op].Add(int64(time.Since(start)))
}

func newRequestCounter(raw fuse.RawFileSystem) *requestCounter {
	return &requestCounter{RawFileSystem: raw}
}

// counts returns the opcodes seen so far with their counts and times.
func (c *requestCounter) counts() []RequestCount {
	var out []RequestCount
	for i := range c.n {
		if n := c.n[i].Load(); n > 0 {
			out = append(out, RequestCount{Op: countedOps[i], Count: n, Time: time.Duration(c.nanos[i].Load())})
		}
	}
	return out
}

func (c *requestCounter) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer c.done(cLookup, time.Now())
	return c.RawFileSystem.Lookup(cancel, h, name, out)
}

func (c *requestCounter) Forget(nodeid, nlookup uint64) {
	defer c.done(cForget, time.Now())
	c.RawFileSystem.Forget(nodeid, nlookup)
}

func (c *requestCounter) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer c.done(cGetattr, time.Now())
	return c.RawFileSystem.GetAttr(cancel, in, out)
}

func (c *requestCounter) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	defer c.done(cAccess, time.Now())
	return c.RawFileSystem.Access(cancel, in)
}

func (c *requestCounter) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	defer c.done(cReadlink, time.Now())
	return c.RawFileSystem.Readlink(cancel, h)
}

func (c *requestCounter) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	defer c.done(cGetxattr, time.Now())
	return c.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

func (c *requestCounter) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	defer c.done(cListxattr, time.Now())
	return c.RawFileSystem.ListXAttr(cancel, h, dest)
}

func (c *requestCounter) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer c.done(cOpen, time.Now())
	return c.RawFileSystem.Open(cancel, in, out)
}

func (c *requestCounter) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer c.done(cRead, time.Now())
	return c.RawFileSystem.Read(cancel, in, buf)
}

func (c *requestCounter) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	defer c.done(cLseek, time.Now())
	return c.RawFileSystem.Lseek(cancel, in, out)
}

func (c *requestCounter) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	defer c.done(cFlush, time.Now())
	return c.RawFileSystem.Flush(cancel, in)
}

func (c *requestCounter) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	defer c.done(cRelease, time.Now())
	c.RawFileSystem.Release(cancel, in)
}

func (c *requestCounter) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer c.done(cOpendir, time.Now())
	return c.RawFileSystem.OpenDir(cancel, in, out)
}

func (c *requestCounter) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer c.done(cReaddir, time.Now())
	return c.RawFileSystem.ReadDir(cancel, in, out)
}

func (c *requestCounter) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer c.done(cReaddirplus, time.Now())
	return c.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (c *requestCounter) ReleaseDir(in *fuse.ReleaseIn) {
	defer c.done(cReleasedir, time.Now())
	c.RawFileSystem.ReleaseDir(in)
}

func (c *requestCounter) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	defer c.done(cStatfs, time.Now())
	return c.RawFileSystem.StatFs(cancel, h, out)
}

func (c *requestCounter) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	defer c.done(cStatx, time.Now())
	return c.RawFileSystem.Statx(cancel, in, out)
}
