package catalog

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRescan(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "local")
	outside := t.TempDir()
	writeFile(t, outside, "secret", "secret")
	writeFile(t, root, "web/demo.softxs.ch/hydro/db/x.sql.gz", "dump1")
	writeFile(t, root, "web/demo.softxs.ch/hydro/var/a", "a")
	writeFile(t, root, "web/demo.softxs.ch/hydro/var/b/c", "c")
	writeFile(t, root, "wiki/wiki.softxs.ch/data/page", "page")
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "web/demo.softxs.ch/hydro/var/link")))
	must(t, os.Symlink(outside, filepath.Join(root, "web/demo.softxs.ch/hydro/dirlink")))
	must(t, syscall.Mkfifo(filepath.Join(root, "web/demo.softxs.ch/hydro/var/fifo"), 0o644))
	// A stale row of a file that is gone, and one reached through a link.
	must(t, db.UpsertFiles(ctx, []FileRecord{
		{Path: "web/demo.softxs.ch/hydro/var/old", App: "hydro", Size: 1, MTime: t0, UpdatedAt: t0},
		{Path: "web/demo.softxs.ch/hydro/dirlink/secret", App: "hydro", Size: 6, MTime: t0, UpdatedAt: t0},
	}))
	appOf := func(p string) string {
		if strings.HasPrefix(p, "web/demo.softxs.ch/hydro/") {
			return "hydro"
		}
		return "wiki"
	}

	st, err := db.Rescan(ctx, root, RescanOptions{AppOf: appOf})
	if err != nil {
		t.Fatal(err)
	}
	want := RescanStats{Files: 4, Hashed: 4, HashedBytes: 5 + 1 + 1 + 4, Added: 4, Removed: 2, Skipped: 3}
	if st != want {
		t.Fatalf("first rescan %+v, want %+v", st, want)
	}
	var rows []string
	must(t, db.WalkFiles(ctx, "", func(f FileRecord) error { rows = append(rows, f.Path+"@"+f.App); return nil }))
	if got := strings.Join(rows, ","); got != "web/demo.softxs.ch/hydro/db/x.sql.gz@hydro,web/demo.softxs.ch/hydro/var/a@hydro,web/demo.softxs.ch/hydro/var/b/c@hydro,wiki/wiki.softxs.ch/data/page@wiki" {
		t.Fatalf("rows %s", got)
	}
	if f, _, _ := db.LookupFile(ctx, "web/demo.softxs.ch/hydro/var/b/c"); f.SHA256 != shaOf([]byte("c")) {
		t.Fatalf("%+v", f)
	}

	// Nothing changed: nothing is read.
	st, err = db.Rescan(ctx, root, RescanOptions{AppOf: appOf})
	if err != nil || st != (RescanStats{Files: 4, Unchanged: 4, Skipped: 3}) {
		t.Fatalf("second rescan %+v %v", st, err)
	}

	// One file changed, one gone, one new, one re-attributed; only below
	// the prefix.
	writeFile(t, root, "web/demo.softxs.ch/hydro/db/x.sql.gz", "dump2!")
	future := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(root, "web/demo.softxs.ch/hydro/db/x.sql.gz"), future, future))
	must(t, os.Remove(filepath.Join(root, "web/demo.softxs.ch/hydro/var/a")))
	writeFile(t, root, "web/demo.softxs.ch/hydro/var/new", "new")
	must(t, os.Remove(filepath.Join(root, "wiki/wiki.softxs.ch/data/page"))) // outside the prefix: row stays
	st, err = db.Rescan(ctx, root, RescanOptions{Prefix: "web/demo.softxs.ch/hydro", AppOf: func(p string) string {
		if strings.HasSuffix(p, "/b/c") {
			return "moved"
		}
		return appOf(p)
	}})
	want = RescanStats{Files: 3, Unchanged: 0, Hashed: 2, HashedBytes: 6 + 3, Added: 1, Updated: 2, Removed: 1, Skipped: 3}
	if err != nil || st != want {
		t.Fatalf("prefix rescan %+v %v, want %+v", st, err, want)
	}
	if f, _, _ := db.LookupFile(ctx, "web/demo.softxs.ch/hydro/db/x.sql.gz"); f.SHA256 != shaOf([]byte("dump2!")) || !f.MTime.Equal(future) {
		t.Fatalf("changed file %+v", f)
	}
	if f, _, _ := db.LookupFile(ctx, "web/demo.softxs.ch/hydro/var/b/c"); f.App != "moved" || f.SHA256 != shaOf([]byte("c")) {
		t.Fatalf("re-attributed file %+v", f)
	}
	if _, ok, _ := db.LookupFile(ctx, "wiki/wiki.softxs.ch/data/page"); !ok {
		t.Fatal("row outside the prefix removed")
	}

	// A prefix that is a file, and one that is gone.
	st, err = db.Rescan(ctx, root, RescanOptions{Prefix: "web/demo.softxs.ch/hydro/var/new"})
	if err != nil || st != (RescanStats{Files: 1, Unchanged: 1}) {
		t.Fatalf("file prefix %+v %v", st, err)
	}
	st, err = db.Rescan(ctx, root, RescanOptions{Prefix: "wiki/wiki.softxs.ch"})
	if err != nil || st != (RescanStats{Removed: 1}) {
		t.Fatalf("emptied prefix %+v %v", st, err)
	}
	st, err = db.Rescan(ctx, root, RescanOptions{Prefix: "nope/nothing"})
	if err != nil || st != (RescanStats{}) {
		t.Fatalf("missing prefix %+v %v", st, err)
	}
	// A prefix that is a symlink holds nothing: its stale rows go, and
	// nothing is read through it.
	must(t, db.UpsertFiles(ctx, []FileRecord{{Path: "web/demo.softxs.ch/hydro/dirlink/secret", App: "hydro", Size: 6, MTime: t0, UpdatedAt: t0}}))
	st, err = db.Rescan(ctx, root, RescanOptions{Prefix: "web/demo.softxs.ch/hydro/dirlink"})
	if err != nil || st != (RescanStats{Skipped: 1, Removed: 1}) {
		t.Fatalf("symlink prefix %+v %v", st, err)
	}
	// So does a prefix below a symlink; that one cannot even be opened.
	must(t, db.UpsertFiles(ctx, []FileRecord{{Path: "web/demo.softxs.ch/hydro/dirlink/secret", App: "hydro", Size: 6, MTime: t0, UpdatedAt: t0}}))
	st, err = db.Rescan(ctx, root, RescanOptions{Prefix: "web/demo.softxs.ch/hydro/dirlink/secret"})
	if err != nil || st != (RescanStats{Removed: 1}) {
		t.Fatalf("prefix below a symlink %+v %v", st, err)
	}
}

func TestRescanErrors(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	_, err := db.Rescan(ctx, filepath.Join(t.TempDir(), "missing"), RescanOptions{})
	wantErr(t, err, "missing")
	_, err = db.Rescan(ctx, t.TempDir(), RescanOptions{Prefix: "../x"})
	wantErr(t, err, "rescan prefix")
	_, err = db.Rescan(ctx, t.TempDir(), RescanOptions{Workers: -2})
	wantErr(t, err, "workers -2")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	root := t.TempDir()
	writeFile(t, root, "web/x", "x")
	if _, err := db.Rescan(cctx, root, RescanOptions{}); err == nil {
		t.Fatal("rescan with a cancelled context succeeded")
	}
}

// A full rescan clears a mark left by a recorder that is gone, not the
// mark of a running one.
func TestRescanClearsMark(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	root := t.TempDir()
	must(t, db.setMeta(ctx, metaDirty, "events were dropped (queue full)"))
	if _, err := db.Rescan(ctx, root, RescanOptions{Prefix: "web"}); err != nil {
		t.Fatal(err)
	}
	if why, _ := db.RescanRecommended(ctx); why == "" {
		t.Fatal("a partial rescan cleared the mark")
	}
	if _, err := db.Rescan(ctx, root, RescanOptions{}); err != nil {
		t.Fatal(err)
	}
	if why, _ := db.RescanRecommended(ctx); why != "" {
		t.Fatalf("mark after a full rescan: %q", why)
	}
	must(t, db.setMeta(ctx, metaDirty, "running since 2026-11-28T05:00:00Z"))
	if _, err := db.Rescan(ctx, root, RescanOptions{}); err != nil {
		t.Fatal(err)
	}
	if why, _ := db.RescanRecommended(ctx); why == "" {
		t.Fatal("a running recorder's mark cleared")
	}
}
