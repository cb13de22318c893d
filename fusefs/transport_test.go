package fusefs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/softxs/v2backup/fusefs/internal/uring"
)

// TestTransports copies a tree in with cp -a and rsync -a, and tries an
// escape, through a VM mount served through io_uring and through
// /dev/fuse; the other tests of this package use whichever the kernel
// offers (io_uring under make test).
func TestTransports(t *testing.T) {
	if _, err := os.Stat(uring.ParamPath); errors.Is(err, os.ErrNotExist) {
		t.Skip("this kernel has no FUSE over io_uring")
	}
	restore, err := uring.Enable()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restore)
	src := t.TempDir()
	for i, name := range []string{"a/x.sql", "a/b/y.sql", "z.tar"} {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o750)
		if err := os.WriteFile(p, []byte(name+string(rune('0'+i))), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("a/x.sql", filepath.Join(src, "link"))
	for _, tc := range []struct {
		name    string
		noURing bool
		want    string
	}{{"io_uring", false, uring.TransportURing}, {"dev-fuse", true, uring.TransportDev}} {
		t.Run(tc.name, func(t *testing.T) {
			tm := mountT(t, "web", testApps, func(c *Config) { c.NoURing = tc.noURing })
			if got := tm.m.Transport(); got != tc.want {
				t.Fatalf("transport %q, want %q", got, tc.want)
			}
			app := tm.p("demo.softxs.ch/hydro")
			for _, cmd := range [][]string{
				{"cp", "-a", src, filepath.Join(app, "cp")},
				{"rsync", "-a", src + "/", filepath.Join(app, "rsync") + "/"},
				{"diff", "-r", "--no-dereference", src, tm.bp("demo.softxs.ch/hydro/cp")},
				{"diff", "-r", "--no-dereference", src, tm.bp("demo.softxs.ch/hydro/rsync")},
			} {
				if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
					t.Fatalf("%v: %v\n%s", cmd, err, out)
				}
			}
			err := os.Symlink("../../../../etc/passwd", filepath.Join(app, "escape"))
			wantErrno(t, "symlink out of the tree", err, syscall.EACCES)
			if n := tm.m.RingRequests(); (n > 0) != !tc.noURing {
				t.Fatalf("%d requests through io_uring with transport %s", n, tc.want)
			}
		})
	}
}
