package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Entry is one non-directory of a snapshot: its manifest line. Directories
// are not entries (they are implied by the paths, and their metadata is in
// the snapshot tree itself); regular files, symlinks, FIFOs, sockets and
// device nodes are.
type Entry struct {
	// Path is slash-separated and relative to the source root, e.g.
	// "web/demo.softxs.ch/hydro/db/hydro-20261128.sql"; the same in the
	// snapshot and in the live tier, also for a subtree taken from elsewhere
	// through Options.Keep.
	Path     string
	Mode     fs.FileMode // type and permission bits, as os.Lstat reports them
	Size     int64       // bytes; for a symlink the length of its target
	MTime    time.Time
	UID, GID uint32
	// SHA256 is the lower-case hex digest of a regular file's content. It
	// is "" for other types, and for a file that changed every time it was
	// read (Result.Unhashed counts those).
	SHA256 string
	Target string // a symlink's target, never followed
	Reused bool   // SHA256 came from Options.Hash; the file was not read
}

// KeptDir is a subtree that Options.Keep took from elsewhere.
type KeptDir struct {
	Path string // relative to the source root, e.g. "web/demo.softxs.ch/hydro"
	From string // the directory it was linked from; "" if it was left out
}

// Options says what to snapshot, where, and how to build the manifest.
type Options struct {
	// Source is the tier directory, e.g. /v01/backup/local.
	Source string
	// SnapDir holds the snapshots, e.g. /v01/backup/snapshots/local. It is
	// created (mode 0700) if missing and must be on Source's filesystem.
	SnapDir string
	// Name is the new snapshot's name (see Name and ParseName).
	Name string

	// Hash, if set, returns the SHA-256 already known for the file at rel
	// with this size and mtime (nanoseconds since the epoch). Only files
	// for which it returns ok=false are read and hashed. It is called from
	// several goroutines at once.
	Hash func(rel string, size int64, mtimeNs int64) (sha256hex string, ok bool)

	// Emit, if set, receives the manifest in batches, in no particular
	// order, from one goroutine at a time; it may keep the slice. If it
	// fails, Create fails. The batches describe a snapshot that exists only
	// if Create returns nil: a caller that stores them (in a transaction)
	// discards them when Create fails.
	Emit func([]Entry) error

	// Keep, if set, is asked about every directory below the root, by its
	// path relative to the source root. ok=true replaces the live subtree:
	// with the tree at from (an absolute directory path, e.g. the same
	// application in the previous snapshot) or, if from is "", with nothing.
	// This is how an application still being written, or whose backup
	// failed, is taken from its last complete state. It is called from
	// several goroutines at once.
	Keep func(rel string) (from string, ok bool)

	// Workers is the number of directories linked, and of files hashed, in
	// parallel; 0 means 4 per CPU (linking waits on the disk and on
	// directory locks more than on the CPU).
	Workers int
	// BatchSize is the number of entries per Emit call; 0 means 1000.
	BatchSize int

	// Test hooks.
	afterList  func(rel string) // a directory has been listed
	beforeRead func(rel string) // a file is about to be read for hashing
}

// Result counts what Create did.
type Result struct {
	Name, Path string // the snapshot's name and full path
	Dirs       int64  // directories, the root included
	Files      int64  // regular files
	Symlinks   int64
	Others     int64 // FIFOs, sockets, devices
	Bytes      int64 // sum of the regular files' sizes

	Reused      int64 // files whose hash came from Options.Hash
	Hashed      int64 // files read and hashed
	HashedBytes int64
	Unhashed    int64 // files that changed every time they were read
	Vanished    int64 // entries removed from the source while it was walked

	Kept    []KeptDir // subtrees Options.Keep replaced
	Cleaned []string  // work directories of interrupted runs, moved aside for Purge
	Elapsed time.Duration
	Synced  time.Duration // of Elapsed, the time syncfs took
}

// resolveBeneath keeps every open inside the tree it is relative to:
// no symlink is followed, no ".." escapes, no mount point is crossed.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS |
	unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// Create makes the snapshot opts.Name of opts.Source in opts.SnapDir.
//
// The tree is built as .building-{name}, then synced, then renamed to
// {name}: a snapshot is visible whole or not at all. A failed or cancelled
// run renames its work directory to .deleting-{name}; a run killed half way
// leaves .building-{name}, which the next Create moves aside likewise. Purge
// removes both. The caller holds the snapshot lock.
//
// Durability: one syncfs(2) on the filesystem, then the rename, then an
// fsync of SnapDir. Fsyncing each of the tree's directories would force one
// journal commit per directory (tens of thousands on a real tier); syncfs
// writes all of them, with the new directories' inodes, in one commit, and
// the rename is made durable only after it, so a crash can never leave a
// snapshot name on an incomplete tree. syncfs also flushes other writers'
// dirty data on that filesystem, which is the price of that single commit.
func Create(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now()
	if _, err := ParseName(opts.Name); err != nil {
		return nil, err
	}
	if opts.Workers <= 0 {
		opts.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	res := &Result{Name: opts.Name, Path: filepath.Join(opts.SnapDir, opts.Name)}

	srcfd, err := unix.Open(opts.Source, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("snapshot source %s: %w", opts.Source, err)
	}
	defer unix.Close(srcfd)
	if err := os.MkdirAll(opts.SnapDir, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot directory: %w", err)
	}
	snapfd, err := unix.Open(opts.SnapDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("snapshot directory %s: %w", opts.SnapDir, err)
	}
	defer unix.Close(snapfd)
	var sst, dst unix.Stat_t
	if err := unix.Fstat(srcfd, &sst); err != nil {
		return nil, fmt.Errorf("stat %s: %w", opts.Source, err)
	}
	if err := unix.Fstat(snapfd, &dst); err != nil {
		return nil, fmt.Errorf("stat %s: %w", opts.SnapDir, err)
	}
	if sst.Dev != dst.Dev {
		return nil, fmt.Errorf("snapshot source %s and snapshot directory %s are on different filesystems; hard links need one", opts.Source, opts.SnapDir)
	}

	if inside, err := within(opts.SnapDir, opts.Source); err != nil {
		return nil, err
	} else if inside {
		return nil, fmt.Errorf("snapshot directory %s is inside the source %s; a snapshot would contain itself", opts.SnapDir, opts.Source)
	}

	stale, err := workDirs(opts.SnapDir, buildingPrefix)
	if err != nil {
		return nil, err
	}
	for _, s := range stale {
		moved, err := moveAside(snapfd, s, s[len(buildingPrefix):])
		if err != nil {
			return nil, fmt.Errorf("moving aside %s left by an interrupted run: %w", filepath.Join(opts.SnapDir, s), err)
		}
		res.Cleaned = append(res.Cleaned, moved)
	}
	if _, err := os.Lstat(res.Path); err == nil {
		return nil, fmt.Errorf("snapshot %s already exists", res.Path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("snapshot %s: %w", res.Path, err)
	}

	building := buildingPrefix + opts.Name
	if err := unix.Mkdirat(snapfd, building, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Join(opts.SnapDir, building), err)
	}
	r := &run{
		opts:     opts,
		building: filepath.Join(opts.SnapDir, building),
		res:      res,
		hashCh:   make(chan Entry, 4*opts.Workers),
		emitCh:   make(chan []Entry, 4*opts.Workers),
	}
	r.qcond = sync.NewCond(&r.qmu)
	err = r.walk(ctx, srcfd)
	if err == nil {
		err = r.commit(snapfd, building)
	}
	r.closeFds()
	if err != nil {
		// Never leave a visible partial snapshot; Purge removes the rest.
		if _, merr := moveAside(snapfd, building, opts.Name); merr != nil {
			err = errors.Join(err, fmt.Errorf("moving aside %s: %w", r.building, merr))
		}
		return nil, fmt.Errorf("snapshot %s of %s: %w", opts.Name, opts.Source, err)
	}
	res.Dirs = r.dirs.Load()
	res.Vanished = r.vanished.Load()
	res.Elapsed = time.Since(start)
	return res, nil
}

// within reports whether dir is root or lies below it, symlinks resolved.
func within(dir, root string) (bool, error) {
	d, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false, fmt.Errorf("resolving %s: %w", dir, err)
	}
	r, err := filepath.EvalSymlinks(root)
	if err != nil {
		return false, fmt.Errorf("resolving %s: %w", root, err)
	}
	rel, err := filepath.Rel(r, d)
	if err != nil {
		return false, nil
	}
	return rel == "." || (rel != ".." && !strings.HasPrefix(rel, "../")), nil
}

// moveAside renames snapdir's entry from to .deleting-{base}, or to
// .deleting-{base}.N if that exists, and returns the new name.
func moveAside(snapfd int, from, base string) (string, error) {
	for i := 1; ; i++ {
		to := deletingPrefix + base
		if i > 1 {
			to = fmt.Sprintf("%s.%d", to, i)
		}
		err := unix.Renameat2(snapfd, from, snapfd, to, unix.RENAME_NOREPLACE)
		if err == nil {
			return to, unix.Fsync(snapfd)
		}
		if !errors.Is(err, unix.EEXIST) || i > 1000 {
			return "", err
		}
	}
}

// dirNode is one directory of the tree being built. pending counts its own
// listing plus its unfinished subdirectories; at zero its attributes are
// set, which must come after all its entries exist.
type dirNode struct {
	parent  *dirNode
	rel     string // relative to the source root and to the snapshot root
	rootfd  int    // the tree it is read from: Source, or a Keep directory
	srcRel  string // relative to rootfd
	where   string // its absolute path, for errors
	pending atomic.Int32
	gone    bool // vanished from the source before it was listed
	st      unix.Stat_t
}

type run struct {
	opts     Options
	building string // absolute path of the tree being built
	dstRoot  int
	res      *Result

	mu      sync.Mutex // guards extraFd and res.Kept
	extraFd []int

	qmu    sync.Mutex
	qcond  *sync.Cond
	queue  []*dirNode
	active int
	err    error
	failed atomic.Bool

	hashCh chan Entry
	emitCh chan []Entry

	dirs, vanished atomic.Int64
}

func (r *run) fail(err error) {
	r.qmu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.failed.Store(true)
	r.qmu.Unlock()
	r.qcond.Broadcast()
}

func (r *run) push(n *dirNode) {
	r.qmu.Lock()
	r.queue = append(r.queue, n)
	r.qmu.Unlock()
	r.qcond.Signal()
}

func (r *run) closeFds() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, fd := range r.extraFd {
		unix.Close(fd)
	}
	r.extraFd = nil
	if r.dstRoot > 0 {
		unix.Close(r.dstRoot)
		r.dstRoot = 0
	}
}

// walk links the whole tree and produces the manifest.
func (r *run) walk(ctx context.Context, srcfd int) error {
	fd, err := unix.Open(r.building, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", r.building, err)
	}
	r.dstRoot = fd
	stop := context.AfterFunc(ctx, func() { r.fail(ctx.Err()) })
	defer stop()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	root := &dirNode{rootfd: srcfd, srcRel: ".", where: r.opts.Source}
	root.pending.Store(1)
	r.queue = []*dirNode{root}

	var emitWG, hashWG, dirWG sync.WaitGroup
	emitWG.Add(1)
	go func() { defer emitWG.Done(); r.emitter() }()
	for range r.opts.Workers {
		hashWG.Add(1)
		go func() { defer hashWG.Done(); r.hasher() }()
		dirWG.Add(1)
		go func() { defer dirWG.Done(); r.linker() }()
	}
	dirWG.Wait()
	close(r.hashCh)
	hashWG.Wait()
	close(r.emitCh)
	emitWG.Wait()

	r.qmu.Lock()
	defer r.qmu.Unlock()
	// AfterFunc runs fail in its own goroutine, possibly after the last
	// worker finished: a cancel during the walk must still end it.
	if r.err == nil && ctx.Err() != nil {
		r.err = ctx.Err()
	}
	if r.err == nil && root.pending.Load() != 0 {
		r.err = errors.New("internal error: walk ended with unfinished directories")
	}
	return r.err
}

// commit makes the finished tree durable and visible.
func (r *run) commit(snapfd int, building string) error {
	t := time.Now()
	if err := unix.Syncfs(r.dstRoot); err != nil {
		return fmt.Errorf("syncfs %s: %w", r.building, err)
	}
	r.res.Synced = time.Since(t)
	if err := unix.Renameat2(snapfd, building, snapfd, r.opts.Name, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", r.building, r.res.Path, err)
	}
	if err := unix.Fsync(snapfd); err != nil {
		return fmt.Errorf("fsync %s: %w", r.opts.SnapDir, err)
	}
	return nil
}

// linker lists and links directories until the tree is done or failed.
func (r *run) linker() {
	buf := make([]byte, 32<<10)
	for {
		r.qmu.Lock()
		for len(r.queue) == 0 && r.active > 0 && !r.failed.Load() {
			r.qcond.Wait()
		}
		if r.failed.Load() || len(r.queue) == 0 {
			r.qmu.Unlock()
			r.qcond.Broadcast()
			return
		}
		// Depth first (LIFO) keeps few directories pending at once.
		n := r.queue[len(r.queue)-1]
		r.queue = r.queue[:len(r.queue)-1]
		r.active++
		r.qmu.Unlock()

		if err := r.linkDir(n, buf); err != nil {
			r.fail(err)
		} else if !r.failed.Load() {
			r.done(n)
		}

		r.qmu.Lock()
		r.active--
		last := r.active == 0 && len(r.queue) == 0
		r.qmu.Unlock()
		if last {
			r.qcond.Broadcast()
		}
	}
}

// done finishes n's share of the work and, for every directory whose
// subtree is now complete, sets its attributes.
func (r *run) done(n *dirNode) {
	for ; n != nil; n = n.parent {
		if n.pending.Add(-1) != 0 {
			return
		}
		if err := r.finish(n); err != nil {
			r.fail(err)
			return
		}
	}
}

// finish gives a completed directory its source's owner, mode and times.
// The mode comes after the owner, which would clear setgid.
func (r *run) finish(n *dirNode) error {
	if n.gone {
		return nil
	}
	path := r.building
	if n.rel != "" {
		path += "/" + n.rel
	}
	if err := unix.Fchownat(unix.AT_FDCWD, path, int(n.st.Uid), int(n.st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, path, n.st.Mode&0o7777, 0); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	ts := []unix.Timespec{n.st.Atim, n.st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of %s: %w", path, err)
	}
	return nil
}

func openBeneath(dirfd int, rel string, flags uint64) (int, error) {
	return unix.Openat2(dirfd, rel, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: resolveBeneath,
	})
}

func join(dir, name string) string {
	if dir == "" || dir == "." {
		return name
	}
	return dir + "/" + name
}

type dirent struct {
	name  string
	dtype uint8
}

// readDir lists fd with getdents64, keeping d_type so that no entry needs
// a stat just to tell directories from the rest.
func readDir(fd int, buf []byte) ([]dirent, error) {
	var out []dirent
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		for off := 0; off < n; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			reclen := int(*(*uint16)(unsafe.Pointer(&buf[off+16])))
			dtype := buf[off+18]
			name := buf[off+19 : off+reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			off += reclen
			if s := string(name); s != "." && s != ".." {
				out = append(out, dirent{s, dtype})
			}
		}
	}
}

// linkDir lists one directory, links its non-directories into the
// snapshot, creates its subdirectories there and queues them.
func (r *run) linkDir(n *dirNode, buf []byte) error {
	srcfd, err := openBeneath(n.rootfd, n.srcRel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		if n.parent != nil && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)) {
			// Removed, or replaced by a file or a symlink (ELOOP: never
			// followed), since its parent was listed: like a file that
			// vanished, it is not in this snapshot.
			r.vanished.Add(1)
			n.gone = true
			if err := unix.Unlinkat(r.dstRoot, n.rel, unix.AT_REMOVEDIR); err != nil {
				return fmt.Errorf("removing %s from the snapshot: %w", n.rel, err)
			}
			return nil
		}
		if errors.Is(err, unix.EXDEV) {
			return fmt.Errorf("directory %s is on another filesystem (a mount point inside the tier?): %w", n.where, err)
		}
		return fmt.Errorf("opening directory %s: %w", n.where, err)
	}
	defer unix.Close(srcfd)
	if err := unix.Fstat(srcfd, &n.st); err != nil {
		return fmt.Errorf("stat %s: %w", n.where, err)
	}
	dstRel := n.rel
	if dstRel == "" {
		dstRel = "."
	}
	dstfd, err := openBeneath(r.dstRoot, dstRel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("opening %s in the snapshot: %w", dstRel, err)
	}
	defer unix.Close(dstfd)
	r.dirs.Add(1)
	if err := copyXattrs(srcfd, dstfd); err != nil {
		return fmt.Errorf("copying extended attributes of %s: %w", n.where, err)
	}

	ents, err := readDir(srcfd, buf)
	if err != nil {
		return fmt.Errorf("reading directory %s: %w", n.where, err)
	}
	if r.opts.afterList != nil {
		r.opts.afterList(n.rel)
	}
	var batch []Entry
	for _, de := range ents {
		if r.failed.Load() {
			return nil
		}
		isDir := de.dtype == unix.DT_DIR
		if de.dtype == unix.DT_UNKNOWN {
			var st unix.Stat_t
			if err := unix.Fstatat(srcfd, de.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					r.vanished.Add(1)
					continue
				}
				return fmt.Errorf("stat %s: %w", filepath.Join(n.where, de.name), err)
			}
			isDir = st.Mode&unix.S_IFMT == unix.S_IFDIR
		}
		if isDir {
			if err := r.addDir(n, dstfd, de.name); err != nil {
				return err
			}
			continue
		}
		e, ok, err := r.linkFile(n, srcfd, dstfd, de.name)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if e.Mode.IsRegular() && e.SHA256 == "" {
			r.hashCh <- e
			continue
		}
		batch = append(batch, e)
		if len(batch) >= 256 {
			r.emitCh <- batch
			batch = nil
		}
	}
	if len(batch) > 0 {
		r.emitCh <- batch
	}
	return nil
}

// addDir creates subdirectory name of n in the snapshot and queues it, or
// does what Options.Keep says instead.
func (r *run) addDir(n *dirNode, dstfd int, name string) error {
	child := &dirNode{parent: n, rel: join(n.rel, name), rootfd: n.rootfd, srcRel: join(n.srcRel, name), where: filepath.Join(n.where, name)}
	if r.opts.Keep != nil {
		if from, ok := r.opts.Keep(child.rel); ok {
			r.mu.Lock()
			r.res.Kept = append(r.res.Kept, KeptDir{Path: child.rel, From: from})
			r.mu.Unlock()
			if from == "" {
				return nil
			}
			fd, err := unix.Open(from, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("taking %s from %s: %w", child.rel, from, err)
			}
			r.mu.Lock()
			r.extraFd = append(r.extraFd, fd)
			r.mu.Unlock()
			child.rootfd, child.srcRel, child.where = fd, ".", from
		}
	}
	if err := unix.Mkdirat(dstfd, name, 0o700); err != nil {
		return fmt.Errorf("creating %s in the snapshot: %w", child.rel, err)
	}
	child.pending.Store(1)
	n.pending.Add(1)
	r.push(child)
	return nil
}

// linkFile hard-links one non-directory (a symlink is linked itself:
// linkat without AT_SYMLINK_FOLLOW) and describes it from the snapshot's
// side, so the entry is what the snapshot holds even if the source entry is
// replaced meanwhile. ok is false if it vanished.
func (r *run) linkFile(n *dirNode, srcfd, dstfd int, name string) (e Entry, ok bool, err error) {
	rel := join(n.rel, name)
	if err := unix.Linkat(srcfd, name, dstfd, name, 0); err != nil {
		if errors.Is(err, unix.ENOENT) {
			r.vanished.Add(1)
			return e, false, nil
		}
		var st unix.Stat_t
		if errors.Is(err, unix.EPERM) && unix.Fstatat(srcfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			// Replaced by a directory since it was listed.
			return e, false, r.addDir(n, dstfd, name)
		}
		return e, false, fmt.Errorf("linking %s: %w", filepath.Join(n.where, name), err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dstfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return e, false, fmt.Errorf("stat %s in the snapshot: %w", rel, err)
	}
	e = entryFromStat(rel, &st)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if r.opts.Hash != nil {
			if sum, ok := r.opts.Hash(rel, e.Size, st.Mtim.Nano()); ok {
				e.SHA256, e.Reused = sum, true
			}
		}
	case unix.S_IFLNK:
		b := make([]byte, st.Size+1)
		k, err := unix.Readlinkat(dstfd, name, b)
		if err != nil {
			return e, false, fmt.Errorf("reading symlink %s: %w", rel, err)
		}
		e.Target = string(b[:k])
	}
	return e, true, nil
}

func entryFromStat(rel string, st *unix.Stat_t) Entry {
	return Entry{
		Path:  rel,
		Mode:  fileMode(st.Mode),
		Size:  st.Size,
		MTime: time.Unix(st.Mtim.Unix()),
		UID:   st.Uid,
		GID:   st.Gid,
	}
}

// fileMode converts st_mode to fs.FileMode the way os.Lstat does.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// copyXattrs copies a directory's extended attributes (POSIX ACLs
// included); files share theirs through the hard link.
func copyXattrs(srcfd, dstfd int) error {
	sz, err := unix.Flistxattr(srcfd, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return err
	}
	if sz == 0 {
		return nil
	}
	list := make([]byte, sz)
	sz, err = unix.Flistxattr(srcfd, list)
	if err != nil {
		return err
	}
	list = list[:sz]
	for len(list) > 0 {
		i := 0
		for i < len(list) && list[i] != 0 {
			i++
		}
		name := string(list[:i])
		list = list[min(i+1, len(list)):]
		if name == "" {
			continue
		}
		vsz, err := unix.Fgetxattr(srcfd, name, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		val := make([]byte, vsz)
		if vsz > 0 {
			if vsz, err = unix.Fgetxattr(srcfd, name, val); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		if err := unix.Fsetxattr(dstfd, name, val[:vsz], 0); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// hasher reads and hashes the files no hash was known for. It reads the
// snapshot's link, whose content no writer through the mount can change.
func (r *run) hasher() {
	buf := make([]byte, 256<<10)
	var batch []Entry
	for e := range r.hashCh {
		if r.failed.Load() {
			continue
		}
		if err := r.hashEntry(&e, buf); err != nil {
			r.fail(err)
			continue
		}
		batch = append(batch, e)
		if len(batch) >= 64 {
			r.emitCh <- batch
			batch = nil
		}
	}
	if len(batch) > 0 {
		r.emitCh <- batch
	}
}

// hashEntry hashes e's file. A file whose size or mtime changes while it is
// read is read again, up to three times; then it is left without a hash.
func (r *run) hashEntry(e *Entry, buf []byte) error {
	flags := uint64(unix.O_RDONLY | unix.O_NOATIME)
	fd, err := openBeneath(r.dstRoot, e.Path, flags)
	if errors.Is(err, unix.EPERM) {
		fd, err = openBeneath(r.dstRoot, e.Path, flags&^unix.O_NOATIME)
	}
	if err != nil {
		return fmt.Errorf("opening %s in the snapshot to hash it: %w", e.Path, err)
	}
	defer unix.Close(fd)
	for range 3 {
		var before, after unix.Stat_t
		if err := unix.Fstat(fd, &before); err != nil {
			return fmt.Errorf("stat %s: %w", e.Path, err)
		}
		if r.opts.beforeRead != nil {
			r.opts.beforeRead(e.Path)
		}
		h := sha256.New()
		var off int64
		for {
			if r.failed.Load() {
				return nil
			}
			k, err := unix.Pread(fd, buf, off)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("reading %s in the snapshot: %w", e.Path, err)
			}
			if k == 0 {
				break
			}
			h.Write(buf[:k])
			off += int64(k)
		}
		if err := unix.Fstat(fd, &after); err != nil {
			return fmt.Errorf("stat %s: %w", e.Path, err)
		}
		if before.Size == after.Size && before.Mtim == after.Mtim && off == after.Size {
			*e = entryFromStat(e.Path, &after)
			e.SHA256 = hex.EncodeToString(h.Sum(nil))
			return nil
		}
	}
	e.SHA256 = ""
	return nil
}

// emitter counts the entries and hands them to Options.Emit in batches.
func (r *run) emitter() {
	res := r.res
	var out []Entry
	flush := func() {
		if len(out) == 0 || r.failed.Load() {
			return
		}
		if r.opts.Emit != nil {
			if err := r.opts.Emit(out); err != nil {
				r.fail(fmt.Errorf("recording the manifest: %w", err))
			}
		}
		out = make([]Entry, 0, r.opts.BatchSize)
	}
	for b := range r.emitCh {
		if r.failed.Load() {
			continue
		}
		for i := range b {
			e := &b[i]
			switch {
			case e.Mode.IsRegular():
				res.Files++
				res.Bytes += e.Size
				switch {
				case e.Reused:
					res.Reused++
				case e.SHA256 != "":
					res.Hashed++
					res.HashedBytes += e.Size
				default:
					res.Unhashed++
				}
			case e.Mode&fs.ModeSymlink != 0:
				res.Symlinks++
			default:
				res.Others++
			}
		}
		out = append(out, b...)
		if len(out) >= r.opts.BatchSize {
			flush()
		}
	}
	flush()
}
