package fusefs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// file is an open backing file served by the daemon (no passthrough).
type file struct {
	mu     sync.Mutex
	fd     int
	node   *node
	write  bool
	closed bool
}

// ptFile is a file whose data the kernel reads and writes directly in the
// backing file (FUSE passthrough); the daemon still sees open, fsync,
// getattr and release.
type ptFile struct{ *file }

// Release closes the file and unpins the node's passthrough binding.
func (p *ptFile) Release(ctx context.Context) syscall.Errno {
	errno := p.file.Release(ctx)
	p.node.mu.Lock()
	p.node.ptOpen--
	p.node.mu.Unlock()
	return errno
}

// PassthroughFd hands the backing descriptor to go-fuse, which registers
// it with the kernel. It stays open until Release.
func (p *ptFile) PassthroughFd() (int, bool) { return p.fd, true }

func asFile(f fs.FileHandle) *file {
	switch h := f.(type) {
	case *file:
		return h
	case *ptFile:
		return h.file
	}
	return nil
}

// Read serves a read by splicing from the backing file.
func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultFd(uintptr(f.fd), off, len(buf)), 0
}

// Write writes at the kernel's offset.
func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := unix.Pwrite(f.fd, data, off)
	if err != nil {
		return 0, f.node.fsys.toErrno("write", f.node.vpath(), err)
	}
	return uint32(n), 0
}

// Flush has nothing to do: data is in the backing file already. Handles
// are opened with FOPEN_NOFLUSH, so the kernel does not even ask.
func (f *file) Flush(ctx context.Context) syscall.Errno { return 0 }

// Fsync makes the backing file durable.
func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	var err error
	if flags&1 != 0 { // FUSE_FSYNC_FDATASYNC
		err = unix.Fdatasync(f.fd)
	} else {
		err = unix.Fsync(f.fd)
	}
	return f.node.fsys.toErrno("fsync", f.node.vpath(), err)
}

// Getattr stats the open file.
func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st unix.Statx_t
	if err := statFd(f.fd, &st); err != nil {
		return f.node.fsys.toErrno("fgetattr", f.node.vpath(), err)
	}
	f.node.attr(&st, &out.Attr)
	return 0
}

// Lseek supports SEEK_DATA and SEEK_HOLE.
func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := unix.Seek(f.fd, int64(off), int(whence))
	if err != nil {
		return 0, f.node.fsys.toErrno("lseek", f.node.vpath(), err)
	}
	return uint64(n), 0
}

// Allocate preallocates space (fallocate). Like a write, it clears the
// set-ID bits when an unprivileged process does it (killpriv.go); root's
// fallocates, the common case, cost no stat.
func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	var err error
	if unprivileged(ctx) {
		var st unix.Statx_t
		err = statFd(f.fd, &st)
		if err == nil && privBits(uint32(st.Mode)) != 0 {
			if err = dropPriv(f.fd, &st.Mode); err == nil {
				f.node.staleAttr()
			}
		}
	}
	if err == nil {
		err = unix.Fallocate(f.fd, mode, int64(off), int64(size))
	}
	return f.node.fsys.toErrno("fallocate", f.node.vpath(), err)
}

// Release closes the backing file and, if it was open for writing, tells
// the Recorder (which queues: nothing slow happens here).
func (f *file) Release(ctx context.Context) syscall.Errno {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return syscall.EBADF
	}
	f.closed = true
	f.mu.Unlock()
	err := unix.Close(f.fd)
	f.node.fsys.prune.Touch(f.node)
	if f.write {
		vpath := f.node.vpath()
		if f.node.fsys.live(f.node.app, vpath) {
			f.node.fsys.recordWritten(f.node.app, vpath)
		}
	}
	return f.node.fsys.toErrno("release", "", err)
}
