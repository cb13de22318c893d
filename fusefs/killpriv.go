package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The mounts negotiate FUSE_HANDLE_KILLPRIV_V2. Without it the kernel asks
// the daemon for security.capability before every write(2) on a file
// (FUSE superblocks are not SB_NOSEC), a round trip per write that cost a
// 1 GiB dd with bs=1M about 10%. With it the kernel leaves to the daemon
// what it would otherwise do itself: clear the set-user-ID and
// set-group-ID bits when an unprivileged process writes, truncates or
// fallocates. The backing filesystem still drops security.capability on
// every write, and chown by the daemon (root) clears the bits as chown(2)
// does. Passthrough writes never reach the daemon, so it clears the bits
// when such a process opens the file for writing, a little earlier than
// the kernel would (at the first write).

// dropsPriv reports whether a write by ctx's caller must clear privilege
// bits of a file with mode: the file is set-user-ID, or set-group-ID and
// group-executable (without it the bit marks mandatory locking, which a
// write keeps), and the caller is unprivileged.
func dropsPriv(ctx context.Context, mode uint32) bool {
	return privBits(mode) != 0 && unprivileged(ctx)
}

// unprivileged reports whether ctx's caller is not root (the kernel's test
// is CAP_FSETID, which the daemon cannot see).
func unprivileged(ctx context.Context) bool {
	caller, ok := fuse.FromContext(ctx)
	return ok && caller.Uid != 0
}

// privBits are the bits of mode a write by an unprivileged process clears.
func privBits(mode uint32) uint32 {
	bits := mode & unix.S_ISUID
	if mode&unix.S_ISGID != 0 && mode&unix.S_IXGRP != 0 {
		bits |= unix.S_ISGID
	}
	return bits
}

// withoutPriv is the permission bits of mode with privBits cleared.
func withoutPriv(mode uint32) uint32 { return mode & 0o7777 &^ privBits(mode) }

// dropPriv clears privBits of the open file fd whose mode is *mode, and
// updates *mode.
func dropPriv(fd int, mode *uint16) error {
	m := uint32(*mode)
	if err := unix.Fchmod(fd, withoutPriv(m)); err != nil {
		return err
	}
	*mode = uint16(m&unix.S_IFMT | withoutPriv(m))
	return nil
}

// staleAttr tells the kernel that n's cached attributes are stale (the
// daemon changed its mode without a reply that carries attributes). Only
// the attributes: an offset of -1 leaves cached data alone and takes no
// lock a request in progress could hold.
func (n *node) staleAttr() {
	if errno := n.NotifyContent(-1, 0); errno != 0 && errno != syscall.ENOENT {
		n.fsys.log.Warn("fusefs: invalidating cached attributes", "vm", n.fsys.vm, "path", n.vpath(), "err", errno)
	}
}
