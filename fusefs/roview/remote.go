package roview

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/softxs/v2backup/fusefs/internal/opstats"
	"github.com/softxs/v2backup/fusefs/internal/prune"
	"github.com/softxs/v2backup/fusefs/internal/uring"
	"github.com/softxs/v2backup/tiers"
)

// Defaults of RemoteOptions.
const (
	// DefaultIdle is how long the view must see no request and no open
	// directory before it moves to a newer snapshot.
	DefaultIdle = 30 * time.Second
	// DefaultPoll is how often the view looks for a newer snapshot.
	DefaultPoll = 5 * time.Second
)

// RemoteOptions configures MountRemoteView.
type RemoteOptions struct {
	// SnapDir holds the local tier's snapshots: {partition}/snapshots/local.
	SnapDir string
	// Server is this host's FQDN, written into SNAPSHOT.json.
	Server string
	// Manifest gives a snapshot's files and checksums (the catalog's
	// manifest). If nil, the view hashes the snapshot itself, once.
	Manifest ManifestFunc
	// StateDir, if set, keeps manifests the view computed itself, so a
	// restart does not hash again. Nothing is ever written into a snapshot.
	StateDir string
	// Idle is how long the view must be unused (no request, no open
	// directory) before it switches to a newer snapshot; 0 means
	// DefaultIdle. A pull in progress thus keeps the snapshot it started
	// on. Files are opened in the kernel alone (tree.noOpen), so an open
	// file does not count: a reader that pauses for Idle in the middle of
	// a file that then changes gets ESTALE for the rest (roNode.Read), or,
	// if it stats the file again first, the new file; a pull's
	// verification against SHA256SUMS fails either way, and the last good
	// copy stays.
	Idle time.Duration
	// Poll is how often to look for a newer snapshot; 0 means DefaultPoll,
	// negative disables polling (call Refresh).
	Poll time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Location is the zone snapshot names are written in; nil means
	// time.Local.
	Location *time.Location
	// AllowOther lets users other than the mounting one in (the ssh user
	// a backup server pulls as); the kernel checks the backing modes.
	AllowOther bool
	// Logger receives errors; nil means slog.Default().
	Logger *slog.Logger
	// Debug traces the FUSE protocol.
	Debug bool
	// NoURing serves requests through /dev/fuse even where the kernel
	// lets FUSE use io_uring (see fusefs/internal/uring).
	NoURing bool
	// ShippedDir, if set, holds the host's catalog exports, one
	// {snapshot}.db per snapshot, served as CATALOG.db (see CatalogName).
	ShippedDir string
	// MaxFileInodes caps the files the kernel, and so the view, remembers
	// once mounted: a pull walks the whole snapshot, and past the cap the
	// least recently used are forgotten (FUSE_NOTIFY_PRUNE, Linux 6.18).
	// 0 means 65,536, negative no cap.
	MaxFileInodes int
}

// pinned is the snapshot the view shows, with its generated files.
type pinned struct {
	name  string
	sums  []byte
	desc  []byte
	mtime time.Time
	// catalog is the snapshot's shipped catalog, nil if none.
	catalog *shippedCatalog
}

// RemoteView is a mounted read-only view of the latest complete snapshot
// of the local tier: {vm}/{relpath}/... plus SHA256SUMS and SNAPSHOT.json.
// It switches to a newer snapshot only when it has been idle for
// RemoteOptions.Idle, so a pull sees one snapshot from start to end.
type RemoteView struct {
	opts   RemoteOptions
	log    *slog.Logger
	snaps  *snapRoot
	cache  manifestCache
	root   *remoteRoot
	server *uring.Conn
	// requests counts what the kernel asks of a mounted view
	requests *opstats.FS
	prune    *prune.Pruner // started once mounted
	idle     *tree         // accounting for requests made while no snapshot is shown
	// tree is every snapshot's: its nodes' paths are relative to the
	// snapshot shown, so a switch can keep the ones that did not change.
	tree *tree

	mu       sync.Mutex
	cur      *pinned
	last     time.Time // end of the last request
	inflight int
	open     int
	// switching holds new requests while a switch checks what the
	// kernel may keep (keep.go); resumed signals its end.
	switching bool
	resumed   *sync.Cond
	afterKeep func() // test hook: between the switch and invalidate

	refreshMu sync.Mutex // one Refresh at a time
	next      *pinned    // prepared, waiting for the view to be idle
	lastErr   string

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func (o *RemoteOptions) check() error {
	if o.SnapDir == "" || !filepath.IsAbs(o.SnapDir) {
		return fmt.Errorf("remote view: SnapDir %q must be an absolute path", o.SnapDir)
	}
	if _, err := tiers.ParseServer(o.Server); err != nil {
		return fmt.Errorf("remote view: %w", err)
	}
	if o.Idle < 0 {
		return fmt.Errorf("remote view: Idle %v must not be negative", o.Idle)
	}
	if o.StateDir != "" && !filepath.IsAbs(o.StateDir) {
		return fmt.Errorf("remote view: StateDir %q must be an absolute path", o.StateDir)
	}
	return nil
}

// NewRemoteView prepares a remote view without mounting it: Root is its
// root node. MountRemoteView is NewRemoteView plus the mount.
func NewRemoteView(opts RemoteOptions) (*RemoteView, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if opts.Idle == 0 {
		opts.Idle = DefaultIdle
	}
	if opts.Poll == 0 {
		opts.Poll = DefaultPoll
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	v := &RemoteView{
		opts:  opts,
		log:   log,
		snaps: newSnapRoot(opts.SnapDir),
		cache: manifestCache{dir: opts.StateDir},
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	v.resumed = sync.NewCond(&v.mu)
	v.idle = &tree{root: v.snaps, act: v, log: log}
	v.root = &remoteRoot{v: v}
	v.prune = prune.New(opts.MaxFileInodes, v.root.NotifyPrune, log.With("view", "remote"))
	v.tree = &tree{root: v.snaps, act: v, prune: v.prune, log: log, noOpen: true}
	v.last = opts.Now()
	// The first snapshot needs no idle wait: nobody can be pulling yet.
	if _, err := v.Refresh(); err != nil {
		log.Error("roview: remote view starts empty", "snapdir", opts.SnapDir, "err", err)
	}
	return v, nil
}

// MountRemoteView mounts a remote view at mountpoint and starts looking
// for newer snapshots every Poll. The mount is read-only (MS_RDONLY when
// mounted directly, EROFS from every handler in any case).
func MountRemoteView(mountpoint string, opts RemoteOptions) (*RemoteView, error) {
	v, err := NewRemoteView(opts)
	if err != nil {
		return nil, err
	}
	mo := mountOptions("v2backup-remote", opts.AllowOther, opts.Debug, v.log)
	v.requests = opstats.Wrap(fs.NewNodeFS(v.root, mo))
	srv, err := uring.NewServer(v.requests, mountpoint, &mo.MountOptions, opts.NoURing, v.log)
	if err != nil {
		return nil, fmt.Errorf("mount remote view of %s at %s: %w", opts.SnapDir, mountpoint, err)
	}
	v.log.Info("roview: remote view mounted", "mountpoint", mountpoint, "transport", srv.Transport())
	v.server = srv
	v.prune.Start()
	if v.opts.Poll > 0 {
		go v.poll()
	} else {
		close(v.done)
	}
	return v, nil
}

// Root is the view's root node, for mounting it elsewhere (tests, or a
// virtiofs server).
func (v *RemoteView) Root() fs.InodeEmbedder { return v.root }

// Requests returns how many requests of each FUSE opcode the mounted view
// has answered, sorted by opcode, leaving out the opcodes never seen; nil
// if the view is not mounted by MountRemoteView.
func (v *RemoteView) Requests() []RequestCount {
	if v.requests == nil {
		return nil
	}
	return v.requests.Snapshot()
}

// FileInodes reports how many files the kernel may still remember
// through the mounted view, and how many it was asked to forget to stay
// under RemoteOptions.MaxFileInodes.
func (v *RemoteView) FileInodes() (live, pruned int64) {
	return v.prune.Live(), v.prune.Pruned()
}

// Server is the FUSE server of a mounted view.
func (v *RemoteView) Server() *fuse.Server {
	if v.server == nil {
		return nil
	}
	return v.server.Server
}

// Transport names how the kernel's requests reach the mounted view:
// "io_uring" or "/dev/fuse".
func (v *RemoteView) Transport() string {
	if v.server == nil {
		return ""
	}
	return v.server.Transport()
}

// Unmount stops polling and unmounts the view.
func (v *RemoteView) Unmount() error {
	v.stopOnce.Do(func() { close(v.stop) })
	<-v.done
	v.prune.Close()
	var err error
	if v.server != nil {
		err = v.server.Unmount()
	}
	v.snaps.close()
	return err
}

// Wait blocks until the view is unmounted.
func (v *RemoteView) Wait() {
	if v.server != nil {
		v.server.Wait()
	}
}

// Snapshot is the name of the snapshot the view shows, "" if none.
func (v *RemoteView) Snapshot() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cur == nil {
		return ""
	}
	return v.cur.name
}

func (v *RemoteView) poll() {
	defer close(v.done)
	t := time.NewTicker(v.opts.Poll)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
		}
		_, err := v.Refresh()
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != v.lastErr && err != nil {
			v.log.Error("roview: remote view cannot move to the newest snapshot", "snapdir", v.opts.SnapDir, "err", err)
		}
		v.lastErr = msg
	}
}

// Refresh moves the view to the newest complete snapshot if there is a
// newer one and the view has been idle for Idle; it reports whether it
// switched. The newer snapshot's manifest is prepared even when the view
// is busy, so the switch itself is quick.
func (v *RemoteView) Refresh() (bool, error) {
	v.refreshMu.Lock()
	defer v.refreshMu.Unlock()
	names, err := v.snaps.snapshots()
	if err != nil {
		return false, err
	}
	if len(names) == 0 {
		return false, nil
	}
	newest := names[len(names)-1]
	v.mu.Lock()
	cur := v.cur
	v.mu.Unlock()
	if cur != nil && cur.name == newest && !v.catalogAppeared(cur) {
		return false, nil
	}
	if v.next == nil || v.next.name != newest || v.catalogAppeared(v.next) {
		v.next = nil
		p, err := v.prepare(newest)
		if err != nil {
			return false, err
		}
		v.next = p
		v.cache.prune(names)
	}
	v.mu.Lock()
	old := v.cur
	if old != nil && !v.idleLocked() {
		v.mu.Unlock()
		return false, nil
	}
	v.cur, v.next = v.next, nil
	cur = v.cur
	name := cur.name
	oldSnap := v.tree.snap
	v.tree.snap, v.tree.salt = name, snapshotSalt(name)
	v.switching = true
	v.mu.Unlock()
	var kept keepResult
	start := time.Now()
	if old != nil && v.server != nil {
		kept = v.keep(oldSnap, cur)
	}
	held := time.Since(start)
	v.mu.Lock()
	v.switching = false
	v.resumed.Broadcast()
	v.mu.Unlock()
	if v.afterKeep != nil {
		v.afterKeep()
	}
	if old != nil {
		v.invalidate(kept.drop)
	}
	v.log.Info("roview: remote view now shows snapshot", "snapshot", name,
		"kept", kept.kept, "refreshed", kept.refreshed, "dropped", len(kept.drop), "requests_held", held.Round(time.Millisecond))
	return true, nil
}

func (v *RemoteView) idleLocked() bool {
	return v.inflight == 0 && v.open == 0 && v.opts.Now().Sub(v.last) >= v.opts.Idle
}

// invalidate makes the kernel forget the entries a switch dropped, and
// the root's generated files, so the next lookups reach the new snapshot.
// It runs without v.mu and after the switch: the kernel takes the
// directory's lock, which a concurrent lookup may hold while it waits for
// us. keep has already made their attributes stale, so a request in
// between asks again and gets the new snapshot's.
func (v *RemoteView) invalidate(drop []dropped) {
	if v.server == nil {
		return
	}
	for _, n := range []string{SumsName, DescName, CatalogName} {
		drop = append(drop, dropped{v.root.EmbeddedInode(), n})
	}
	for _, d := range drop {
		if errno := d.parent.NotifyEntry(d.name); errno != 0 && errno != syscall.ENOENT {
			v.log.Warn("roview: remote view could not invalidate an entry", "name", d.name, "err", errno)
		}
	}
	if errno := v.root.NotifyContent(0, 0); errno != 0 && errno != syscall.ENOENT {
		v.log.Warn("roview: remote view could not invalidate its root", "err", errno)
	}
}

// prepare builds SHA256SUMS and SNAPSHOT.json for a snapshot.
func (v *RemoteView) prepare(name string) (*pinned, error) {
	at, err := tiers.ParseSnapshotName(name, v.opts.Location)
	if err != nil {
		return nil, err
	}
	ents, err := v.manifest(name)
	if err != nil {
		return nil, fmt.Errorf("manifest of snapshot %s: %w", name, err)
	}
	sums, err := FormatSHA256SUMS(ents)
	if err != nil {
		return nil, fmt.Errorf("manifest of snapshot %s: %w", name, err)
	}
	cat, err := v.shipped(name)
	if err != nil {
		return nil, err
	}
	return &pinned{
		name:    name,
		sums:    sums,
		desc:    withCatalog(describe(v.opts.Server, name, at, ents), cat),
		mtime:   at,
		catalog: cat,
	}, nil
}

func (v *RemoteView) manifest(name string) ([]ManifestEntry, error) {
	if v.opts.Manifest != nil {
		return v.opts.Manifest(name)
	}
	ents, ok, err := v.cache.load(name)
	if err != nil {
		v.log.Warn("roview: ignoring a bad manifest cache", "err", err)
	} else if ok {
		return ents, nil
	}
	ents, err = HashSnapshot(v.opts.SnapDir, name)
	if err != nil {
		return nil, err
	}
	if err := v.cache.store(name, ents); err != nil {
		v.log.Warn("roview: cannot cache a manifest", "dir", v.opts.StateDir, "err", err)
	}
	return ents, nil
}

// Activity accounting (the activity interface).

func (v *RemoteView) begin() {
	v.mu.Lock()
	v.beginLocked()
	v.mu.Unlock()
}

// beginLocked counts a request in, once no switch is in progress.
func (v *RemoteView) beginLocked() {
	for v.switching {
		v.resumed.Wait()
	}
	v.inflight++
	v.last = v.opts.Now()
}

func (v *RemoteView) end() {
	v.mu.Lock()
	v.inflight--
	v.last = v.opts.Now()
	v.mu.Unlock()
}

func (v *RemoteView) opened() {
	v.mu.Lock()
	v.open++
	v.mu.Unlock()
}

func (v *RemoteView) released() {
	v.mu.Lock()
	v.open--
	v.last = v.opts.Now()
	v.mu.Unlock()
}

// enter starts a root request and returns the snapshot it must use.
func (v *RemoteView) enter() (*pinned, func()) {
	v.mu.Lock()
	v.beginLocked()
	p := v.cur
	v.mu.Unlock()
	return p, v.end
}

// remoteRoot is the root of the remote view.
type remoteRoot struct {
	fs.Inode
	readOnly
	v *RemoteView
}

func (r *remoteRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	p, done := r.v.enter()
	defer done()
	if p == nil || !validName(name) {
		return nil, syscall.ENOENT
	}
	switch name {
	case SumsName, DescName:
		data := p.sums
		if name == DescName {
			data = p.desc
		}
		g := &genFile{data: data, mtime: p.mtime, t: r.v.tree}
		g.attr(&out.Attr)
		out.SetEntryTimeout(immutableTimeout)
		out.SetAttrTimeout(immutableTimeout)
		return r.NewInode(ctx, g, fs.StableAttr{Mode: syscall.S_IFREG, Ino: p.ino(name)}), 0
	case CatalogName:
		if p.catalog == nil {
			return nil, syscall.ENOENT
		}
		c := &catalogFile{c: p.catalog, t: r.v.tree}
		c.attr(&out.Attr)
		out.SetEntryTimeout(immutableTimeout)
		out.SetAttrTimeout(immutableTimeout)
		return r.NewInode(ctx, c, fs.StableAttr{Mode: syscall.S_IFREG, Ino: p.ino(name)}), 0
	}
	backing := p.name + "/" + name
	st, err := r.v.snaps.stat(backing)
	if err != nil {
		return nil, toErrno(r.v.log, "lookup "+backing, err)
	}
	// Long timeouts: a switch invalidates these entries explicitly.
	return r.v.tree.newChild(ctx, r.EmbeddedInode(), name, &st, out, immutableTimeout), 0
}

func (r *remoteRoot) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	p, done := r.v.enter()
	defer done()
	t := r.v.idle
	var ents []fuse.DirEntry
	if p != nil {
		t = r.v.tree
		list, err := r.v.snaps.readDir(p.name)
		if err != nil {
			return nil, 0, toErrno(r.v.log, "opendir "+p.name, err)
		}
		for _, e := range list {
			st := syscall.Stat_t{Ino: e.ino}
			ents = append(ents, fuse.DirEntry{Name: e.name, Mode: e.mode, Ino: backingIno(&st, t.salt)})
		}
		ents = append(ents,
			fuse.DirEntry{Name: SumsName, Mode: syscall.S_IFREG, Ino: synthIno("remote", p.name, SumsName)},
			fuse.DirEntry{Name: DescName, Mode: syscall.S_IFREG, Ino: p.ino(DescName)})
		if p.catalog != nil {
			ents = append(ents, fuse.DirEntry{Name: CatalogName, Mode: syscall.S_IFREG, Ino: p.ino(CatalogName)})
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	}
	t.opened()
	return &listDir{ents: ents, t: t}, 0, 0
}

func (r *remoteRoot) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	p, done := r.v.enter()
	defer done()
	out.SetTimeout(listTimeout)
	if p == nil {
		synthDirAttr(&out.Attr, nil)
		return 0
	}
	st, err := r.v.snaps.stat(p.name)
	if err != nil {
		return toErrno(r.v.log, "getattr "+p.name, err)
	}
	out.FromStat(&st)
	return 0
}

func (r *remoteRoot) Access(ctx context.Context, mask uint32) syscall.Errno {
	p, done := r.v.enter()
	defer done()
	if p == nil {
		return access(ctx, mask, syscall.S_IFDIR|0o555, 0, 0)
	}
	st, err := r.v.snaps.stat(p.name)
	if err != nil {
		return toErrno(r.v.log, "access "+p.name, err)
	}
	return access(ctx, mask, st.Mode, st.Uid, st.Gid)
}

func (r *remoteRoot) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	_, done := r.v.enter()
	defer done()
	return statfs(r.v.snaps, r.v.log, out)
}

// mountOptions are the options of the read-only mounts this package makes
// itself (remote view, administrators' history).
func mountOptions(fsname string, allowOther, debugFUSE bool, log *slog.Logger) *fs.Options {
	return &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:      fsname,
			Name:        "v2backup",
			AllowOther:  allowOther,
			Options:     []string{"default_permissions"},
			DirectMount: true,
			// read-only in the kernel too; nosuid, nodev as fusermount does
			DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
			// Content never changes under a node: no invalidation on
			// mtime or size changes.
			ExplicitDataCacheControl: true,
			MaxWrite:                 1 << 20,
			Debug:                    debugFUSE,
			PanicHandler: func(r any) fuse.Status {
				log.Error("roview: panic in a FUSE handler", "panic", r, "stack", string(debug.Stack()))
				return fuse.EIO
			},
		},
		NullPermissions: true,
	}
}

// MountAdmin mounts the administrators' all-VM history of snapDir
// (AdminHistory) read-only at mountpoint. When run as root it allows
// other users in and lets the kernel check the backing modes, so each
// user reads exactly what they could read in snapDir itself.
func MountAdmin(mountpoint, snapDir string) (*fuse.Server, error) {
	if snapDir == "" || !filepath.IsAbs(snapDir) {
		return nil, fmt.Errorf("admin history: snapshot directory %q must be an absolute path", snapDir)
	}
	root := AdminHistory(snapDir)
	srv, err := fs.Mount(mountpoint, root, mountOptions("v2backup-history", isRoot(), false, slog.Default()))
	if err != nil {
		return nil, fmt.Errorf("mount admin history of %s at %s: %w", snapDir, mountpoint, err)
	}
	return srv, nil
}

func isRoot() bool { return syscall.Geteuid() == 0 }
