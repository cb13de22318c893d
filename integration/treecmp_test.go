package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// entry is what a user would compare between two trees.
type entry struct {
	mode     fs.FileMode
	uid, gid uint32
	mtime    int64 // nanoseconds; directories and symlinks included
	size     int64
	sha      string // regular files
	link     string // symlinks
	xattrs   string // user.* xattrs, sorted "k=v;"
}

// snapshotTree describes every entry under root by relative path, without
// following symlinks.
func snapshotTree(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entry{mode: fs.FileMode(st.Mode & 0o7777), uid: st.Uid, gid: st.Gid, mtime: st.Mtim.Nano()}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			e.mode |= 0
			e.size = st.Size
			e.sha = hashFile(t, p)
		case syscall.S_IFLNK:
			e.mode |= fs.ModeSymlink
			e.link, _ = os.Readlink(p)
		case syscall.S_IFDIR:
			e.mode |= fs.ModeDir
		default:
			e.mode |= fs.ModeIrregular
		}
		e.xattrs = userXattrs(p)
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	return out
}

func hashFile(t *testing.T, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func userXattrs(p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var names []string
	for _, k := range strings.Split(string(buf[:n]), "\x00") {
		if strings.HasPrefix(k, "user.") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		v := make([]byte, 64<<10)
		m, _ := unix.Lgetxattr(p, k, v)
		if m < 0 {
			m = 0
		}
		fmt.Fprintf(&b, "%s=%q;", k, v[:m])
	}
	return b.String()
}

// Differences compareTrees may be told to ignore.
const (
	ignoreDirMtime = "dir-mtime" // tar sets a directory's mtime before filling it
)

// compareTrees fails the test for each difference between two trees.
func compareTrees(t *testing.T, what string, want, got map[string]entry, ignore ...string) {
	t.Helper()
	skip := map[string]bool{}
	for _, i := range ignore {
		skip[i] = true
	}
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			diffs = append(diffs, "missing "+k)
			continue
		}
		if skip[ignoreDirMtime] && w.mode.IsDir() {
			w.mtime, g.mtime = 0, 0
		}
		if w != g {
			diffs = append(diffs, fmt.Sprintf("%s: want %+v, got %+v", k, w, g))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, "extra "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		if len(diffs) > 20 {
			diffs = append(diffs[:20], fmt.Sprintf("... and %d more", len(diffs)-20))
		}
		t.Errorf("%s: %d differences:\n%s", what, len(diffs), strings.Join(diffs, "\n"))
	}
}

// makeSourceTree copies part of the Go source tree to dir and gives it what
// a real backup tree has: several owners, odd modes, symlinks inside the
// tree, an empty file, xattrs. It returns the tree's root.
func makeSourceTree(t *testing.T, dir string, subset string) string {
	t.Helper()
	src := filepath.Join(dir, "src")
	sh(t, dir, fmt.Sprintf("mkdir -p %[1]s && cp -a /usr/local/go/src/%[2]s %[1]s/ ", src, subset))
	sh(t, src, `
		mkdir -p extra/deep/er && : > extra/empty && printf 'hello\n' > extra/deep/er/file
		chown -R 1234:5678 extra && chown 4321:8765 extra/deep/er/file
		chmod 0600 extra/deep/er/file && chmod 0750 extra/deep && chmod 4755 extra/empty
		ln -s deep/er/file extra/rel-link && ln -s ../extra extra/deep/up-link
		setfattr -n user.v2backup.test -v hello extra/deep/er/file 2>/dev/null || true
		touch -h -d '2001-02-03 04:05:06.123456789' extra/rel-link extra/deep/er/file
		touch -d '2001-02-03 04:05:06' extra/deep
	`)
	return src
}
