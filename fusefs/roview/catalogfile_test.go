package roview

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func readCatalogDesc(t *testing.T, mnt string) describedCatalog {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mnt, DescName))
	if err != nil {
		t.Fatal(err)
	}
	var d describedCatalog
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v in %q", DescName, err, b)
	}
	return d
}

func TestRemoteViewShipsCatalog(t *testing.T) {
	snapDir, shipped := t.TempDir(), t.TempDir()
	makeSnapshot(t, snapDir, "2026-11-28T050000", map[string]string{"web/hydro/a.txt": "day 1"})
	// The first night has no export (taken before catalogs were shipped).
	clock := newFakeClock()
	v, mnt := mountRemote(t, RemoteOptions{SnapDir: snapDir, Server: testServer, Idle: time.Second, Poll: -1, Now: clock.Now, ShippedDir: shipped})
	if got, want := readDirNames(t, mnt), []string{SumsName, DescName, "web"}; !slices.Equal(got, want) {
		t.Fatalf("root without an export = %q, want %q", got, want)
	}
	_, err := os.Stat(filepath.Join(mnt, CatalogName))
	wantErrno(t, "stat CATALOG.db without an export", err, syscall.ENOENT)
	if d := readCatalogDesc(t, mnt); d.CatalogSHA256 != "" || d.Catalog != "" {
		t.Fatalf("description without an export names a catalog: %+v", d)
	}

	// The next night: the snapshot appears before its export is written.
	makeSnapshot(t, snapDir, "2026-11-29T050000", map[string]string{"web/hydro/a.txt": "day 2"})
	switchNow(t, v, clock)
	if d := readCatalogDesc(t, mnt); d.Snapshot != "2026-11-29T050000" || d.CatalogSHA256 != "" {
		t.Fatalf("description before the export: %+v", d)
	}
	content := []byte("SQLite format 3\x00 pretend catalog of the 29th")
	if err := os.WriteFile(filepath.Join(shipped, "2026-11-29T050000.db"), content, 0o600); err != nil {
		t.Fatal(err)
	}
	// The view re-prepares the snapshot with its export once idle.
	switchNow(t, v, clock)
	// Nothing changes while nothing new appears.
	if ok, err := v.Refresh(); err != nil || ok {
		t.Fatalf("refresh with nothing new: %v %v", ok, err)
	}
	if got, want := readDirNames(t, mnt), []string{CatalogName, SumsName, DescName, "web"}; !slices.Equal(got, want) {
		t.Fatalf("root = %q, want %q", got, want)
	}
	got, err := os.ReadFile(filepath.Join(mnt, CatalogName))
	if err != nil || string(got) != string(content) {
		t.Fatalf("CATALOG.db = %q, %v", got, err)
	}
	sum := sha256.Sum256(content)
	d := readCatalogDesc(t, mnt)
	if d.CatalogSHA256 != hex.EncodeToString(sum[:]) || d.Catalog != CatalogName || d.Snapshot != "2026-11-29T050000" || d.Files != 1 {
		t.Fatalf("description = %+v, want catalog_sha256 %x", d, sum)
	}
	// Read-only, like the rest of the view.
	_, err = os.OpenFile(filepath.Join(mnt, CatalogName), os.O_WRONLY, 0)
	wantErrno(t, "open CATALOG.db for writing", err, syscall.EROFS)

	// An export pruned under a pinned snapshot cannot be read any more,
	// but from the kernel's page cache: the open is the kernel's alone.
	if err := os.Remove(filepath.Join(shipped, "2026-11-29T050000.db")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mnt, CatalogName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(f)
	wantErrno(t, "read a pruned CATALOG.db", err, syscall.ENOENT)
	f.Close()

	// An export that is not a regular file: the snapshot is not shown, and
	// the error names the path.
	makeSnapshot(t, snapDir, "2026-11-30T050000", map[string]string{"web/hydro/a.txt": "day 3"})
	if err := os.Mkdir(filepath.Join(shipped, "2026-11-30T050000.db"), 0o700); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	_, err = v.Refresh()
	if err == nil || !strings.Contains(err.Error(), filepath.Join(shipped, "2026-11-30T050000.db")) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("refresh with a directory as export: %v", err)
	}
	if v.Snapshot() != "2026-11-29T050000" {
		t.Fatalf("view moved to %s despite a bad export", v.Snapshot())
	}
}
