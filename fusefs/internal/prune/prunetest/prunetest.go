// Package prunetest checks a mount's count of the files the kernel
// remembers (fusefs/internal/prune) through a real mount.
package prunetest

import "testing"

// CheckWalks calls walk, which looks up every regular file of a tree
// (files is how many it has), until three walks have left count at
// exactly files. A count above files fails at once: a file counted
// twice. A count below means the kernel forgot some files on its own
// (memory pressure, or caches dropped elsewhere on the machine); the next
// walk looks them up again, and a sixth such short count fails.
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
