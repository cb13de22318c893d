package opstats

import (
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestOpNames: every opcode has its protocol name, once.
func TestOpNames(t *testing.T) {
	seen := map[string]bool{}
	for op, name := range opNames {
		if name == "" || seen[name] {
			t.Errorf("opcode %d: name %q empty or repeated", op, name)
		}
		seen[name] = true
	}
}

// TestSnapshot: counts, errors (but for the normal ones) and time, only
// for the opcodes seen, sorted by name.
func TestSnapshot(t *testing.T) {
	s := Wrap(nil)
	start := time.Now().Add(-time.Millisecond)
	s.done(opWrite, start, fuse.OK)
	s.done(opLookup, start, fuse.ENOENT)
	s.done(opLookup, start, fuse.EACCES)
	s.done(opGetxattr, start, fuse.Status(syscall.ENODATA))
	got := s.Snapshot()
	want := []Stats{{Op: "GETXATTR", Count: 1}, {Op: "LOOKUP", Count: 2, Errors: 1}, {Op: "WRITE", Count: 1}}
	if len(got) != len(want) {
		t.Fatalf("snapshot %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Op != want[i].Op || got[i].Count != want[i].Count || got[i].Errors != want[i].Errors || got[i].Time < time.Millisecond*time.Duration(got[i].Count) {
			t.Errorf("snapshot[%d] = %+v, want %+v with at least 1ms per request", i, got[i], want[i])
		}
	}
}

// BenchmarkStatsDone is the cost the always-on counters add to each FUSE
// request, from every core at once.
func BenchmarkStatsDone(b *testing.B) {
	s := Wrap(nil)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.done(opWrite, time.Now(), 0)
		}
	})
}
