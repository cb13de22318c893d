// Package roview serves read-only FUSE views of immutable snapshot trees:
//
//   - History, the .history directory of a VM's mount: each complete
//     snapshot as NAME/{relpath}/..., showing only that VM's applications,
//     plus a latest symlink;
//   - AdminHistory, the all-VM history for administrators: NAME/{vm}/...;
//   - RemoteView, the host-wide view a backup server pulls with rsync: the
//     latest complete snapshot as {vm}/{relpath}/..., plus SHA256SUMS and
//     SNAPSHOT.json, switching to a newer snapshot only between pulls.
//
// Snapshots never change once renamed into place, so every node under a
// snapshot is served with long kernel cache timeouts and kept page caches;
// listings answer lookups (READDIRPLUS), and files are opened without an
// OPEN and closed without a RELEASE or FLUSH (the view answers the first
// OPEN with ENOSYS, tree.noOpen), so a pull costs one synchronous round
// trip per file, its first READ (RemoteView.Requests counts them), and a
// file read again comes from the page cache. The history inside a VM's
// read-write mount opens files as that mount does, with passthrough where
// the kernel has it. Each snapshot gets
// its own inode numbers (the backing st_ino mixed with a per-snapshot salt),
// so a hard link shared by two snapshots is two inodes here, and pruning one
// snapshot never strands a node of another. The remote view is the
// exception that keeps what it can: when it moves to a newer snapshot, the
// nodes of paths whose backing entry is the same in both (a hard link: same
// content and metadata) stay, with their inode numbers and the kernel's
// caches, and only the rest is invalidated (keep.go), so the nightly pull
// of a few changed files does not walk the whole tree cold.
//
// The backing tree is never followed through a symlink: every path is
// resolved with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV)
// from a descriptor of the snapshot directory. Every mutating operation
// answers EROFS.
package roview
