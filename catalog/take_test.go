package catalog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/snapshot"
)

// TestTake: a snapshot's tree and its record come or go together.
func TestTake(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	base := t.TempDir()
	src, snapDir := filepath.Join(base, "local"), filepath.Join(base, "snaps")
	for p, body := range map[string]string{"web/demo/hydro/a.sql": "a", "web/demo/hydro/sub/b": "bb", "intern/x": "xxx"} {
		p = filepath.Join(src, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a.sql", filepath.Join(src, "web/demo/hydro/link")); err != nil {
		t.Fatal(err)
	}
	appOf := func(p string) string {
		if filepath.Dir(p) == "web/demo/hydro" || filepath.Dir(p) == "web/demo/hydro/sub" {
			return "hydro"
		}
		return ""
	}
	t0 := time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)
	const srv = "zg-3.softxs.ch"
	take := func(name string, emit func([]snapshot.Entry) error) (*snapshot.Result, Snapshot, error) {
		t.Helper()
		b, err := db.BeginSnapshot(ctx, tiers.Local, srv, name, t0)
		if err != nil {
			t.Fatal(err)
		}
		return b.Take(ctx, snapshot.Options{Source: src, SnapDir: snapDir, Name: name, Emit: emit}, appOf)
	}

	seen := map[string]bool{}
	res, snap, err := take("2026-11-28T050000", func(b []snapshot.Entry) error {
		for _, e := range b {
			seen[e.Path] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if snap.State != SnapshotComplete || snap.Files != 3 || snap.Bytes != 6 {
		t.Errorf("recorded %+v, want complete, 3 files, 6 bytes", snap)
	}
	// The caller's Emit sees every entry, not only what is recorded.
	if !seen["web/demo/hydro/link"] || !seen["intern/x"] || res.Files != 3 || res.Symlinks != 1 {
		t.Errorf("the caller's Emit saw %v; result %+v", seen, res)
	}
	paths := 0
	err = db.WalkManifest(ctx, snap.ID, "", func(e ManifestEntry) error {
		paths++
		if e.SHA256 == "" || e.Path == "web/demo/hydro/link" {
			t.Errorf("manifest entry %+v", e)
		}
		return nil
	})
	if err != nil || paths != 3 {
		t.Errorf("manifest: %d files, %v", paths, err)
	}
	if apps, err := db.AppHistory(ctx, tiers.Local, srv, "hydro"); err != nil || len(apps) != 1 || apps[0].Files != 2 || apps[0].Bytes != 3 {
		t.Errorf("hydro's totals: %+v, %v", apps, err)
	}

	// The caller's Emit fails: no tree, no record.
	boom := errors.New("boom")
	if _, _, err := take("2026-11-29T050000", func([]snapshot.Entry) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Take with a failing Emit: %v", err)
	}
	if l, _ := snapshot.List(snapDir); len(l) != 1 {
		t.Errorf("snapshots after a failed Take: %v", l)
	}
	if l, _ := db.ListSnapshots(ctx, tiers.Local, srv); len(l) != 1 {
		t.Errorf("catalog after a failed Take: %+v", l)
	}

	// The record cannot be committed: the tree is moved aside.
	var b *SnapshotBuilder
	b, err = db.BeginSnapshot(ctx, tiers.Local, srv, "2026-11-30T050000", t0)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = b.Take(ctx, snapshot.Options{Source: src, SnapDir: snapDir, Name: "2026-11-30T050000",
		Emit: func([]snapshot.Entry) error { return db.DeleteSnapshot(ctx, b.Snapshot().ID) }}, appOf)
	wantErr(t, err, "2026-11-30T050000", "recording the manifest")
	if l, _ := snapshot.List(snapDir); len(l) != 1 {
		t.Errorf("snapshots after a failed commit: %v", l)
	}
	if _, err := os.Stat(filepath.Join(snapDir, ".deleting-2026-11-30T050000")); err != nil {
		t.Errorf("the unrecorded tree was not moved aside: %v", err)
	}
}
