package roview

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/softxs/v2backup/tiers"
)

// LatestName is the entry that points at the newest complete snapshot. It is
// a symlink (latest -> 2026-11-28T050000), like the one on disk: it says
// which snapshot it is, and rsync -a copies it as a link rather than a
// second tree.
const LatestName = "latest"

// snapList is a directory listing the complete snapshots plus latest: the
// .history directory of a VM's mount (vm set: each snapshot shows only
// that VM's applications) or the root of the administrators' mount (vm
// empty: each snapshot shows every VM).
type snapList struct {
	fs.Inode
	readOnly
	snaps    *snapRoot
	vm       string
	vmErr    error
	relpaths func() []string
	log      *slog.Logger

	mu     sync.Mutex
	warned map[string]bool
}

// NewHistory returns the .history directory of VM vm's mount, to embed in
// that mount's root. snapDir holds the local tier's snapshots
// ({partition}/snapshots/local); relpaths gives the VM's application
// relpaths and is called again for each listing, so an inventory reload
// applies without a remount.
//
// .history lists each complete snapshot (sorted) and latest, a symlink to
// the newest. Inside a snapshot only the VM's relpaths are reachable: the
// hosts and intermediate directories are synthesized, each relpath is a
// read-only view of {snapDir}/{snapshot}/{vm}/{relpath}. Nothing else of
// this VM or any other is reachable. An invalid vm makes every lookup fail
// with EIO and an error in the log that names it.
func NewHistory(snapDir, vm string, relpaths func() []string) fs.InodeEmbedder {
	_, err := tiers.ParseVM(vm)
	if relpaths == nil {
		relpaths = func() []string { return nil }
	}
	return &snapList{snaps: newSnapRoot(snapDir), vm: vm, vmErr: err, relpaths: relpaths, log: slog.Default()}
}

// AdminHistory returns the administrators' all-VM history: a directory
// holding each complete snapshot of snapDir as NAME/{vm}/{relpath}/...,
// read-only, plus latest.
func AdminHistory(snapDir string) fs.InodeEmbedder {
	return &snapList{snaps: newSnapRoot(snapDir), log: slog.Default()}
}

func (l *snapList) admin() bool { return l.vm == "" && l.vmErr == nil }

func (l *snapList) checkVM() syscall.Errno {
	if l.vmErr != nil {
		l.log.Error("roview: history of an invalid VM", "snapdir", l.snaps.path, "err", l.vmErr)
		return syscall.EIO
	}
	return 0
}

func (l *snapList) newest() (string, error) { return l.snaps.newest() }

func (l *snapList) latestNode(ctx context.Context) *fs.Inode {
	n := &symNode{target: l.newest, log: l.log}
	return l.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFLNK, Ino: synthIno("history", l.snaps.path, l.vm, LatestName)})
}

func (l *snapList) snapshotNode(ctx context.Context, name string) *fs.Inode {
	if l.admin() {
		t := newTree(l.snaps, name, l.log)
		return l.NewInode(ctx, &roNode{t: t, rel: name}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: synthIno("history", l.snaps.path, "", name)})
	}
	d := &histDir{l: l, snap: name}
	return l.NewInode(ctx, d, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: synthIno("history", l.snaps.path, l.vm, name)})
}

func (l *snapList) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := l.checkVM(); errno != 0 {
		return nil, errno
	}
	out.SetEntryTimeout(listTimeout)
	out.SetAttrTimeout(listTimeout)
	if name == LatestName {
		t, err := l.newest()
		if err != nil {
			return nil, toErrno(l.log, "lookup latest", err)
		}
		if t == "" {
			return nil, syscall.ENOENT
		}
		out.Mode = syscall.S_IFLNK | 0o777
		out.Size = uint64(len(t))
		return l.latestNode(ctx), 0
	}
	if !isSnapshotName(name) {
		return nil, syscall.ENOENT
	}
	st, err := l.snaps.stat(name)
	if err != nil {
		return nil, toErrno(l.log, "lookup snapshot", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, syscall.ENOENT
	}
	if l.admin() {
		out.FromStat(&st)
	} else {
		synthDirAttr(&out.Attr, &st)
	}
	return l.snapshotNode(ctx, name), 0
}

func (l *snapList) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if errno := l.checkVM(); errno != 0 {
		return nil, errno
	}
	names, err := l.snaps.snapshots()
	if err != nil {
		return nil, toErrno(l.log, "readdir history", err)
	}
	ents := make([]fuse.DirEntry, 0, len(names)+1)
	for _, n := range names {
		ents = append(ents, fuse.DirEntry{Name: n, Mode: syscall.S_IFDIR, Ino: synthIno("history", l.snaps.path, l.vm, n)})
	}
	if len(names) > 0 {
		ents = append(ents, fuse.DirEntry{Name: LatestName, Mode: syscall.S_IFLNK, Ino: synthIno("history", l.snaps.path, l.vm, LatestName)})
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	return fs.NewListDirStream(ents), 0
}

func (l *snapList) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	st, err := l.snaps.stat("")
	if err != nil {
		synthDirAttr(&out.Attr, nil) // no snapshot directory yet: an empty history
	} else {
		synthDirAttr(&out.Attr, &st)
	}
	out.SetTimeout(listTimeout)
	return 0
}

func (l *snapList) Access(ctx context.Context, mask uint32) syscall.Errno {
	return access(ctx, mask, syscall.S_IFDIR|0o555, 0, 0)
}

func (l *snapList) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return statfs(l.snaps, l.log, out)
}

// apps is the VM's valid relpaths, sorted, without duplicates. A bad one
// is logged once and left out.
func (l *snapList) apps() []tiers.Relpath {
	var out []tiers.Relpath
	for _, s := range l.relpaths() {
		r, err := tiers.ParseRelpath(s)
		if err != nil {
			l.mu.Lock()
			if l.warned == nil {
				l.warned = map[string]bool{}
			}
			if !l.warned[s] {
				l.warned[s] = true
				l.log.Warn("roview: history leaves out an invalid relpath", "vm", l.vm, "err", err)
			}
			l.mu.Unlock()
			continue
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// histChild is one entry of a synthesized directory inside a VM's
// snapshot: the next segment of one or more relpaths.
type histChild struct {
	name string
	leaf tiers.Relpath   // set if a relpath ends here: a view of its backing
	apps []tiers.Relpath // relpaths at or below this entry
}

// histChildren are the entries below prefix (segments), sorted. A relpath
// that ends at an entry wins over longer ones through it: its whole
// backing tree is shown, which contains theirs.
func histChildren(apps []tiers.Relpath, prefix []string) []histChild {
	byName := map[string]*histChild{}
	for _, r := range apps {
		segs := r.Segments()
		if len(segs) <= len(prefix) || !slices.Equal(segs[:len(prefix)], prefix) {
			continue
		}
		name := segs[len(prefix)]
		c := byName[name]
		if c == nil {
			c = &histChild{name: name}
			byName[name] = c
		}
		c.apps = append(c.apps, r)
		if len(segs) == len(prefix)+1 {
			c.leaf = r
		}
	}
	out := make([]histChild, 0, len(byName))
	for _, c := range byName {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// histDir is a synthesized directory inside .history/NAME of a VM's
// mount: the snapshot itself (prefix empty) or a host or intermediate
// directory of the VM's relpaths.
type histDir struct {
	fs.Inode
	readOnly
	l      *snapList
	snap   string
	prefix []string
}

func (d *histDir) backing(r tiers.Relpath) string { return d.snap + "/" + d.l.vm + "/" + string(r) }

func (d *histDir) child(name string) (histChild, bool) {
	for _, c := range histChildren(d.l.apps(), d.prefix) {
		if c.name == name {
			return c, true
		}
	}
	return histChild{}, false
}

// exists reports whether c has anything in this snapshot: an application
// added after the snapshot was taken is absent from it.
func (d *histDir) exists(c histChild) (bool, *syscall.Stat_t, error) {
	if c.leaf != "" {
		st, err := d.l.snaps.stat(d.backing(c.leaf))
		if isNotExist(err) {
			return false, nil, nil
		}
		if err != nil {
			return false, nil, err
		}
		return true, &st, nil
	}
	for _, r := range c.apps {
		_, err := d.l.snaps.stat(d.backing(r))
		if err == nil {
			return true, nil, nil
		}
		if !isNotExist(err) {
			return false, nil, err
		}
	}
	return false, nil, nil
}

func (d *histDir) childIno(name string) uint64 {
	return synthIno("history", d.l.snaps.path, d.l.vm, d.snap, strings.Join(append(slices.Clone(d.prefix), name), "/"))
}

func (d *histDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, ok := d.child(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	ok, st, err := d.exists(c)
	if err != nil {
		return nil, toErrno(d.l.log, "lookup "+d.snap+"/"+d.l.vm, err)
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	if c.leaf != "" {
		// Short entry timeout: the relpath may leave this VM on reload.
		t := newTree(d.l.snaps, d.snap, d.l.log)
		return t.newChild(ctx, d.EmbeddedInode(), d.backing(c.leaf), st, out, listTimeout), 0
	}
	ref, _ := d.l.snaps.stat(d.snap)
	synthDirAttr(&out.Attr, &ref)
	out.SetEntryTimeout(listTimeout)
	out.SetAttrTimeout(listTimeout)
	sub := &histDir{l: d.l, snap: d.snap, prefix: append(slices.Clone(d.prefix), name)}
	return d.NewInode(ctx, sub, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: d.childIno(name)}), 0
}

func (d *histDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	var ents []fuse.DirEntry
	salt := snapshotSalt(d.snap)
	for _, c := range histChildren(d.l.apps(), d.prefix) {
		ok, st, err := d.exists(c)
		if err != nil {
			return nil, toErrno(d.l.log, "readdir "+d.snap+"/"+d.l.vm, err)
		}
		if !ok {
			continue
		}
		if st != nil {
			ents = append(ents, fuse.DirEntry{Name: c.name, Mode: st.Mode & syscall.S_IFMT, Ino: backingIno(st, salt)})
		} else {
			ents = append(ents, fuse.DirEntry{Name: c.name, Mode: syscall.S_IFDIR, Ino: d.childIno(c.name)})
		}
	}
	return fs.NewListDirStream(ents), 0
}

func (d *histDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	st, err := d.l.snaps.stat(d.snap)
	if err != nil {
		return toErrno(d.l.log, "getattr "+d.snap, err)
	}
	synthDirAttr(&out.Attr, &st)
	out.SetTimeout(listTimeout)
	return 0
}

func (d *histDir) Access(ctx context.Context, mask uint32) syscall.Errno {
	return access(ctx, mask, syscall.S_IFDIR|0o555, 0, 0)
}

func (d *histDir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return statfs(d.l.snaps, d.l.log, out)
}

func isNotExist(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR)
}
