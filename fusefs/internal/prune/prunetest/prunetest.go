// Package prunetest checks a mount's count of the files the kernel
// remembers (fusefs/internal/prune) through a real mount.
package prunetest

import "testing"

// CheckWalks calls walk, which looks up each of a tree's files regular
// files, three times and checks after each that count reports exactly
// files: more is a file counted twice. Fewer means the kernel forgot some on its own (memory pressure
// from the rest of the suite); the walk, which looks them up again, is
// then repeated, a few times at most.
func CheckWalks(t *testing.T, walk func(), count func() int64, files int64) {
	t.Helper()
	for walks, short := 0, 0; walks < 3; {
		walk()
		live := count()
		switch {
		case live > files:
			t.Fatalf("walk %d: %d file inodes counted, the kernel knows %d", walks, live, files)
		case live < files:
			if short++; short > 5 {
				t.Fatalf("walk %d: %d file inodes counted after %d walks that looked up all %d", walks, live, short, files)
			}
			t.Logf("walk %d: %d of %d file inodes counted; the kernel forgot some, walking again", walks, live, files)
		default:
			walks++
		}
	}
}
