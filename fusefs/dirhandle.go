package fusefs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirHandle is an open backing directory, listed once at opendir and
// sorted. The kernel may keep the listing in its cache (FOPEN_CACHE_DIR):
// it drops it itself when an entry changes through the mount, and the
// daemon is the only writer of the backing tree.
type dirHandle struct {
	mu      sync.Mutex
	entries []fuse.DirEntry
	next    int
}

// OpendirHandle lists the directory and lets the kernel cache the listing.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ds, errno := n.Readdir(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	var entries []fuse.DirEntry
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			return nil, 0, errno
		}
		entries = append(entries, e)
	}
	for i := range entries {
		entries[i].Off = uint64(i + 1)
	}
	return &dirHandle{entries: entries}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// Readdirent returns the next entry, or nil at the end.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
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
