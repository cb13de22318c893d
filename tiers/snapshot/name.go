// Package snapshot makes, lists, locks and prunes hard-link snapshots of a
// tier directory, and writes the per-application history files that
// monitoring reads.
//
// A snapshot of {partition}/local is {snapdir}/{name}, e.g.
// /v01/backup/snapshots/local/2026-11-28T050000: a tree of directories
// recreated with the source's modes, owners, mtimes and xattrs, whose
// files, symlinks and other non-directories are hard links to the source's
// inodes. It is built as {snapdir}/.building-{name} and renamed into place
// only once complete and synced, so a snapshot exists whole or not at all.
// Snapshots being deleted are first renamed to .deleting-{name} and then
// removed by Purge at idle I/O priority.
//
// The package works on the backing filesystem only (never through a FUSE
// mount) and never follows a symbolic link inside the trees it is given.
// Callers serialise runs with Lock or TryLock on one lock file per
// snapshot directory: Create, Prune and Purge assume they hold it.
package snapshot

import (
	"time"

	"github.com/softxs/v2backup/tiers"
)

// NameLayout is the time layout of snapshot names (tiers.SnapshotLayout).
const NameLayout = tiers.SnapshotLayout

// Prefixes of the work directories kept beside the snapshots. They start
// with a dot, which no snapshot name does, so List never returns them.
const (
	buildingPrefix = ".building-"
	deletingPrefix = ".deleting-"
)

// LatestLink is the name of the symlink in a snapshot directory that points
// at the newest complete snapshot (see UpdateLatest).
const LatestLink = "latest"

// Name returns the snapshot name for t, in t's location, truncated to the
// second: Name(2026-11-28 05:00:00) is "2026-11-28T050000".
func Name(t time.Time) string { return tiers.SnapshotName(t) }

// ParseName validates a snapshot name and returns its time in the local
// time zone (snapshot names carry local wall-clock time, like the nightly
// schedule). The error is a *tiers.NameError for field "snapshot".
func ParseName(s string) (time.Time, error) { return tiers.ParseSnapshotName(s, time.Local) }
