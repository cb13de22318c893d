package roview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
	"golang.org/x/sys/unix"
)

// CatalogName is the host's catalog in the remote view's root, beside
// SHA256SUMS and SNAPSHOT.json: the export taken with the snapshot shown
// (RemoteOptions.ShippedDir), so a backup server can answer for the host.
const CatalogName = tiers.ShippedCatalogName

// shippedCatalog is the catalog export of one snapshot, hashed when the
// view prepared it. Exports are written once (renamed into place) and
// never changed, so the hash stays true while the file exists.
type shippedCatalog struct {
	path   string
	size   int64
	sha256 string
	mtime  time.Time
}

// shipped finds and hashes the export of snapshot name; nil if the view
// ships no catalog or there is no export for that snapshot (snapshots
// taken before the host shipped catalogs).
func (v *RemoteView) shipped(name string) (*shippedCatalog, error) {
	if v.opts.ShippedDir == "" {
		return nil, nil
	}
	p := filepath.Join(v.opts.ShippedDir, name+".db")
	sum, st, err := catalog.FileSHA256(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("shipped catalog of snapshot %s: %w", name, err)
	}
	return &shippedCatalog{path: p, size: st.Size(), sha256: sum, mtime: st.ModTime()}, nil
}

// catalogAppeared reports whether p was prepared before its snapshot's
// export was written (the nightly run exports right after the snapshot
// appears) and the export is there now: p must then be prepared again.
func (v *RemoteView) catalogAppeared(p *pinned) bool {
	if p == nil || p.catalog != nil || v.opts.ShippedDir == "" {
		return false
	}
	_, err := os.Lstat(filepath.Join(v.opts.ShippedDir, p.name+".db"))
	return err == nil
}

// describedCatalog is SNAPSHOT.json with the shipped catalog's name and
// hash, which a pull checks CATALOG.db against.
type describedCatalog struct {
	Description
	Catalog       string `json:"catalog,omitempty"`
	CatalogSHA256 string `json:"catalog_sha256,omitempty"`
}

// withCatalog adds c (if any) to the rendered SNAPSHOT.json desc.
func withCatalog(desc []byte, c *shippedCatalog) []byte {
	if c == nil {
		return desc
	}
	var d describedCatalog
	if err := json.Unmarshal(desc, &d.Description); err != nil {
		return desc // cannot happen: describe rendered it
	}
	d.Catalog, d.CatalogSHA256 = CatalogName, c.sha256
	out, _ := json.MarshalIndent(d, "", "  ") // plain fields
	return append(out, '\n')
}

// catalogFile serves a shipped catalog read-only from its export.
type catalogFile struct {
	fs.Inode
	readOnly
	c *shippedCatalog // nil: the snapshot shown has none (since a switch, keep.go)
	t *tree
}

func (n *catalogFile) attr(a *fuse.Attr) { fileAttr(a, n.c.size, n.c.mtime) }

func (n *catalogFile) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	defer n.t.enter()()
	if n.c == nil {
		return syscall.ENOENT
	}
	n.attr(&out.Attr)
	out.SetTimeout(immutableTimeout)
	return 0
}

func (n *catalogFile) Access(ctx context.Context, mask uint32) syscall.Errno {
	return access(ctx, mask, syscall.S_IFREG|0o444, 0, 0)
}

// Open and Flush: like every file of the remote view (tree.noOpen), the
// export is opened and closed in the kernel alone.
func (n *catalogFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, viewOpen(flags)
}

func (n *catalogFile) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// Read reads the export, opening it for each READ (see Open).
func (n *catalogFile) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	defer n.t.enter()()
	if n.c == nil {
		return nil, syscall.ENOENT
	}
	fh, err := os.OpenFile(n.c.path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		// Pruned while shown: the view keeps the newest few exports, so
		// only a very old pin gets here.
		return nil, toErrno(n.t.log, "open shipped catalog", err)
	}
	defer fh.Close()
	if st, err := fh.Stat(); err != nil || st.Size() != n.c.size {
		n.t.log.Error("roview: shipped catalog changed since it was hashed", "path", n.c.path)
		return nil, syscall.EIO
	}
	k, err := fh.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, toErrno(n.t.log, "read shipped catalog", err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

// ino numbers a generated file of p. SNAPSHOT.json and CATALOG.db carry
// the catalog's hash: a snapshot prepared again once its export appeared
// gets new inodes, so neither go-fuse nor the kernel's page cache serves
// the old SNAPSHOT.json.
func (p *pinned) ino(name string) uint64 {
	if p.catalog != nil && (name == DescName || name == CatalogName) {
		return synthIno("remote", p.name, name, p.catalog.sha256)
	}
	return synthIno("remote", p.name, name)
}
