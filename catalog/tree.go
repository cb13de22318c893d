package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// tree is a directory whose files are reached without ever following a
// symlink, at any depth: not the last component (O_NOFOLLOW), nor a parent
// (openat2 RESOLVE_NO_SYMLINKS, or a component-wise walk where openat2 is
// missing), nor ".." out of the tree (RESOLVE_BENEATH; paths are checked).
type tree struct {
	root string
	fd   int // O_PATH directory

	midHash func(rel string) // tests only: runs between reading and the second fstat
}

func openTree(root string) (*tree, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open tree", Path: root, Err: err}
	}
	return &tree{root: root, fd: fd}, nil
}

func (t *tree) close() error { return unix.Close(t.fd) }

// noOpenat2 is set once openat2 turns out to be missing (Linux < 5.6).
var noOpenat2 atomic.Bool

// openDir opens directory rel ("" or "." = the root) as an O_PATH fd.
func (t *tree) openDir(rel string) (int, error) {
	if rel == "" || rel == "." {
		return unix.Dup(t.fd)
	}
	if !noOpenat2.Load() {
		fd, err := unix.Openat2(t.fd, rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != unix.ENOSYS {
			return fd, err
		}
		noOpenat2.Store(true)
	}
	fd, err := unix.Dup(t.fd)
	if err != nil {
		return -1, err
	}
	for _, c := range strings.Split(rel, "/") {
		if c == ".." {
			unix.Close(fd)
			return -1, unix.EXDEV
		}
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// fileState is what tells two versions of a file apart without reading it.
type fileState struct {
	size    int64
	mtimeNS int64
	ino     uint64
}

func stateOf(st *unix.Stat_t) fileState {
	return fileState{size: st.Size, mtimeNS: st.Mtim.Nano(), ino: st.Ino}
}

// errNotRegular: the path exists but is not a regular file (a directory, a
// symlink, a device...), or lies below a symlink. The catalog records
// regular files only, so for it the file is gone.
var errNotRegular = errors.New("not a regular file")

// gone reports whether err means "there is no regular file at this path".
func gone(err error) bool {
	return errors.Is(err, errNotRegular) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) ||
		errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV)
}

// lstat returns the state of regular file rel.
func (t *tree) lstat(rel string) (fileState, error) {
	dir, name := path.Split(rel)
	dfd, err := t.openDir(strings.TrimSuffix(dir, "/"))
	if err != nil {
		return fileState{}, &os.PathError{Op: "lstat", Path: path.Join(t.root, rel), Err: err}
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fileState{}, &os.PathError{Op: "lstat", Path: path.Join(t.root, rel), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fileState{}, &os.PathError{Op: "lstat", Path: path.Join(t.root, rel), Err: errNotRegular}
	}
	return stateOf(&st), nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

var hashPool = sync.Pool{New: func() any { return sha256.New() }}

// hashFile hashes regular file rel. It checks the type with lstat before
// opening, so that no device or FIFO is ever opened, and compares fstat
// before and after reading: changed reports a file modified meanwhile (the
// hash is then of no particular version). st is the state before reading.
func (t *tree) hashFile(rel string) (st fileState, sum string, changed bool, err error) {
	full := path.Join(t.root, rel)
	dir, name := path.Split(rel)
	dfd, err := t.openDir(strings.TrimSuffix(dir, "/"))
	if err != nil {
		return st, "", false, &os.PathError{Op: "open", Path: full, Err: err}
	}
	defer unix.Close(dfd)
	var pre unix.Stat_t
	if err := unix.Fstatat(dfd, name, &pre, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, "", false, &os.PathError{Op: "lstat", Path: full, Err: err}
	}
	if pre.Mode&unix.S_IFMT != unix.S_IFREG {
		return st, "", false, &os.PathError{Op: "open", Path: full, Err: errNotRegular}
	}
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, "", false, &os.PathError{Op: "open", Path: full, Err: err}
	}
	f := os.NewFile(uintptr(fd), full)
	defer f.Close()
	var before unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		return st, "", false, &os.PathError{Op: "fstat", Path: full, Err: err}
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG || before.Ino != pre.Ino {
		// Replaced between lstat and open: report it as changed.
		return stateOf(&before), "", true, nil
	}
	st = stateOf(&before)
	h := hashPool.Get().(hash.Hash)
	defer hashPool.Put(h)
	h.Reset()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	if _, err := io.CopyBuffer(h, onlyReader{f}, *bp); err != nil {
		return st, "", false, fmt.Errorf("hash %s: %w", full, err)
	}
	if t.midHash != nil {
		t.midHash(rel)
	}
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil {
		return st, "", false, &os.PathError{Op: "fstat", Path: full, Err: err}
	}
	if stateOf(&after) != st {
		return st, "", true, nil
	}
	return st, hex.EncodeToString(h.Sum(nil)), false, nil
}

// onlyReader hides *os.File's WriterTo, so CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }
