// Package memlimit holds the host daemon's Go heap close to what it uses.
//
// The daemon's live heap is mostly go-fuse's inode tables: one entry for
// every file the kernel still remembers, about 600 bytes each, so 60 MB
// after 100,000 files written through one mount. Left to GOGC=100 the heap
// then grows to twice that before a collection, and the process sits at
// 170 MB resident. A soft limit (runtime/debug.SetMemoryLimit) makes the
// collector run before the heap outgrows it; the limit is raised with the
// live heap (never below half again as much), so a mount that really holds
// a million inodes collects more often instead of all the time.
package memlimit

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Default is the soft limit while the live heap is small: with it the
// daemon stays near 110 MB resident after 100,000 files (bench/fuse;
// sqlite's and the runtime's own memory come on top of the limit's heap).
const Default = 100 << 20

// Interval is how often Keep looks at the live heap.
const Interval = 2 * time.Second

const liveMetric = "/gc/heap/live:bytes"

// For returns the limit for a live heap of live bytes: base, or half
// again the live heap once that is larger.
func For(base, live uint64) int64 {
	return int64(max(base, live+live/2))
}

// Keep sets the soft memory limit to For(base, live heap) and adjusts it
// every interval until ctx ends. When the environment sets GOMEMLIMIT the
// operator's limit stands: Keep logs it and returns false at once.
func Keep(ctx context.Context, base uint64, interval time.Duration, log *slog.Logger) bool {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory limit from GOMEMLIMIT", "GOMEMLIMIT", v)
		return false
	}
	sample := []metrics.Sample{{Name: liveMetric}}
	set := func() int64 {
		metrics.Read(sample)
		var live uint64
		if sample[0].Value.Kind() == metrics.KindUint64 {
			live = sample[0].Value.Uint64()
		}
		limit := For(base, live)
		debug.SetMemoryLimit(limit)
		return limit
	}
	cur := set()
	log.Debug("memory limit", "bytes", cur)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if l := set(); l != cur {
					log.Debug("memory limit", "bytes", l, "was", cur)
					cur = l
				}
			}
		}
	}()
	return true
}
