// Package xattrat reads and changes the extended attributes of an entry
// named by a directory descriptor and one path component, without
// following a final symlink: getxattrat(2) and its siblings (Linux 6.13).
//
// The daemons keep descriptors of directories, not of files, and an
// O_PATH descriptor does not work with the f*xattr calls. Before these
// system calls the only way was the l*xattr calls on
// /proc/self/fd/DIRFD/NAME, which resolves /proc and the magic link on
// every call (about twice the cost here). On an older kernel (ENOSYS) the
// package falls back to that path, once and for all.
package xattrat

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// noAt is set once the kernel said it has no *xattrat calls.
var noAt atomic.Bool

// xattrArgs is the kernel's struct xattr_args.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

// procPath is the fallback name of name in dirfd.
func procPath(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// cstrings converts the entry's name and the attribute's for the kernel.
func cstrings(name, attr string) (*byte, *byte, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return nil, nil, err
	}
	a, err := unix.BytePtrFromString(attr)
	return p, a, err
}

func bufPtr(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&b[0]))
}

// Get reads attribute attr of name in dirfd into dest and returns its
// size; with an empty dest it returns the size the value needs. Like
// getxattr(2), a dest too small gives ERANGE.
func Get(dirfd int, name, attr string, dest []byte) (int, error) {
	if !noAt.Load() {
		p, a, err := cstrings(name, attr)
		if err != nil {
			return 0, err
		}
		args := xattrArgs{value: uint64(bufPtr(dest)), size: uint32(len(dest))}
		r, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
		runtime.KeepAlive(dest) // args holds it as an integer
		if e != unix.ENOSYS {
			if e != 0 {
				return 0, e
			}
			return int(r), nil
		}
		noAt.Store(true)
	}
	return unix.Lgetxattr(procPath(dirfd, name), attr, dest)
}

// List writes the NUL-separated attribute names of name in dirfd into
// dest and returns their size; with an empty dest, the size they need.
func List(dirfd int, name string, dest []byte) (int, error) {
	if !noAt.Load() {
		p, err := unix.BytePtrFromString(name)
		if err != nil {
			return 0, err
		}
		r, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			unix.AT_SYMLINK_NOFOLLOW, bufPtr(dest), uintptr(len(dest)), 0)
		runtime.KeepAlive(dest)
		if e != unix.ENOSYS {
			if e != 0 {
				return 0, e
			}
			return int(r), nil
		}
		noAt.Store(true)
	}
	return unix.Llistxattr(procPath(dirfd, name), dest)
}

// Set sets attribute attr of name in dirfd to data; flags are those of
// setxattr(2) (XATTR_CREATE, XATTR_REPLACE).
func Set(dirfd int, name, attr string, data []byte, flags int) error {
	if !noAt.Load() {
		p, a, err := cstrings(name, attr)
		if err != nil {
			return err
		}
		args := xattrArgs{value: uint64(bufPtr(data)), size: uint32(len(data)), flags: uint32(flags)}
		_, _, e := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
		runtime.KeepAlive(data) // args holds it as an integer
		if e != unix.ENOSYS {
			if e != 0 {
				return e
			}
			return nil
		}
		noAt.Store(true)
	}
	return unix.Lsetxattr(procPath(dirfd, name), attr, data, flags)
}

// Remove removes attribute attr of name in dirfd.
func Remove(dirfd int, name, attr string) error {
	if !noAt.Load() {
		p, a, err := cstrings(name, attr)
		if err != nil {
			return err
		}
		_, _, e := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), 0, 0)
		if e != unix.ENOSYS {
			if e != 0 {
				return e
			}
			return nil
		}
		noAt.Store(true)
	}
	return unix.Lremovexattr(procPath(dirfd, name), attr)
}
