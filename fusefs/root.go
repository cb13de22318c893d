package fusefs

import (
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// VirtiofsCacheTTL is the guest kernel's cache lifetime for a root served
// without a host mount: over vhost-user the daemon cannot tell the guest
// to forget entries (notifications are not delivered), so after a
// copy-on-write or a SIGHUP reroute the guest must look again soon.
const VirtiofsCacheTTL = time.Second

// Root is a VM's filesystem without a kernel mount on the host, for a
// transport that serves the node tree itself (vhost-user-fs: the guest
// mounts it with -t virtiofs). Routing, confinement, ownership,
// copy-on-write and cataloging are those of a mounted VM.
type Root struct {
	fsys *filesystem
	opts *fs.Options
}

// NewRoot builds the node tree of cfg. Kernel passthrough is off (there is
// no host kernel mount to register backing files with) and the cache
// lifetime is VirtiofsCacheTTL unless cfg.CacheTTL says otherwise.
func NewRoot(cfg Config) (*Root, error) {
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = VirtiofsCacheTTL
	}
	fsys, err := newFilesystem(cfg)
	if err != nil {
		return nil, err
	}
	ttl := cfg.CacheTTL
	lg := fsys.log
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			MaxWrite: 1 << 20,
			Debug:    cfg.Debug,
			Logger:   log.New(slogWriter{lg, slog.LevelDebug}, "", 0),
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
	return &Root{fsys: fsys, opts: opts}, nil
}

// Node is the root node to serve.
func (r *Root) Node() fs.InodeEmbedder { return r.fsys.root }

// Options are the fs options to serve it with.
func (r *Root) Options() *fs.Options { return r.opts }

// SetApps reroutes the VM's applications, as Mount.SetApps does.
func (r *Root) SetApps(apps []App) error { return r.fsys.setApps(apps) }

// Close releases the backing directory; call it once nothing serves the
// tree any more.
func (r *Root) Close() { r.fsys.close() }
