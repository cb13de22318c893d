package catalog

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/softxs/v2backup/tiers"
)

func TestSnapshotVerified(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	b, err := db.BeginSnapshot(ctx, tiers.Local, "zg-3.softxs.ch", "2026-11-28T050000", t0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if at, err := db.SnapshotVerified(ctx, s.ID); err != nil || !at.IsZero() {
		t.Fatalf("before any verify: %v %v, want zero", at, err)
	}
	when := t0.Add(time.Hour)
	if err := db.SetSnapshotVerified(ctx, s.ID, when); err != nil {
		t.Fatal(err)
	}
	if at, err := db.SnapshotVerified(ctx, s.ID); err != nil || !at.Equal(when) {
		t.Fatalf("after verify: %v %v, want %v", at, err, when)
	}
	if err := db.SetSnapshotVerified(ctx, s.ID+99, when); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown snapshot: %v, want ErrNotFound", err)
	}
	if _, err := db.SnapshotVerified(ctx, s.ID+99); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown snapshot: %v, want ErrNotFound", err)
	}
	if err := db.SetSnapshotVerified(ctx, s.ID, time.Time{}); err == nil {
		t.Error("zero time: no error")
	}
	// A shipped catalog of schema version 2 knows no verification: zero.
	old, err := OpenReadOnly(filepath.Join("testdata", "catalog-v2.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if at, err := old.SnapshotVerified(ctx, 1); err != nil || !at.IsZero() {
		t.Errorf("v2 catalog: %v %v, want zero and no error", at, err)
	}
}
