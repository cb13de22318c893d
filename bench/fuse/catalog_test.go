package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/catalog"
)

// TestCatalogReader reads a real catalog while it is open for writing.
func TestCatalogReader(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cat.db")
	db, err := catalog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sha := strings.Repeat("ab", 32)
	recs := []catalog.FileRecord{
		{Path: "vm/app/rsync/a", App: "app", Size: 1, MTime: time.Unix(1, 0), SHA256: sha},
		{Path: "vm/app/rsync/d/b", App: "app", Size: 1, MTime: time.Unix(1, 0)},
		{Path: "vm/app/rsync0", App: "app", Size: 1, MTime: time.Unix(1, 0), SHA256: sha}, // not below rsync/
		{Path: "vm/app/cp/a", App: "app", Size: 1, MTime: time.Unix(1, 0), SHA256: sha},
	}
	if err := db.UpsertFiles(ctx, recs); err != nil {
		t.Fatal(err)
	}
	rows, hashed, err := catalogCounts(ctx, path, "vm/app/rsync")
	if err != nil || rows != 2 || hashed != 1 {
		t.Fatalf("counts = %d, %d, %v; want 2, 1", rows, hashed, err)
	}
	if _, err := waitCatalog(ctx, path, "vm/app/rsync", time.Minute, "one hash", func(_, h int) bool { return h == 1 }); err != nil {
		t.Fatal(err)
	}
	// A condition that never holds fails at the limit, naming the counts.
	_, err = waitCatalog(ctx, path, "vm/app/rsync", 200*time.Millisecond, "2 hashed files", func(_, h int) bool { return h >= 2 })
	if err == nil || !strings.Contains(err.Error(), "2 rows, 1 hashed") || !strings.Contains(err.Error(), "2 hashed files") {
		t.Errorf("wait for a hash that never comes: %v", err)
	}
	// A cancelled wait returns the context's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := waitCatalog(cctx, path, "vm/app/rsync", time.Minute, "never", func(int, int) bool { return false }); err != context.Canceled {
		t.Errorf("cancelled wait: %v", err)
	}
}

// TestCatalogReaderMissing: no database (the daemon never created it) is
// an error naming the file, not zero rows.
func TestCatalogReaderMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.db")
	if _, _, err := catalogCounts(context.Background(), path, "vm/app"); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("counts of a missing catalog: %v", err)
	}
	_, err := waitCatalog(context.Background(), path, "vm/app", 100*time.Millisecond, "rows", func(r, _ int) bool { return r > 0 })
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("wait on a missing catalog: %v", err)
	}
}
