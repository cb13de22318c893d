package roview

import (
	"errors"
	"os"
	"path"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/softxs/v2backup/tiers"
	"golang.org/x/sys/unix"
)

// resolveFlags confine every lookup to the snapshot directory: no "..",
// no symlink (not even an intermediate one), no crossing into another mount.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS |
	unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// snapRoot is a directory of snapshots, e.g. {partition}/snapshots/local.
// Its descriptor is opened on first use, so a view can be created before
// the first snapshot exists.
type snapRoot struct {
	path string

	mu sync.Mutex
	fd int // O_PATH descriptor, -1 until opened
}

func newSnapRoot(dir string) *snapRoot { return &snapRoot{path: dir, fd: -1} }

// rootFd returns the descriptor of the snapshot directory, opening it if
// needed. The configured path itself may contain symlinks: it is the
// administrator's choice, not data inside a snapshot.
func (r *snapRoot) rootFd() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd >= 0 {
		return r.fd, nil
	}
	fd, err := unix.Open(r.path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open snapshot directory", Path: r.path, Err: err}
	}
	r.fd = fd
	return fd, nil
}

// close releases the descriptor; the next use opens it again.
func (r *snapRoot) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

func (r *snapRoot) full(rel string) string { return path.Join(r.path, rel) }

// open opens rel (relative to the snapshot directory, "" for itself)
// confined by resolveFlags. flags should include O_NOFOLLOW so a final
// symlink is opened as itself (with O_PATH) or refused.
func (r *snapRoot) open(rel string, flags int) (int, error) {
	root, err := r.rootFd()
	if err != nil {
		return -1, err
	}
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveFlags}
	for {
		fd, err := unix.Openat2(root, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue // EAGAIN: a concurrent rename elsewhere; retry as the man page says
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: r.full(rel), Err: err}
		}
		return fd, nil
	}
}

// stat is lstat(2) of rel, confined.
func (r *snapRoot) stat(rel string) (syscall.Stat_t, error) {
	var st syscall.Stat_t
	fd, err := r.open(rel, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	if err := syscall.Fstat(fd, &st); err != nil {
		return st, &os.PathError{Op: "fstat", Path: r.full(rel), Err: err}
	}
	return st, nil
}

// isDir reports whether rel exists and is a real directory (not a symlink).
func (r *snapRoot) isDir(rel string) (bool, error) {
	st, err := r.stat(rel)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return st.Mode&syscall.S_IFMT == syscall.S_IFDIR, nil
}

// dirent is one directory entry of the backing tree.
type dirent struct {
	name string
	ino  uint64
	mode uint32 // S_IFMT bits only; 0 if the filesystem did not say
}

// readDirFd lists an open directory, without "." and "..", sorted by name.
func readDirFd(fd int, where string) ([]dirent, error) {
	var out []dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "getdents", Path: where, Err: err}
		}
		if n <= 0 {
			break
		}
		for b := buf[:n]; len(b) > 0; {
			d, used := parseDirent(b)
			b = b[used:]
			if d.name == "." || d.name == ".." || d.name == "" {
				continue
			}
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// readDir lists rel, confined; see readDirFd.
func (r *snapRoot) readDir(rel string) ([]dirent, error) {
	fd, err := r.open(rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return readDirFd(fd, r.full(rel))
}

// Snapshots lists the complete snapshots in snapDir, oldest first: real
// directories (not symlinks) whose name is a snapshot name
// (tiers.SnapshotLayout). Temporary trees (.building-*, .deleting-*), the
// latest symlink and anything else are left out. A missing snapDir has no
// snapshots.
func Snapshots(snapDir string) ([]string, error) {
	r := newSnapRoot(snapDir)
	defer r.close()
	return r.snapshots()
}

func (r *snapRoot) snapshots() ([]string, error) {
	ents, err := r.readDir("")
	if errors.Is(err, unix.ENOENT) {
		r.close() // the directory may be created later: reopen then
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if !isSnapshotName(e.name) {
			continue
		}
		mode := e.mode
		if mode == 0 {
			st, err := r.stat(e.name)
			if errors.Is(err, unix.ENOENT) {
				continue // pruned while we listed
			}
			if err != nil {
				return nil, err
			}
			mode = st.Mode & syscall.S_IFMT
		}
		if mode == syscall.S_IFDIR {
			names = append(names, e.name)
		}
	}
	return names, nil // already sorted; the layout sorts by time
}

// newest is the latest complete snapshot, "" if there is none.
func (r *snapRoot) newest() (string, error) {
	names, err := r.snapshots()
	if err != nil || len(names) == 0 {
		return "", err
	}
	return names[len(names)-1], nil
}

func isSnapshotName(name string) bool {
	_, err := tiers.ParseSnapshotName(name, time.UTC)
	return err == nil
}

// parseDirent decodes one linux_dirent64 and returns the bytes it used.
func parseDirent(b []byte) (dirent, int) {
	var e fuse.DirEntry
	n := e.Parse(b)
	return dirent{name: e.Name, ino: e.Ino, mode: e.Mode & syscall.S_IFMT}, n
}
