package catalog

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExportThenOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	at := time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)
	if err := db.UpsertFiles(ctx, []FileRecord{{Path: "web/a/x", App: "hydro", Size: 3, MTime: at}}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "ship", "CATALOG.db")
	if err := db.ExportTo(ctx, out); err != nil {
		t.Fatal(err)
	}
	// A write after the export is not in it.
	if err := db.UpsertFiles(ctx, []FileRecord{{Path: "web/a/y", App: "hydro", Size: 4, MTime: at}}); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	if _, ok, err := ro.LookupFile(ctx, "web/a/x"); err != nil || !ok {
		t.Errorf("exported file: ok %v, err %v", ok, err)
	}
	if _, ok, _ := ro.LookupFile(ctx, "web/a/y"); ok {
		t.Error("a write made after the export is in the exported copy")
	}
	err = ro.UpsertFiles(ctx, []FileRecord{{Path: "web/a/z", App: "hydro", Size: 1, MTime: at}})
	if !errors.Is(err, ErrReadOnly) || !strings.Contains(err.Error(), out) {
		t.Errorf("write to a read-only catalog: %v, want ErrReadOnly naming %s", err, out)
	}
	// Nothing beside the file: no journal, no WAL, no temporary export.
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("files beside the shipped catalog: %v", names)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ro.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second close: %v, want ErrClosed", err)
	}
}

func TestOpenReadOnlyErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenReadOnly(filepath.Join(dir, "missing.db")); err == nil || !strings.Contains(err.Error(), "missing.db") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := OpenReadOnly(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	junk := filepath.Join(dir, "junk.db")
	os.WriteFile(junk, []byte("this is not a database, just some text long enough"), 0o600)
	if _, err := OpenReadOnly(junk); err == nil || !strings.Contains(err.Error(), "junk.db") {
		t.Errorf("not a database: %v", err)
	}
	// A database of a newer schema than this binary knows.
	newer := filepath.Join(dir, "newer.db")
	raw, err := sql.Open("sqlite3", newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if _, err := OpenReadOnly(newer); err == nil || !strings.Contains(err.Error(), "schema version 99") {
		t.Errorf("newer schema: %v", err)
	}
}
