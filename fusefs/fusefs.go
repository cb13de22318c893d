// Package fusefs is the per-VM FUSE filesystem of the host daemon. A VM's
// mount shows its applications' relpaths: the directories above them
// (demo.softxs.ch/) are synthesized read-only from the inventory, each
// relpath directory and everything below it is routed read-write to
// {LocalRoot}/{VM}/{relpath}. The daemon never follows a symlink in the
// backing tree, confines every name to its application, breaks hard links
// shared with snapshots before a file changes, and reports writes to a
// Recorder without waiting for it.
package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/fusefs/internal/opstats"
	"github.com/softxs/v2backup/fusefs/internal/prune"
	"github.com/softxs/v2backup/fusefs/internal/uring"
	"github.com/softxs/v2backup/fusefs/route"
)

// App is one application routed by a VM mount.
type App struct {
	Name    string // inventory name, e.g. "hydro"
	Relpath string // already validated, e.g. "demo.softxs.ch/hydro"
}

// Recorder receives catalog events; *catalog.Recorder implements it.
// Paths are relative to LocalRoot: "web/demo.softxs.ch/hydro/db/x.sql.gz".
// Calls must be cheap and non-blocking (the implementation queues): they
// are made on the FUSE request path.
type Recorder interface {
	// Written: a file opened for writing was closed (its last handle
	// released). Also sent for both sides of a RENAME_EXCHANGE.
	Written(app, path string)
	// Removed: a file, or a directory (the whole prefix), was removed.
	Removed(app, path string)
	// Renamed: a file or directory (the whole prefix) moved within app.
	Renamed(app, from, to string)
}

// DefaultMaxFileInodes is how many files (anything but a directory) a
// mount lets the kernel remember before it asks the kernel to forget the
// least recently used (Config.MaxFileInodes; see fusefs/internal/prune).
const DefaultMaxFileInodes = prune.DefaultMax

// DefaultCacheTTL is how long the kernel may cache entries, attributes and
// negative lookups. The daemon is the only writer of its backing tree and
// invalidates what it changes behind the kernel's back, so it can be long.
const DefaultCacheTTL = time.Hour

// Config describes one VM mount.
type Config struct {
	VM        string // VM name ("_host" = the reserved no-VM name)
	LocalRoot string // {partition}/local; backing dir = LocalRoot/VM
	Apps      []App
	Recorder  Recorder     // may be nil
	Logger    *slog.Logger // may be nil
	Debug     bool         // go-fuse protocol trace
	// Extra are root entries added by other packages (".history", built by
	// fusefs/roview). They are listed in the root, sorted with the routed
	// names, and must not collide with them. Each must be a directory.
	Extra map[string]fs.InodeEmbedder
	// CacheTTL overrides DefaultCacheTTL when positive.
	CacheTTL time.Duration
	// NoPassthrough disables kernel FUSE passthrough even where the
	// kernel offers it (every read and write then goes through the daemon).
	NoPassthrough bool
	// NoURing serves requests through /dev/fuse even where the kernel
	// lets FUSE use io_uring (see fusefs/internal/uring).
	NoURing bool
	// Stats counts the requests the kernel sends, per opcode, and the
	// time their handlers take (Mount.Stats); off by default.
	Stats bool
	// MaxFileInodes caps the files (not directories) the kernel, and so
	// the daemon, remembers for this mount; past it the least recently
	// used are forgotten (FUSE_NOTIFY_PRUNE, Linux 6.18). 0 means
	// DefaultMaxFileInodes, negative no cap.
	MaxFileInodes int
}

// Mount is a mounted VM filesystem.
type Mount struct {
	mountpoint string
	fsys       *filesystem
	server     *uring.Conn
	stats      *opstats.FS // nil unless Config.Stats
	unmountMu  sync.Mutex
	unmounted  bool
}

// MountVM mounts the VM filesystem described by cfg at mountpoint, with
// allow_other and default_permissions, fsname "v2backup:{vm}". The backing
// directory and the application directories are created when missing.
// It returns once the kernel has acknowledged the mount. (Go cannot have
// both a type and a function named Mount; the type won.)
func MountVM(mountpoint string, cfg Config) (*Mount, error) {
	fsys, err := newFilesystem(cfg)
	if err != nil {
		return nil, err
	}
	ttl := fsys.ttl
	lg := fsys.log
	traceLevel := slog.LevelDebug
	if cfg.Debug {
		traceLevel = slog.LevelInfo
	}
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:   true,
			Options:      []string{"default_permissions"},
			FsName:       "v2backup:" + cfg.VM,
			Name:         "v2backup",
			DirectMount:  true,
			MaxWrite:     1 << 20,
			MaxReadAhead: 1 << 20,
			// Symlinks are never changed in place (only replaced).
			EnableSymlinkCaching: true,
			// No security.capability round trip before every write;
			// the daemon clears set-ID bits itself (killpriv.go).
			ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2,
			Debug:             cfg.Debug,
			Logger:            log.New(slogWriter{lg, traceLevel}, "", 0),
			PanicHandler: func(v any) fuse.Status {
				lg.Error("fusefs: panic in request handler", "vm", cfg.VM, "panic", fmt.Sprint(v))
				return fuse.EIO
			},
		},
		EntryTimeout:    &ttl,
		AttrTimeout:     &ttl,
		NegativeTimeout: &ttl,
		NullPermissions: true,
		Logger:          log.New(slogWriter{lg, slog.LevelWarn}, "", 0),
		RootStableAttr:  &fs.StableAttr{Ino: 1},
	}
	fsys.prune = prune.New(cfg.MaxFileInodes, fsys.root.NotifyPrune, lg.With("vm", cfg.VM))
	// fs.Mount, with room for the counting wrapper.
	var raw fuse.RawFileSystem = fs.NewNodeFS(fsys.root, opts)
	var stats *opstats.FS
	if cfg.Stats {
		stats = opstats.Wrap(raw)
		raw = stats
	}
	server, err := uring.NewServer(raw, mountpoint, &opts.MountOptions, cfg.NoURing, lg)
	if err != nil {
		fsys.close()
		return nil, fmt.Errorf("fusefs: mount VM %q at %s: %w", cfg.VM, mountpoint, err)
	}
	m := &Mount{mountpoint: mountpoint, fsys: fsys, server: server, stats: stats}
	fsys.prune.Start()
	fsys.passthrough.Store(!cfg.NoPassthrough && probePassthrough(server.Server, fsys.rootFd))
	lg.Info("fusefs: mounted", "vm", cfg.VM, "mountpoint", mountpoint,
		"backing", fsys.backing, "apps", len(cfg.Apps), "passthrough", fsys.passthrough.Load(),
		"transport", server.Transport())
	return m, nil
}

// probePassthrough reports whether the kernel accepts backing files: it
// must offer CAP_PASSTHROUGH (Linux 6.9 and later) and let this process
// register one (CAP_SYS_ADMIN).
func probePassthrough(server *fuse.Server, dirfd int) bool {
	if server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		return false
	}
	fd, err := unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		fd, err = unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return false
		}
	}
	defer unix.Close(fd)
	id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
	if errno != 0 {
		return false
	}
	server.UnregisterBackingFd(id)
	return true
}

// Passthrough reports whether kernel FUSE passthrough is in use: file data
// then moves between the application and the backing file without the
// daemon.
func (m *Mount) Passthrough() bool { return m.fsys.passthrough.Load() }

// FileInodes reports how many files (not directories) the kernel may
// still remember through this mount, and how many it has been asked to
// forget so far to stay under Config.MaxFileInodes; 0, 0 without a cap.
func (m *Mount) FileInodes() (live, pruned int64) {
	return m.fsys.prune.Live(), m.fsys.prune.Pruned()
}

// Transport names how the kernel's requests reach the daemon:
// "io_uring" or "/dev/fuse".
func (m *Mount) Transport() string { return m.server.Transport() }

// RingRequests reports how many requests came through io_uring.
func (m *Mount) RingRequests() uint64 { return m.server.RingRequests() }

// Mountpoint returns where the filesystem is mounted.
func (m *Mount) Mountpoint() string { return m.mountpoint }

// SetApps reroutes the mount to a new list of applications without
// unmounting: new relpaths appear, removed ones disappear (their data stays
// on disk), and the kernel's cached entries for changed names are dropped.
// A list that does not validate leaves the current routing in place.
func (m *Mount) SetApps(apps []App) error {
	return m.fsys.setApps(apps)
}

// Wait blocks until the filesystem is unmounted.
func (m *Mount) Wait() { m.server.Wait() }

// Unmount unmounts the filesystem, retrying while it is busy; as a last
// resort it detaches it lazily and aborts the FUSE connection, so the
// serving loop ends even if a process still holds a file open.
func (m *Mount) Unmount() error {
	m.unmountMu.Lock()
	defer m.unmountMu.Unlock()
	if m.unmounted {
		return nil
	}
	m.fsys.prune.Close()
	var st unix.Stat_t
	statErr := unix.Stat(m.mountpoint, &st)
	// Only a FUSE filesystem at the mount point has a connection of ours
	// to abort: if the mount is already gone, st is the directory below.
	var sfs unix.Statfs_t
	isFUSE := unix.Statfs(m.mountpoint, &sfs) == nil && sfs.Type == fuseSuperMagic
	// Busy usually means releases of just-closed files are still on
	// their way; give them a moment before detaching.
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err = m.server.Unmount(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		m.fsys.log.Warn("fusefs: unmount busy, detaching lazily", "mountpoint", m.mountpoint, "err", err)
		if derr := unix.Unmount(m.mountpoint, unix.MNT_DETACH); derr != nil && !errors.Is(derr, unix.EINVAL) {
			return fmt.Errorf("fusefs: unmount %s: %v; lazy unmount: %w", m.mountpoint, err, derr)
		}
		if statErr == nil && isFUSE {
			abortConnection(st.Dev)
		}
		m.server.Wait()
	}
	m.unmounted = true
	m.fsys.close()
	return nil
}

// fuseSuperMagic is statfs's f_type of a FUSE filesystem.
const fuseSuperMagic = 0x65735546

// abortConnection aborts the FUSE connection of a detached mount so that
// its serving loop returns.
func abortConnection(dev uint64) {
	const ctl = "/sys/fs/fuse/connections"
	p := fmt.Sprintf("%s/%d/abort", ctl, unix.Minor(dev))
	if _, err := os.Stat(p); err != nil {
		// fusectl is not always mounted; it is needed to abort.
		_ = unix.Mount("fusectl", ctl, "fusectl", 0, "")
	}
	_ = os.WriteFile(p, []byte("1"), 0)
}

// RecoverStale detaches a mount left behind by a crashed daemon
// ("transport endpoint is not connected") so that mountpoint can be
// mounted again. It is a no-op when mountpoint is healthy or not mounted.
func RecoverStale(mountpoint string) error {
	// statfs, not stat: the kernel may answer stat from its attribute
	// cache even when the daemon behind the mount is gone.
	var sfs unix.Statfs_t
	err := unix.Statfs(mountpoint, &sfs)
	// A connection served through io_uring is torn down asynchronously
	// after its daemon died; until then a request fails with ECANCELED.
	for deadline := time.Now().Add(2 * time.Second); errors.Is(err, unix.ECANCELED) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		err = unix.Statfs(mountpoint, &sfs)
	}
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOTCONN) && !errors.Is(err, unix.ECONNABORTED) && !errors.Is(err, unix.ECANCELED) {
		return fmt.Errorf("fusefs: check mount point %s: %w", mountpoint, err)
	}
	if err := unix.Unmount(mountpoint, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("fusefs: detach stale mount %s: %w", mountpoint, err)
	}
	if err := unix.Statfs(mountpoint, &sfs); err != nil {
		return fmt.Errorf("fusefs: mount point %s still unusable after detaching the stale mount: %w", mountpoint, err)
	}
	return nil
}

func toRouteApps(apps []App) []route.App {
	out := make([]route.App, len(apps))
	for i, a := range apps {
		out[i] = route.App{Name: a.Name, Relpath: a.Relpath}
	}
	return out
}

func newFilesystem(cfg Config) (*filesystem, error) {
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.VM == "" || strings.ContainsAny(cfg.VM, "/\x00") || cfg.VM == "." || cfg.VM == ".." {
		return nil, fmt.Errorf("fusefs: invalid VM name %q", cfg.VM)
	}
	if !filepath.IsAbs(cfg.LocalRoot) {
		return nil, fmt.Errorf("fusefs: LocalRoot %q must be an absolute path", cfg.LocalRoot)
	}
	table, err := route.NewTable(toRouteApps(cfg.Apps))
	if err != nil {
		return nil, fmt.Errorf("fusefs: VM %q: %w", cfg.VM, err)
	}
	backing := filepath.Join(cfg.LocalRoot, cfg.VM)
	if err := os.MkdirAll(backing, 0o755); err != nil {
		return nil, fmt.Errorf("fusefs: create backing directory: %w", err)
	}
	rootFd, err := unix.Open(backing, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fusefs: open backing directory %s: %w", backing, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(rootFd, &st); err != nil {
		unix.Close(rootFd)
		return nil, fmt.Errorf("fusefs: stat backing directory %s: %w", backing, err)
	}
	old := unix.Umask(0o022)
	unix.Umask(old)
	var lim unix.Rlimit
	maxDirFds := int64(1024)
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		maxDirFds = max(64, min(int64(lim.Cur)/4, 16384))
	}
	ttl := cfg.CacheTTL
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	fsys := &filesystem{
		ttl:       ttl,
		maxDirFds: maxDirFds,
		vm:        cfg.VM,
		backing:   backing,
		rootFd:    rootFd,
		dev:       st.Dev,
		rec:       cfg.Recorder,
		log:       lg,
		umask:     uint32(old),
		asRoot:    os.Geteuid() == 0,
		start:     time.Now(),
		synthInos: map[string]uint64{},
		extra:     map[string]fs.InodeEmbedder{},
	}
	for name, e := range cfg.Extra {
		if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			fsys.close()
			return nil, fmt.Errorf("fusefs: invalid extra root entry name %q", name)
		}
		if e == nil {
			fsys.close()
			return nil, fmt.Errorf("fusefs: extra root entry %q is nil", name)
		}
		fsys.extra[name] = e
		fsys.extraNames = append(fsys.extraNames, name)
	}
	sort.Strings(fsys.extraNames)
	if err := fsys.checkExtra(table); err != nil {
		fsys.close()
		return nil, err
	}
	fsys.table.Store(table)
	fsys.ensureAppDirs(table)
	fsys.root = &synthDir{fsys: fsys, vpath: ""}
	return fsys, nil
}

// slogWriter adapts go-fuse's *log.Logger output to slog.
type slogWriter struct {
	l     *slog.Logger
	level slog.Level
}

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Log(context.Background(), w.level, "go-fuse: "+strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
