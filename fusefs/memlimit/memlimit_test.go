package memlimit

import (
	"context"
	"io"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestFor(t *testing.T) {
	for _, c := range []struct {
		base, live uint64
		want       int64
	}{
		{Default, 0, Default},
		{Default, 60 << 20, Default},    // 100,000 inodes: the base holds
		{Default, 100 << 20, 150 << 20}, // past it: half again the live heap
		{Default, 600 << 20, 900 << 20}, // a million inodes
		{64 << 20, 64 << 20, 96 << 20},
	} {
		if got := For(c.base, c.live); got != c.want {
			t.Errorf("For(%d, %d) = %d, want %d", c.base, c.live, got, c.want)
		}
	}
}

func resetLimit(t *testing.T) {
	t.Cleanup(func() { debug.SetMemoryLimit(math.MaxInt64) })
}

func TestKeepSetsAndFollows(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	resetLimit(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	runtime.GC() // the live heap is known after the first collection
	// A base below any real heap: the limit follows the live heap.
	if !Keep(ctx, 1, 10*time.Millisecond, log) {
		t.Fatal("Keep returned false without GOMEMLIMIT")
	}
	first := debug.SetMemoryLimit(-1)
	if first <= 1 {
		t.Fatalf("limit %d: not raised to the live heap", first)
	}
	// Grow the live heap; the next ticks must raise the limit.
	hold := make([][]byte, 0, 64)
	for range 64 {
		hold = append(hold, make([]byte, 1<<20))
	}
	deadline := time.Now().Add(10 * time.Second)
	for debug.SetMemoryLimit(-1) < first+32<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("limit stayed at %d (first %d) with 64 MiB more live", debug.SetMemoryLimit(-1), first)
		}
		debug.FreeOSMemory() // a collection updates the live heap metric
		time.Sleep(20 * time.Millisecond)
	}
	runtime.KeepAlive(hold)
}

func TestKeepLeavesGOMEMLIMIT(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "1GiB")
	resetLimit(t)
	before := debug.SetMemoryLimit(-1)
	if Keep(context.Background(), Default, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil))) {
		t.Fatal("Keep overrode GOMEMLIMIT")
	}
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("limit changed to %d with GOMEMLIMIT set", got)
	}
}
