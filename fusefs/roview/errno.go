package roview

import (
	"errors"
	"log/slog"
	"syscall"
)

// toErrno is the one place where an error becomes the errno the kernel
// sees. Expected conditions keep their errno; anything else is logged with
// the path it came from and answered EIO.
func toErrno(log *slog.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOENT, syscall.ENOTDIR, syscall.EISDIR, syscall.EACCES,
			syscall.EPERM, syscall.EINTR, syscall.ENAMETOOLONG, syscall.ENODATA,
			syscall.ERANGE, syscall.EOPNOTSUPP, syscall.EROFS, syscall.EMFILE,
			syscall.ENFILE, syscall.ENOMEM, syscall.E2BIG, syscall.EINVAL:
			return errno
		case syscall.ELOOP, syscall.EXDEV:
			// A symlink or a mount point where a looked-up directory
			// was: the backing tree changed under an immutable snapshot.
			log.Error("roview: backing tree changed under a snapshot; refusing to follow", "op", op, "err", err)
			return syscall.EIO
		}
	}
	log.Error("roview: unexpected error", "op", op, "err", err)
	return syscall.EIO
}
