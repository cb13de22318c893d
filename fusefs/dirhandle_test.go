package fusefs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDirListedAtFirstRead: opening a directory lists nothing (a warm walk
// opens every directory and reads none from the daemon); the listing is
// taken at the first read, and an error of that listing reaches the
// reader.
func TestDirListedAtFirstRead(t *testing.T) {
	tm := mountT(t, "web", testApps, nil)
	for _, d := range []string{"www.softxs.ch/lazy", "www.softxs.ch/gone"} {
		if err := os.Mkdir(tm.p(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(tm.p("www.softxs.ch/lazy"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Made behind the mount's back, after the open, before the first read.
	if err := os.WriteFile(filepath.Join(tm.bp("www.softxs.ch/lazy"), "late"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	names, err := f.Readdirnames(-1)
	if err != nil || len(names) != 1 || names[0] != "late" {
		t.Errorf("listing %v, %v; want [late]: the directory was listed at open", names, err)
	}

	g, err := os.Open(tm.p("www.softxs.ch/gone"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := os.Remove(tm.bp("www.softxs.ch/gone")); err != nil {
		t.Fatal(err)
	}
	if names, err := g.Readdirnames(-1); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("listing a directory removed behind the mount: %v, %v; want ENOENT", names, err)
	}
}
