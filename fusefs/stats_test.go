package fusefs

import (
	"errors"
	"io/fs"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// opCount returns how many requests of op the mount has answered.
func opCount(m *Mount, op string) uint64 {
	for _, s := range m.Stats() {
		if s.Op == op {
			return s.Count
		}
	}
	return 0
}

// waitOps polls until the mount has answered at least n requests of op
// (RELEASE reaches the daemon after close(2) has returned).
func waitOps(t *testing.T, m *Mount, op string, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); opCount(m, op) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d %s requests, want at least %d; stats %+v", opCount(m, op), op, n, m.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRoundTrips counts the requests the kernel sends for what cp -a and
// rsync do to every file: a close costs no FLUSH, and the attributes a
// chmod or utimes returned are cached, not asked for again.
func TestRoundTrips(t *testing.T) {
	for _, noPT := range []bool{false, true} {
		name := "passthrough"
		if noPT {
			name = "daemon-io"
		}
		t.Run(name, func(t *testing.T) {
			tm := mountT(t, "web", testApps, func(c *Config) { c.Stats = true; c.NoPassthrough = noPT })
			m := tm.m
			dir := tm.p("demo.softxs.ch/hydro")
			f := dir + "/a.txt"
			if err := os.WriteFile(f, []byte("hello"), 0o644); err != nil {
				t.Fatal(err)
			}
			waitOps(t, m, "RELEASE", 1)
			if n := opCount(m, "CREATE"); n != 1 {
				t.Errorf("%d CREATE requests for one file, want 1", n)
			}
			if n := opCount(m, "FLUSH"); n != 0 {
				t.Errorf("%d FLUSH requests: handles should be opened with FOPEN_NOFLUSH", n)
			}
			// The create changed the directory: refresh its attributes
			// (default_permissions needs them for the path walk).
			if _, err := os.Stat(dir); err != nil {
				t.Fatal(err)
			}
			mtime := time.Unix(1700000000, 0)
			for _, change := range []func() error{
				func() error { return os.Chmod(f, 0o600) },
				func() error { return os.Chtimes(f, mtime, mtime) },
			} {
				if err := change(); err != nil {
					t.Fatal(err)
				}
				before := opCount(m, "GETATTR")
				st, err := os.Lstat(f)
				if err != nil {
					t.Fatal(err)
				}
				if n := opCount(m, "GETATTR") - before; n != 0 {
					t.Errorf("lstat after SETATTR sent %d GETATTR requests, want 0 (the reply's attributes are cacheable)", n)
				}
				if st.Mode().Perm() != 0o600 {
					t.Errorf("mode %v after chmod 0600", st.Mode())
				}
			}
			st, err := os.Lstat(f)
			if err != nil {
				t.Fatal(err)
			}
			if !st.ModTime().Equal(mtime) {
				t.Errorf("mtime %v, want %v", st.ModTime(), mtime)
			}
			if bst, err := os.Lstat(tm.bp("demo.softxs.ch/hydro/a.txt")); err != nil || !bst.ModTime().Equal(mtime) || bst.Mode().Perm() != 0o600 {
				t.Errorf("backing file: %v, %v", bst, err)
			}
			for _, s := range m.Stats() {
				if s.Count == 0 || s.Time < 0 || s.Op == "" {
					t.Errorf("bad counter %+v", s)
				}
			}
		})
	}
}

// TestStatsOff: without Config.Stats there are no counters.
func TestStatsOff(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	if err := os.WriteFile(tm.p("demo.softxs.ch/hydro/a"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if s := tm.m.Stats(); s != nil {
		t.Errorf("Stats() = %+v without Config.Stats", s)
	}
}

// errCount returns how many error replies of op the mount has counted.
func errCount(m *Mount, op string) uint64 {
	for _, s := range m.Stats() {
		if s.Op == op {
			return s.Errors
		}
	}
	return 0
}

// TestStatsErrors: a failed request is counted as an error of its opcode;
// the ENOENT of a negative LOOKUP and the ENODATA of a missing extended
// attribute are normal and are not.
func TestStatsErrors(t *testing.T) {
	tm := mountT(t, "web", testApps, func(c *Config) { c.Stats = true })
	m := tm.m
	dir := tm.p("demo.softxs.ch/hydro/d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/f", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tm.p("demo.softxs.ch/hydro/missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("lstat of a missing file: %v", err)
	}
	if _, err := unix.Lgetxattr(dir+"/f", "user.none", make([]byte, 64)); !errors.Is(err, unix.ENODATA) {
		t.Fatalf("getxattr of a missing attribute: %v, want ENODATA", err)
	}
	if n := opCount(m, "GETXATTR"); n == 0 {
		t.Fatalf("no GETXATTR request counted; stats %+v", m.Stats())
	}
	if n := errCount(m, "LOOKUP") + errCount(m, "GETXATTR"); n != 0 {
		t.Errorf("%d LOOKUP/GETXATTR errors counted for ENOENT/ENODATA; stats %+v", n, m.Stats())
	}
	if err := unix.Rmdir(dir); !errors.Is(err, unix.ENOTEMPTY) {
		t.Fatalf("rmdir of a non-empty directory: %v, want ENOTEMPTY", err)
	}
	if n := errCount(m, "RMDIR"); n != 1 {
		t.Errorf("%d RMDIR errors after one failed rmdir, want 1; stats %+v", n, m.Stats())
	}
	if err := os.Remove(dir + "/f"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if c, e := opCount(m, "RMDIR"), errCount(m, "RMDIR"); c != 2 || e != 1 {
		t.Errorf("RMDIR: %d requests, %d errors; want 2 and 1", c, e)
	}
	for _, s := range m.Stats() {
		if s.Errors > s.Count {
			t.Errorf("%s: %d errors in %d requests", s.Op, s.Errors, s.Count)
		}
	}
}
