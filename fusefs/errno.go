package fusefs

import (
	"errors"
	"syscall"
)

// toErrno maps an error from the backing filesystem to the errno the
// kernel gets. It is the only place that does: errors a POSIX filesystem
// normally returns pass through, anything else is logged with the
// operation and path and becomes EIO.
func (f *filesystem) toErrno(op, path string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	// Most errors are a bare errno (every LOOKUP of a name about to be
	// created is an ENOENT): no errors.As for them.
	errno, ok := err.(syscall.Errno)
	if ok || errors.As(err, &errno) {
		switch errno {
		case syscall.ENOENT, syscall.EEXIST, syscall.EACCES, syscall.EPERM,
			syscall.ENOTDIR, syscall.EISDIR, syscall.ENOTEMPTY, syscall.EXDEV,
			syscall.ELOOP, syscall.ENAMETOOLONG, syscall.EINVAL, syscall.ENOSPC,
			syscall.EDQUOT, syscall.EROFS, syscall.EBUSY, syscall.ENODATA,
			syscall.ERANGE, syscall.E2BIG, syscall.EOPNOTSUPP, syscall.EBADF,
			syscall.EINTR, syscall.EAGAIN, syscall.EFBIG, syscall.EMLINK,
			syscall.ETXTBSY, syscall.ENXIO, syscall.ESPIPE, syscall.EOVERFLOW,
			syscall.ESTALE:
			return errno
		case syscall.EIO, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM:
			f.log.Error("fusefs: backing filesystem error", "vm", f.vm, "op", op, "path", path, "err", err)
			return errno
		}
	}
	f.log.Error("fusefs: unexpected error, returning EIO", "vm", f.vm, "op", op, "path", path, "err", err)
	return syscall.EIO
}
