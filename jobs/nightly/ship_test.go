package nightly

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
)

func TestShipCatalog(t *testing.T) {
	ctx := context.Background()
	part := tiers.Partition(t.TempDir())
	db, err := catalog.Open(part.CatalogPath())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	t0 := time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)
	var names []string
	for i := range ShippedKeep + 2 {
		at := t0.Add(time.Duration(i) * 24 * time.Hour)
		name := tiers.SnapshotName(at)
		b, err := db.BeginSnapshot(ctx, tiers.Local, "zg-3.softxs.ch", name, at)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Add(ctx, catalog.ManifestEntry{Path: "web/hydro/f", Size: 1, MTime: at, SHA256: strings.Repeat("a", 64), App: "hydro"}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ShipCatalog(ctx, db, part, name); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	// Not an export: left alone by the pruning.
	if err := os.WriteFile(filepath.Join(ShippedDir(part), "notes.txt"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ShipCatalog(ctx, db, part, names[len(names)-1]); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(ShippedDir(part))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	want := []string{names[2] + ".db", names[3] + ".db", names[4] + ".db", "notes.txt"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("shipped dir holds %v, want %v", got, want)
	}
	// The newest export knows its own snapshot.
	ro, err := catalog.OpenReadOnly(ShippedCatalog(part, names[4]))
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if s, ok, err := ro.LatestSnapshot(ctx, tiers.Local, "zg-3.softxs.ch"); err != nil || !ok || s.Name != names[4] {
		t.Fatalf("latest in export %+v %v %v", s, ok, err)
	}
	// An export that cannot be written names the path.
	blocked := tiers.Partition(t.TempDir())
	if err := os.WriteFile(filepath.Join(blocked.StateDir()), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err = ShipCatalog(ctx, db, blocked, names[4])
	if err == nil || !strings.Contains(err.Error(), "shipping the catalog") || !strings.Contains(err.Error(), string(blocked)) {
		t.Fatalf("state dir is a file: %v", err)
	}
}
