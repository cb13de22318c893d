package catalog

import (
	"context"
	"testing"
	"time"
)

func TestLastUpdate(t *testing.T) {
	ctx := context.Background()
	clock := time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)
	db := openTest(t, WithClock(func() time.Time { return clock }))
	if got, err := db.LastUpdate(ctx, "web/a"); err != nil || !got.IsZero() {
		t.Fatalf("empty catalog: %v %v, want zero", got, err)
	}
	put := func(p string) {
		t.Helper()
		if err := db.UpsertFiles(ctx, []FileRecord{{Path: p, App: "x", Size: 1, MTime: clock}}); err != nil {
			t.Fatal(err)
		}
	}
	put("web/a/1")
	clock = clock.Add(time.Hour)
	put("web/a.txt") // a sibling that sorts between "web/a" and "web/a/"
	put("web/ab/2")
	clock = clock.Add(time.Hour)
	put("web/b/3")
	for prefix, want := range map[string]time.Time{
		"web/a":  clock.Add(-2 * time.Hour),
		"web/ab": clock.Add(-time.Hour),
		"web":    clock,
		"":       clock,
		"web/c":  {},
	} {
		got, err := db.LastUpdate(ctx, prefix)
		if err != nil || !got.Equal(want) {
			t.Errorf("LastUpdate(%q) = %v, %v; want %v", prefix, got, err, want)
		}
	}
	if _, err := db.LastUpdate(ctx, "/abs"); err == nil {
		t.Error("absolute prefix: no error")
	}
}
