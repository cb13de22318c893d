package tiers

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// SyncDir makes the entries of dir (new names, renames) durable: the
// fsync of the directory a rename into it needs before it is promised.
// A filesystem that cannot fsync a directory (ENOTSUP or EINVAL, as some
// FUSE mounts answer) is accepted: the rename is atomic there all the
// same, and its durability is that filesystem's.
func SyncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s to fsync it: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil && !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
