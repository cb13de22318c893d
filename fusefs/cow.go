package fusefs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/fusefs/internal/xattrat"
)

// privateCopy replaces the file name in dirfd, which shares its inode with
// a snapshot, by a private copy with the same mode, owner, times and
// extended attributes (and content, when keepContent), renamed over the
// original. The snapshot keeps the old inode untouched. The copy is
// fsynced before the rename so a crash leaves either the shared file or a
// complete copy. The directory's times are restored: to its readers,
// nothing but the file changed.
//
// Afterwards the kernel's entry for the name is dropped, so new opens reach
// the copy through a fresh node (whose passthrough binding is the copy)
// while handles already open keep theirs. Within an open the kernel may
// hold the directory's lock, so the drop is then asynchronous (async).
func (n *node) privateCopy(ctx context.Context, dirfd int, name, vpath string, st *unix.Statx_t, keepContent, async bool) syscall.Errno {
	f := n.fsys
	// The directory's times before the temporary file moves them.
	var dst unix.Statx_t
	haveDir := statFd(dirfd, &dst) == nil
	tmp := fmt.Sprintf(".v2backup-cow.%016x", rand.Uint64())
	dfd, err := unix.Openat(dirfd, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return f.toErrno("copy/create", vpath, err)
	}
	ok := false
	defer func() {
		unix.Close(dfd)
		if !ok {
			unix.Unlinkat(dirfd, tmp, 0)
		}
	}()
	if keepContent {
		sfd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOATIME, 0)
		if err != nil {
			return f.toErrno("copy/open", vpath, err)
		}
		err = copyContent(ctx, dfd, sfd, int64(st.Size))
		unix.Close(sfd)
		if err != nil {
			return f.toErrno("copy/data", vpath, err)
		}
	}
	if err := copyXattrs(dirfd, name, dfd); err != nil {
		return f.toErrno("copy/xattr", vpath, err)
	}
	if err := unix.Fchown(dfd, int(st.Uid), int(st.Gid)); err != nil {
		return f.toErrno("copy/chown", vpath, err)
	}
	if err := unix.Fchmod(dfd, uint32(st.Mode)&0o7777); err != nil {
		return f.toErrno("copy/chmod", vpath, err)
	}
	if err := unix.Fsync(dfd); err != nil {
		return f.toErrno("copy/fsync", vpath, err)
	}
	ts := []unix.Timespec{
		{Sec: st.Atime.Sec, Nsec: int64(st.Atime.Nsec)},
		{Sec: st.Mtime.Sec, Nsec: int64(st.Mtime.Nsec)},
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", dfd), ts, 0); err != nil {
		return f.toErrno("copy/utimens", vpath, err)
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, name); err != nil {
		return f.toErrno("copy/rename", vpath, err)
	}
	ok = true
	if haveDir {
		dts := []unix.Timespec{
			{Sec: dst.Atime.Sec, Nsec: int64(dst.Atime.Nsec)},
			{Sec: dst.Mtime.Sec, Nsec: int64(dst.Mtime.Nsec)},
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", dirfd), dts, 0); err != nil {
			f.log.Warn("fusefs: restore directory times after private copy", "vm", f.vm, "path", vpath, "err", err)
		}
	}
	if pname, parent := n.Parent(); parent != nil {
		if async {
			go parent.NotifyEntry(pname)
		} else {
			parent.NotifyEntry(pname)
		}
	}
	f.log.Debug("fusefs: private copy of a file shared with a snapshot", "vm", f.vm, "path", vpath,
		"content", keepContent, "size", st.Size)
	return 0
}

// copyContent copies size bytes from sfd to dfd: a reflink where the
// filesystem has them, else copy_file_range, else read and write.
// A cancelled request stops it with EINTR.
func copyContent(ctx context.Context, dfd, sfd int, size int64) error {
	if size == 0 {
		return nil
	}
	if unix.IoctlFileClone(dfd, sfd) == nil {
		return nil
	}
	var done int64
	for done < size {
		if ctx.Err() != nil {
			return syscall.EINTR
		}
		chunk := min(size-done, 64<<20)
		nc, err := unix.CopyFileRange(sfd, nil, dfd, nil, int(chunk), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || nc == 0 {
			if done == 0 && (err == unix.EXDEV || err == unix.EINVAL || err == unix.ENOSYS || err == unix.EOPNOTSUPP) {
				return copyRW(ctx, dfd, sfd)
			}
			if err == nil {
				break // the file shrank meanwhile
			}
			return err
		}
		done += int64(nc)
	}
	return nil
}

func copyRW(ctx context.Context, dfd, sfd int) error {
	buf := make([]byte, 1<<20)
	var off int64
	for {
		if ctx.Err() != nil {
			return syscall.EINTR
		}
		nr, err := unix.Pread(sfd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if nr == 0 {
			return nil
		}
		if _, err := unix.Pwrite(dfd, buf[:nr], off); err != nil {
			return err
		}
		off += int64(nr)
	}
}

// copyXattrs copies every extended attribute of name in dirfd (not
// followed) to the open file dfd. A filesystem without xattrs has none.
func copyXattrs(dirfd int, name string, dfd int) error {
	sz, err := xattrat.List(dirfd, name, nil)
	if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		return nil
	}
	if err != nil {
		return err
	}
	if sz == 0 {
		return nil
	}
	list := make([]byte, sz)
	sz, err = xattrat.List(dirfd, name, list)
	if err != nil {
		return err
	}
	for _, attr := range strings.Split(strings.TrimRight(string(list[:sz]), "\x00"), "\x00") {
		if attr == "" {
			continue
		}
		vsz, err := xattrat.Get(dirfd, name, attr, nil)
		if err != nil {
			return fmt.Errorf("get %s: %w", attr, err)
		}
		val := make([]byte, vsz)
		vsz, err = xattrat.Get(dirfd, name, attr, val)
		if err != nil {
			return fmt.Errorf("get %s: %w", attr, err)
		}
		if err := unix.Fsetxattr(dfd, attr, val[:vsz], 0); err != nil {
			return fmt.Errorf("set %s: %w", attr, err)
		}
	}
	return nil
}
