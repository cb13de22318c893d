package roview

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

// What the kernel may keep when the remote view switches snapshots.
//
// A nightly snapshot shares almost every file with the one before, by
// hard link: the same inode, so the same content and metadata. Dropping
// everything the kernel knows at each switch would make the next pull
// walk the whole tree cold (a READDIRPLUS of every directory, a kernel
// inode for every entry), which is most of what a pull of a few changed
// files costs. So the view's nodes name paths relative to the snapshot
// shown, and a switch keeps the ones whose backing entry is the same in
// both snapshots. Only the others are made stale:
//
//   - a file whose backing inode differs, or an entry gone or of another
//     type: its attributes and cached pages are invalidated at once
//     (FUSE_NOTIFY_INVAL_INODE) and its entry is dropped after the switch;
//   - a directory whose own attributes or listing differ (names, types,
//     inodes of its non-directories): its attributes and cached listing
//     are invalidated; it keeps the children that did not change.
//
// The check runs while new requests wait (RemoteView.switching) and only
// after the view was idle (no request, no open directory), so no
// request sees the new snapshot through attributes of the old one. It
// uses no notification that takes a directory lock: a request waiting
// for the switch may hold one. The entries are dropped afterwards
// (invalidate), as before.

// keepResult is what a switch did with the nodes the kernel knew.
type keepResult struct {
	kept      int       // kept as they were
	refreshed int       // directories kept with their attributes and listing invalidated
	drop      []dropped // entries to drop once requests flow again
}

// dropped is an entry the kernel must forget.
type dropped struct {
	parent *fs.Inode
	name   string
}

// keep moves the nodes the kernel knows from snapshot old to p, the one
// now shown; call it with v.switching set and v.tree.snap already p's.
func (v *RemoteView) keep(old string, p *pinned) keepResult {
	var res keepResult
	v.keepDir(v.root.EmbeddedInode(), old, p.name, false, &res)
	// The root's generated files show p's until invalidate drops them.
	for name, c := range v.root.Children() {
		switch g := c.Operations().(type) {
		case *genFile:
			g.data, g.mtime = p.sums, p.mtime
			if name == DescName {
				g.data = p.desc
			}
		case *catalogFile:
			g.c = p.catalog
		default:
			continue
		}
		v.stale(c)
	}
	return res
}

func (v *RemoteView) keepDir(dir *fs.Inode, old, new string, gone bool, res *keepResult) {
	for name, c := range dir.Children() {
		n, ok := c.Operations().(*roNode)
		if !ok {
			continue // the root's generated files: see keep
		}
		isDir := c.StableAttr().Mode == syscall.S_IFDIR
		st, err := v.snaps.stat(new + "/" + n.rel)
		switch {
		case gone || err != nil || st.Mode&syscall.S_IFMT != c.StableAttr().Mode:
			v.stale(c)
			n.drop()
			if !gone {
				res.drop = append(res.drop, dropped{dir, name})
			}
			if isDir {
				v.keepDir(c, old, new, true, res)
			}
		case !isDir && n.same(&st):
			res.kept++
		case !isDir:
			v.stale(c)
			n.drop()
			res.drop = append(res.drop, dropped{dir, name})
		default:
			if !v.sameDir(old+"/"+n.rel, new+"/"+n.rel, &st) {
				v.stale(c)
				res.refreshed++
			} else {
				res.kept++
			}
			n.become(&st)
			v.keepDir(c, old, new, false, res)
		}
	}
}

// stale makes the kernel ask again for a node's attributes and content.
func (v *RemoteView) stale(c *fs.Inode) {
	if errno := c.NotifyContent(0, 0); errno != 0 && errno != syscall.ENOENT {
		v.log.Warn("roview: remote view could not invalidate a node", "err", errno)
	}
}

// sameDir reports whether directory a (of the old snapshot) shows exactly
// what b (its counterpart, with attributes stb) shows: its own attributes
// but times other than mtime, and its entries' names and types and, for
// non-directories, their inodes. Any error counts as a difference.
func (v *RemoteView) sameDir(a, b string, stb *syscall.Stat_t) bool {
	sta, err := v.snaps.stat(a)
	if err != nil || sta.Mode != stb.Mode || sta.Uid != stb.Uid || sta.Gid != stb.Gid ||
		sta.Nlink != stb.Nlink || sta.Size != stb.Size || sta.Mtim != stb.Mtim {
		return false
	}
	ea, err := v.snaps.readDir(a)
	if err != nil {
		return false
	}
	eb, err := v.snaps.readDir(b)
	if err != nil || len(ea) != len(eb) {
		return false
	}
	for i := range ea {
		if ea[i].name != eb[i].name || ea[i].mode != eb[i].mode ||
			(ea[i].mode != syscall.S_IFDIR && ea[i].ino != eb[i].ino) {
			return false
		}
	}
	return true
}
