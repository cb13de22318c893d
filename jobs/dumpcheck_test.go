package jobs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/softxs/v2backup/tiers/inventory"
)

func TestDumpsDatabase(t *testing.T) {
	for _, typ := range inventory.AppTypes {
		app := &inventory.App{Name: "a", Type: typ}
		want := typ == inventory.TypeRails || typ == inventory.TypeDrawMGT || typ == inventory.TypeWordPress
		if DumpsDatabase(app) != want {
			t.Errorf("DumpsDatabase(%s) = %v, want %v", typ, !want, want)
		}
	}
	for adapter, want := range map[string]string{"": "", inventory.AdapterMySQL: AdapterMySQL, inventory.AdapterPostgreSQL: AdapterPostgres} {
		app := &inventory.App{Name: "a", Type: inventory.TypeDrawMGT, Database: &inventory.Database{Adapter: adapter}}
		if got := DumpAdapter(app); got != want {
			t.Errorf("DumpAdapter(%q) = %q, want %q", adapter, got, want)
		}
	}
	if DumpAdapter(&inventory.App{Type: inventory.TypeRails}) != "" {
		t.Error("no [app.database]: an adapter is demanded")
	}
}

func TestNewestDumpOf(t *testing.T) {
	tree := t.TempDir()
	if _, _, err := NewestDumpOf(tree); err == nil || !strings.Contains(err.Error(), filepath.Join(tree, DumpDir)+": no database dump: the directory does not exist") {
		t.Errorf("no db/: %v", err)
	}
	os.MkdirAll(filepath.Join(tree, DumpDir), 0o755)
	if _, _, err := NewestDumpOf(tree); err == nil || !strings.Contains(err.Error(), "no database dump") {
		t.Errorf("empty db/: %v", err)
	}
	p := filepath.Join(tree, DumpDir, "app-2026-11-29T020000.sql.gz")
	os.WriteFile(p, nil, 0o644)
	if got, _, err := NewestDumpOf(tree); got != p || err == nil || !strings.Contains(err.Error(), "dump "+p+" is empty") {
		t.Errorf("empty dump: %s %v", got, err)
	}
	os.WriteFile(p, []byte("x"), 0o644)
	if got, fi, err := NewestDumpOf(tree); got != p || err != nil || fi.Size() != 1 {
		t.Errorf("a dump: %s %v %v", got, fi, err)
	}
}
