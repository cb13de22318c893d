package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/fusefs/route"
)

// synthDir is the root or an intermediate directory ("demo.softxs.ch"):
// read-only, listing the routed names below it (plus, at the root, the
// Extra entries). Its backing directory exists but is never listed, so
// leftovers of removed applications stay invisible.
type synthDir struct {
	fs.Inode
	fsys  *filesystem
	vpath string
}

// OnAdd adds the Extra entries to the root as persistent children.
func (d *synthDir) OnAdd(ctx context.Context) {
	if d.vpath != "" {
		return
	}
	for _, name := range d.fsys.extraNames {
		e := d.fsys.extra[name]
		ch := d.NewPersistentInode(ctx, e, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: d.fsys.synthIno("\x00extra/" + name)})
		d.AddChild(name, ch, true)
	}
}

func (d *synthDir) synthAttr(out *fuse.Attr) {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	out.Ino = d.StableAttr().Ino
	t := d.fsys.start
	out.SetTimes(&t, &t, &t)
}

// Getattr reports a read-only directory owned by root, dated at mount time.
func (d *synthDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.synthAttr(&out.Attr)
	return 0
}

// Lookup resolves a routed name: another synthetic directory, an
// application directory (created when missing), or, at the root, an
// Extra entry.
func (d *synthDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if d.vpath == "" {
		if _, ok := d.fsys.extra[name]; ok {
			if ch := d.GetChild(name); ch != nil {
				if ga, ok := ch.Operations().(fs.NodeGetattrer); ok {
					var ao fuse.AttrOut
					if errno := ga.Getattr(ctx, nil, &ao); errno != 0 {
						return nil, errno
					}
					out.Attr = ao.Attr
				} else {
					out.Mode = syscall.S_IFDIR | 0o555
				}
				return ch, 0
			}
		}
	}
	child := join(d.vpath, name)
	p := d.fsys.table.Load().Classify(child)
	switch p.Kind {
	case route.Synthetic:
		sd := &synthDir{fsys: d.fsys, vpath: child}
		ch := d.NewInode(ctx, sd, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: d.fsys.synthIno(child)})
		ch.Operations().(*synthDir).synthAttr(&out.Attr)
		return ch, 0
	case route.AppRoot:
		dirfd, err := d.fsys.openDir(d.vpath)
		if err != nil {
			return nil, d.fsys.toErrno("lookup", child, err)
		}
		defer unix.Close(dirfd)
		var st unix.Statx_t
		err = statAt(dirfd, name, &st)
		if err == unix.ENOENT {
			// Removed on the host: make it again, it is routed here.
			if err = d.fsys.ensureDir(child); err == nil {
				err = statAt(dirfd, name, &st)
			}
		}
		if err != nil {
			return nil, d.fsys.toErrno("lookup", child, err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			d.fsys.log.Error("fusefs: application directory is not a directory", "vm", d.fsys.vm, "app", p.App, "path", child)
			return nil, syscall.EIO
		}
		return newChild(ctx, &d.Inode, d.fsys, p.App, name, &st, out), 0
	}
	return nil, syscall.ENOENT
}

// Readdir lists the routed names, sorted (the Extra names included).
func (d *synthDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	t := d.fsys.table.Load()
	names := t.Children(d.vpath)
	var extra []string
	if d.vpath == "" {
		extra = d.fsys.extraNames
	}
	entries := make([]fuse.DirEntry, 0, len(names)+len(extra))
	for _, n := range names {
		ino := uint64(0)
		child := join(d.vpath, n)
		if t.Classify(child).Kind == route.Synthetic {
			ino = d.fsys.synthIno(child)
		} else if ch := d.GetChild(n); ch != nil {
			ino = ch.StableAttr().Ino
		}
		entries = append(entries, fuse.DirEntry{Name: n, Mode: syscall.S_IFDIR, Ino: ino})
	}
	for _, n := range extra {
		entries = append(entries, fuse.DirEntry{Name: n, Mode: syscall.S_IFDIR, Ino: d.fsys.synthIno("\x00extra/" + n)})
	}
	sortEntries(entries)
	return fs.NewListDirStream(entries), 0
}

// Statfs reports the backing filesystem.
func (d *synthDir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return d.fsys.statfs(out)
}

// The synthetic tree is read-only: every change is refused with EACCES,
// as for a directory the caller may not write.

// Setattr refuses.
func (d *synthDir) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EACCES
}

// Create refuses.
func (d *synthDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EACCES
}

// Mkdir refuses.
func (d *synthDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EACCES
}

// Mknod refuses.
func (d *synthDir) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EACCES
}

// Symlink refuses.
func (d *synthDir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EACCES
}

// Link refuses.
func (d *synthDir) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EACCES
}

// Unlink refuses.
func (d *synthDir) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EACCES }

// Rmdir refuses.
func (d *synthDir) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EACCES }

// Rename refuses.
func (d *synthDir) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EACCES
}

// Setxattr refuses.
func (d *synthDir) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EACCES
}

// Removexattr refuses.
func (d *synthDir) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.EACCES
}

// Getxattr: synthetic directories have no extended attributes.
func (d *synthDir) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

// Listxattr: synthetic directories have no extended attributes.
func (d *synthDir) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return 0, 0
}
