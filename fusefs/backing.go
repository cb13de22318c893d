package fusefs

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/fusefs/internal/prune"
	"github.com/softxs/v2backup/fusefs/route"
)

// filesystem is the state shared by every node of one VM mount.
type filesystem struct {
	vm          string
	backing     string // LocalRoot/VM
	rootFd      int    // O_PATH descriptor of backing: every access starts here
	dev         uint64
	rec         Recorder
	log         *slog.Logger
	umask       uint32
	asRoot      bool // the daemon runs as root: new entries go to their caller
	start       time.Time
	passthrough atomic.Bool   // set once, right after mounting
	ttl         time.Duration // kernel cache timeout of entries and attributes

	table atomic.Pointer[route.Table]
	root  *synthDir

	extra      map[string]fs.InodeEmbedder
	extraNames []string

	synthMu   sync.Mutex
	synthInos map[string]uint64

	// dirFds counts directory descriptors cached by nodes, at most
	// maxDirFds (a share of RLIMIT_NOFILE).
	dirFds    atomic.Int64
	maxDirFds int64

	// prune keeps the kernel's file inodes under a cap (nil: no cap).
	prune *prune.Pruner

	closeOnce sync.Once
}

// resolveFlags make openat2 refuse any symlink (and magic link) on the way
// and anything that would climb out of the backing directory.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openAt opens the backing path rel (relative to the VM's backing
// directory) without following any symlink, the last component included.
func (f *filesystem) openAt(rel string, flags int, mode uint32) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Resolve: resolveFlags}
	if flags&(unix.O_CREAT|unix.O_TMPFILE) != 0 {
		how.Mode = uint64(mode)
	}
	for {
		fd, err := unix.Openat2(f.rootFd, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			// EAGAIN: a concurrent rename raced the RESOLVE_BENEATH walk.
			continue
		}
		return fd, err
	}
}

// openDir returns an O_PATH descriptor of the backing directory rel.
func (f *filesystem) openDir(rel string) (int, error) {
	return f.openAt(rel, unix.O_PATH|unix.O_DIRECTORY, 0)
}

const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// statAt stats name in dirfd without following a symlink.
func statAt(dirfd int, name string, st *unix.Statx_t) error {
	return unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_SYNC_AS_STAT, statxMask, st)
}

// statFd stats an open descriptor.
func statFd(fd int, st *unix.Statx_t) error {
	return unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_SYNC_AS_STAT, statxMask, st)
}

// idFromStat gives a backing entry a stable FUSE identity: its inode
// number mixed with the device (as go-fuse's loopback does), and its birth
// time as generation so a recycled inode number is a new node.
func (f *filesystem) idFromStat(st *unix.Statx_t) fs.StableAttr {
	dev := unix.Mkdev(st.Dev_major, st.Dev_minor)
	swapped := (dev << 32) | (dev >> 32)
	rootSwapped := (f.dev << 32) | (f.dev >> 32)
	gen := uint64(1)
	if st.Mask&unix.STATX_BTIME != 0 {
		gen = uint64(st.Btime.Sec)*1e9 + uint64(st.Btime.Nsec)
	}
	return fs.StableAttr{Mode: uint32(st.Mode) & syscall.S_IFMT, Ino: (swapped ^ rootSwapped) ^ st.Ino, Gen: gen}
}

// synthInoBase keeps synthetic inode numbers clear of real ones (mixed
// with the device they stay below 2^62 in practice) and of go-fuse's
// automatic numbers (from 2^63).
const synthInoBase = 1 << 62

// synthIno returns the fixed inode number of a synthetic path.
func (f *filesystem) synthIno(vpath string) uint64 {
	f.synthMu.Lock()
	defer f.synthMu.Unlock()
	ino, ok := f.synthInos[vpath]
	if !ok {
		ino = synthInoBase + uint64(len(f.synthInos)) + 2
		f.synthInos[vpath] = ino
	}
	return ino
}

func attrFromStatx(st *unix.Statx_t, out *fuse.Attr) {
	out.Ino = st.Ino
	out.Size = st.Size
	out.Blocks = st.Blocks
	out.Atime = uint64(st.Atime.Sec)
	out.Atimensec = st.Atime.Nsec
	out.Mtime = uint64(st.Mtime.Sec)
	out.Mtimensec = st.Mtime.Nsec
	out.Ctime = uint64(st.Ctime.Sec)
	out.Ctimensec = st.Ctime.Nsec
	out.Mode = uint32(st.Mode)
	out.Nlink = st.Nlink
	out.Uid = st.Uid
	out.Gid = st.Gid
	out.Rdev = uint32(unix.Mkdev(st.Rdev_major, st.Rdev_minor))
	out.Blksize = st.Blksize
}

// backingPath is the path of a virtual path relative to LocalRoot, as the
// Recorder wants it.
func (f *filesystem) backingPath(vpath string) string {
	return f.vm + "/" + vpath
}

func (f *filesystem) recordWritten(app, vpath string) {
	if f.rec != nil {
		f.rec.Written(app, f.backingPath(vpath))
	}
}

func (f *filesystem) recordRemoved(app, vpath string) {
	if f.rec != nil {
		f.rec.Removed(app, f.backingPath(vpath))
	}
}

func (f *filesystem) recordRenamed(app, from, to string) {
	if f.rec != nil {
		f.rec.Renamed(app, f.backingPath(from), f.backingPath(to))
	}
}

// ensureDir creates the backing directory rel and its parents, owned by
// the daemon, mode 0755, never following a symlink.
func (f *filesystem) ensureDir(rel string) error {
	dirfd, err := unix.Dup(f.rootFd)
	if err != nil {
		return err
	}
	for _, seg := range strings.Split(rel, "/") {
		err := unix.Mkdirat(dirfd, seg, 0o755)
		if err != nil && err != unix.EEXIST {
			unix.Close(dirfd)
			return err
		}
		next, err := unix.Openat(dirfd, seg, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(dirfd)
		if err != nil {
			return err
		}
		dirfd = next
	}
	unix.Close(dirfd)
	return nil
}

// ensureAppDirs creates the backing directory of every application, so
// the first writer finds it; failures are logged, and the application's
// directory is then absent from the mount until it can be created.
func (f *filesystem) ensureAppDirs(t *route.Table) {
	for _, a := range t.Apps() {
		if err := f.ensureDir(a.Relpath); err != nil {
			f.log.Error("fusefs: cannot create application directory", "vm", f.vm, "app", a.Name,
				"path", f.backing+"/"+a.Relpath, "err", err)
		}
	}
}

func (f *filesystem) checkExtra(t *route.Table) error {
	for _, name := range f.extraNames {
		if t.Classify(name).Kind != route.Absent {
			return fmt.Errorf("fusefs: extra root entry %q collides with an application relpath", name)
		}
	}
	return nil
}

func (f *filesystem) close() {
	f.closeOnce.Do(func() { unix.Close(f.rootFd) })
}

// live reports whether vpath, inside app, is still routed to app.
func (f *filesystem) live(app, vpath string) bool {
	rel, ok := f.table.Load().Relpath(app)
	return ok && route.Within(rel, vpath)
}

// setApps swaps the routing table and drops what the kernel cached
// about names whose meaning changed.
func (f *filesystem) setApps(apps []App) error {
	nt, err := route.NewTable(toRouteApps(apps))
	if err != nil {
		return fmt.Errorf("fusefs: VM %q: %w", f.vm, err)
	}
	if err := f.checkExtra(nt); err != nil {
		return err
	}
	f.ensureAppDirs(nt)
	ot := f.table.Swap(nt)

	// Every name listed under a root or synthetic directory of either
	// table is a candidate; it changed if its classification did.
	type entry struct{ dir, name string }
	var changed []entry
	seen := map[entry]bool{}
	var visit func(t *route.Table, dir string)
	visit = func(t *route.Table, dir string) {
		for _, name := range t.Children(dir) {
			e := entry{dir, name}
			child := join(dir, name)
			if !seen[e] {
				seen[e] = true
				if ot.Classify(child) != nt.Classify(child) {
					changed = append(changed, e)
				}
			}
			visit(t, child)
		}
	}
	visit(ot, "")
	visit(nt, "")
	for _, e := range changed {
		parent := f.inodeAt(e.dir)
		if parent == nil {
			continue
		}
		if ch := parent.GetChild(e.name); ch != nil {
			parent.RmChild(e.name)
			if errno := parent.NotifyDelete(e.name, ch); errno != 0 && errno != syscall.ENOENT {
				f.log.Debug("fusefs: notify delete", "vm", f.vm, "path", join(e.dir, e.name), "errno", errno)
			}
		}
		// Also drop the parent's cached listing and attributes (an
		// application directory may have been created inside another).
		if errno := parent.NotifyContent(0, 0); errno != 0 && errno != syscall.ENOENT {
			f.log.Debug("fusefs: notify content", "vm", f.vm, "path", e.dir, "errno", errno)
		}
		if errno := parent.NotifyEntry(e.name); errno != 0 && errno != syscall.ENOENT {
			f.log.Debug("fusefs: notify entry", "vm", f.vm, "path", join(e.dir, e.name), "errno", errno)
		}
	}
	f.log.Info("fusefs: applications rerouted", "vm", f.vm, "apps", len(apps), "changed", len(changed))
	return nil
}

// inodeAt walks go-fuse's tree to the inode of vpath, or nil when the
// kernel does not know it.
func (f *filesystem) inodeAt(vpath string) *fs.Inode {
	in := f.root.EmbeddedInode()
	if vpath == "" {
		return in
	}
	for _, seg := range strings.Split(vpath, "/") {
		in = in.GetChild(seg)
		if in == nil {
			return nil
		}
	}
	return in
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func split(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}
