package fusefs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirHandle is an open backing directory, listed at its first read and
// sorted. The kernel may keep the listing in its cache (FOPEN_CACHE_DIR):
// it drops it itself when an entry changes through the mount, and the
// daemon is the only writer of the backing tree. While the cache holds, a
// walk (find, du, rsync's scan of the destination) still opens every
// directory but reads none, so opening must not list: listing at OPENDIR
// cost 30 µs of the daemon's time per directory of a warm find.
type dirHandle struct {
	node    *node
	mu      sync.Mutex
	listed  bool
	entries []fuse.DirEntry
	next    int
}

// OpendirHandle lets the kernel cache the listing; it lists nothing yet.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if !n.fsys.live(n.app, n.vpath()) {
		return nil, 0, syscall.ENOENT
	}
	return &dirHandle{node: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// list reads the directory once; call with d.mu held.
func (d *dirHandle) list(ctx context.Context) syscall.Errno {
	if d.listed {
		return 0
	}
	ds, errno := d.node.Readdir(ctx)
	if errno != 0 {
		return errno
	}
	defer ds.Close()
	var entries []fuse.DirEntry
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			return errno
		}
		entries = append(entries, e)
	}
	for i := range entries {
		entries[i].Off = uint64(i + 1)
	}
	d.entries, d.listed = entries, true
	return 0
}

// Readdirent returns the next entry, or nil at the end.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if errno := d.list(ctx); errno != 0 {
		return nil, errno
	}
	if d.next >= len(d.entries) {
		return nil, 0
	}
	e := d.entries[d.next]
	d.next++
	return &e, 0
}

// Seekdir moves to the entry after offset off (offsets are 1-based
// positions in the sorted listing).
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	if errno := d.list(ctx); errno != 0 {
		return errno
	}
	if off > uint64(len(d.entries)) {
		off = uint64(len(d.entries))
	}
	d.next = int(off)
	return 0
}

// Releasedir drops the listing.
func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {
	d.mu.Lock()
	d.entries = nil
	d.mu.Unlock()
}
