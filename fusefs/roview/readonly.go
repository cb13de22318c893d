package roview

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// readOnly answers every mutating operation with EROFS. Every node type
// embeds it: go-fuse's defaults for a missing method are not EROFS (an
// unimplemented Unlink even reports success).
type readOnly struct{}

func (readOnly) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (readOnly) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (readOnly) Tmpfile(context.Context, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (readOnly) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (readOnly) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (readOnly) Link(context.Context, fs.InodeEmbedder, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (readOnly) Symlink(context.Context, string, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (readOnly) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }

func (readOnly) Rmdir(context.Context, string) syscall.Errno { return syscall.EROFS }

func (readOnly) Rename(context.Context, string, fs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}

func (readOnly) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.EROFS
}

func (readOnly) Removexattr(context.Context, string) syscall.Errno { return syscall.EROFS }

func (readOnly) Write(context.Context, fs.FileHandle, []byte, int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

func (readOnly) Allocate(context.Context, fs.FileHandle, uint64, uint64, uint32) syscall.Errno {
	return syscall.EROFS
}

func (readOnly) CopyFileRange(context.Context, fs.FileHandle, uint64, *fs.Inode, fs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

// Fsync has nothing to flush: success, as on any read-only file.
func (readOnly) Fsync(context.Context, fs.FileHandle, uint32) syscall.Errno { return 0 }

// writeFlags are the open(2) flags that would modify a file.
const writeFlags = syscall.O_WRONLY | syscall.O_RDWR | syscall.O_TRUNC | syscall.O_APPEND | syscall.O_CREAT

func openForWrite(flags uint32) bool {
	return flags&writeFlags != 0
}

// viewOpen answers an OPEN on a mount whose files are opened without one
// (tree.noOpen): EROFS for writing, which keeps the kernel asking (the
// mount is MS_RDONLY anyway), and ENOSYS for reading, after which it
// never asks again.
func viewOpen(flags uint32) syscall.Errno {
	if openForWrite(flags) {
		return syscall.EROFS
	}
	return syscall.ENOSYS
}

// access answers access(2) for a node with the given attributes: writing
// is EROFS, reading and searching follow the mode bits as the kernel would.
func access(ctx context.Context, mask uint32, mode, uid, gid uint32) syscall.Errno {
	const rOK, wOK, xOK = 4, 2, 1
	if mask&wOK != 0 {
		return syscall.EROFS
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return 0
	}
	want := mask & (rOK | xOK)
	if caller.Uid == 0 {
		// root reads anything, and executes what anyone may execute
		if want&xOK != 0 && mode&syscall.S_IFMT != syscall.S_IFDIR && mode&0o111 == 0 {
			return syscall.EACCES
		}
		return 0
	}
	var have uint32
	switch {
	case caller.Uid == uid:
		have = (mode >> 6) & 7
	case caller.Gid == gid:
		have = (mode >> 3) & 7
	default:
		have = mode & 7
	}
	if have&want != want {
		return syscall.EACCES
	}
	return 0
}
