package xattrat

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// kernelHasAt reports whether the running kernel is 6.13 or later.
func kernelHasAt(t *testing.T) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	rel := unix.ByteSliceToString(u.Release[:])
	for i, f := range strings.FieldsFunc(rel, func(r rune) bool { return r < '0' || r > '9' })[:2] {
		n := 0
		for _, c := range f {
			n = n*10 + int(c-'0')
		}
		if i == 0 {
			major = n
		} else {
			minor = n
		}
	}
	return major > 6 || major == 6 && minor >= 13
}

// exercise runs every call on a file and a symlink to it in a fresh
// directory, through whichever path noAt selects.
func exercise(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("file", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)

	if err := Set(dfd, "file", "user.color", []byte("blue"), 0); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			t.Skipf("%s has no user xattrs", dir)
		}
		t.Fatalf("Set: %v", err)
	}
	if err := Set(dfd, "file", "user.color", []byte("red"), unix.XATTR_CREATE); !errors.Is(err, unix.EEXIST) {
		t.Errorf("Set with XATTR_CREATE on an existing attribute: %v, want EEXIST", err)
	}
	if n, err := Get(dfd, "file", "user.color", nil); err != nil || n != 4 {
		t.Errorf("Get size: %d, %v; want 4", n, err)
	}
	buf := make([]byte, 16)
	if n, err := Get(dfd, "file", "user.color", buf); err != nil || string(buf[:n]) != "blue" {
		t.Errorf("Get: %q, %v; want blue", buf[:n], err)
	}
	if _, err := Get(dfd, "file", "user.color", buf[:2]); !errors.Is(err, unix.ERANGE) {
		t.Errorf("Get into 2 bytes: %v, want ERANGE", err)
	}
	if n, err := List(dfd, "file", buf); err != nil || !slices.Contains(strings.Split(string(buf[:n]), "\x00"), "user.color") {
		t.Errorf("List: %q, %v; want user.color in it", buf[:n], err)
	}
	if n, err := List(dfd, "file", nil); err != nil || n < len("user.color\x00") {
		t.Errorf("List size: %d, %v", n, err)
	}

	// The final symlink is the entry itself, never its target.
	if _, err := Get(dfd, "link", "user.color", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("Get through the symlink: %v, want ENODATA (the link has none; its target has)", err)
	}
	if err := Set(dfd, "link", "user.color", []byte("green"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("Set on the symlink: %v, want EPERM (no user xattrs on symlinks)", err)
	}
	if n, err := Get(dfd, "file", "user.color", buf); err != nil || string(buf[:n]) != "blue" {
		t.Errorf("after Set on the symlink, the target's attribute is %q, %v; want blue", buf[:n], err)
	}

	if err := Remove(dfd, "file", "user.color"); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if _, err := Get(dfd, "file", "user.color", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("Get after Remove: %v, want ENODATA", err)
	}
	if err := Remove(dfd, "file", "user.color"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("Remove of a missing attribute: %v, want ENODATA", err)
	}
	if _, err := Get(dfd, "missing", "user.color", buf); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Get of a missing entry: %v, want ENOENT", err)
	}
	if _, err := List(dfd, "missing", buf); !errors.Is(err, unix.ENOENT) {
		t.Errorf("List of a missing entry: %v, want ENOENT", err)
	}
	if err := Set(dfd, "bad\x00name", "user.color", nil, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Set on a name with NUL: %v, want EINVAL", err)
	}
}

func TestAtCalls(t *testing.T) {
	noAt.Store(false)
	exercise(t)
	if kernelHasAt(t) && noAt.Load() {
		t.Error("the kernel is 6.13 or later, but the calls fell back to /proc")
	}
}

// TestProcFallback runs the same checks as a kernel without the *xattrat
// calls would.
func TestProcFallback(t *testing.T) {
	noAt.Store(true)
	t.Cleanup(func() { noAt.Store(false) })
	exercise(t)
}
