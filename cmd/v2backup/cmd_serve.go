package main

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"net"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/fusefs"
	"github.com/softxs/v2backup/fusefs/memlimit"
	"github.com/softxs/v2backup/fusefs/roview"
	"github.com/softxs/v2backup/fusefs/vhost"
	"github.com/softxs/v2backup/jobs/nightly"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

type serveOptions struct {
	Debug bool
}

func init() { commands = append(commands, newServeCommand) }

func newServeCommand(g *globalOptions) *cobra.Command {
	var o serveOptions
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the host daemon: mount every VM's backup directory and catalog what is written",
		Long: `Mounts one FUSE filesystem per VM of this server (and one for the
applications with no VM) at the mount points of the inventory, routes what
the VM writes to {partition}/local/{vm}/{relpath}, and records every file in
the catalog. Runs until SIGTERM or SIGINT, then unmounts and flushes the
catalog. SIGHUP re-reads the inventory: new VMs are mounted, removed ones
unmounted, moved applications rerouted; a broken inventory leaves the running
one in place. A stale mount left by a crash is detached and mounted again.
With NOTIFY_SOCKET set (systemd Type=notify) it reports READY=1 once every
mount is up.

With listen set (in [[server]], else [[backup_server]]) it also serves
/metrics for Prometheus and the status page at that address. On a machine
that is only a backup server it serves just that listener, without mounts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runServe(cmd.Context(), g, o) },
	}
	c.Flags().BoolVar(&o.Debug, "debug-fuse", false, "trace the FUSE protocol")
	return c
}

// daemon is the running host daemon: its mounts and the catalog behind them.
type daemon struct {
	g       *globalOptions
	o       serveOptions
	server  tiers.Server
	part    tiers.Partition
	db      *catalog.DB
	rec     *catalog.Recorder
	runs    *jobRuns
	mounts  map[tiers.VM]*vmMount
	sockets map[tiers.VM]*vmSocket
	ctx     context.Context
	view    *roview.RemoteView
	admin   *fuse.Server
	live    *daemonLive // counters for /metrics

	cur        atomic.Pointer[inventory.Inventory] // the inventory in force
	reschedule chan struct{}
}

// vmSocket is a VM served over vhost-user-fs: QEMU connects to the socket
// and the guest mounts -t virtiofs, with no host mount and no second daemon.
type vmSocket struct {
	path     string
	root     *fusefs.Root
	srv      *vhost.Server
	relpaths atomic.Pointer[[]string]
}

type vmMount struct {
	mountpoint string
	m          *fusefs.Mount
	relpaths   atomic.Pointer[[]string] // read by the .history node
}

func runServe(ctx context.Context, g *globalOptions, o serveOptions) error {
	// Before anything else: a SIGHUP must never kill a starting daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	inv, server, err := g.inventoryAndServer()
	if err != nil {
		return err
	}
	if _, ok := inv.Server(server); !ok {
		if inv.IsBackupServer(server) {
			return serveBackupServer(ctx, g, inv, server, hup)
		}
		return usagef("server %s is not declared in %s (use --server)", server, inv.File)
	}
	// The mounts' inode tables are most of the heap; hold it near them.
	memlimit.Keep(ctx, memlimit.Default, memlimit.Interval, g.log)
	d := &daemon{g: g, o: o, server: server, part: inv.Partition(server), mounts: map[tiers.VM]*vmMount{},
		sockets: map[tiers.VM]*vmSocket{}, ctx: ctx}
	if err := os.MkdirAll(d.part.LocalRoot(), 0o755); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	d.db, err = catalog.Open(inv.CatalogPath(server))
	if err != nil {
		return fmt.Errorf("serve: catalog: %w", err)
	}
	d.rec, err = catalog.NewRecorder(d.db, d.part.LocalRoot(), catalog.RecorderOptions{Logger: g.log})
	if err != nil {
		d.db.Close()
		return fmt.Errorf("serve: %w", err)
	}
	d.runs = newJobRuns(d.rec, d.db, d.part.LocalRoot(), g.log)
	var background sync.WaitGroup
	defer func() {
		background.Wait()
		d.runs.Close()
		fctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := d.rec.Close(fctx); err != nil {
			g.log.Error("flushing the catalog", "err", err)
		}
		if err := d.db.Close(); err != nil {
			g.log.Error("closing the catalog", "err", err)
		}
	}()
	defer d.unmountAll()

	if err := d.db.UpsertApplications(ctx, catalogApps(inv)); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := d.apply(inv); err != nil {
		// One VM's broken mount point or socket must not take the others
		// down; only a daemon that can serve nothing gives up.
		if len(d.mounts)+len(d.sockets) == 0 {
			return err
		}
		g.log.Error("some VMs are not served", "err", err)
	}
	if why := d.rec.Dirty(); why != "" {
		// A crash or dropped events: bring the catalog back in line with
		// the disk while serving.
		g.log.Warn("the catalog may be out of step with the disk; rescanning in the background", "why", why)
		background.Add(1)
		go func() {
			defer background.Done()
			st, err := d.rec.Rescan(ctx, catalog.RescanOptions{AppOf: appAttributor(inv, server), Logger: g.log})
			if err != nil {
				g.log.Error("background rescan", "err", err)
				return
			}
			g.log.Info("background rescan done", "files", st.Files, "hashed", st.Hashed, "added", st.Added, "updated", st.Updated, "removed", st.Removed)
		}()
	}
	d.cur.Store(inv)
	if err := d.mountViews(inv); err != nil {
		return err
	}
	defer d.unmountViews()
	web := d.startDaemonHTTP(inv)
	defer web.Close(g.log)
	d.reschedule = make(chan struct{}, 1)
	background.Add(1)
	go func() {
		defer background.Done()
		d.nightlyLoop(ctx)
	}()
	g.log.Info("serving", "server", server, "partition", d.part, "mounts", len(d.mounts))
	return serveUntilDone(ctx, g, hup, func(next *inventory.Inventory) {
		if err := d.apply(next); err != nil {
			g.log.Error("reload applied partly", "err", err)
		}
		d.publishMounts()
		d.cur.Store(next)
		select {
		case d.reschedule <- struct{}{}:
		default:
		}
	})
}

// serveUntilDone tells systemd the daemon is ready and runs until ctx
// ends. Each SIGHUP re-reads the inventory and hands a valid one to
// reload; a broken one is logged and the running one kept.
func serveUntilDone(ctx context.Context, g *globalOptions, hup <-chan os.Signal, reload func(*inventory.Inventory)) error {
	sdNotify("READY=1")
	for {
		select {
		case <-ctx.Done():
			g.log.Info("shutting down")
			sdNotify("STOPPING=1")
			return nil
		case <-hup:
			g.log.Info("SIGHUP: reloading inventory", "file", g.Config)
			sdNotify("RELOADING=1")
			if next, err := g.loadInventory(); err != nil {
				g.log.Error("reload failed; keeping the running inventory", "err", err)
			} else {
				reload(next)
			}
			sdNotify("READY=1")
		}
	}
}

// apply makes the mounts match the inventory: new VMs mounted, removed ones
// unmounted, the others rerouted to their current applications.
func (d *daemon) apply(inv *inventory.Inventory) error {
	want := map[tiers.VM]string{}     // vm -> mountpoint
	wantSock := map[tiers.VM]string{} // vm -> socket
	for _, vm := range inv.VMsOn(d.server) {
		if vm.Export == inventory.ExportFUSE || vm.Export == inventory.ExportBoth {
			want[vm.Name] = vm.Mount
		}
		if vm.Export == inventory.ExportVirtiofs || vm.Export == inventory.ExportBoth {
			wantSock[vm.Name] = vm.Socket
		}
	}
	errs := d.applySockets(inv, wantSock)
	if apps := inv.AppsOn(d.server, tiers.NoVM); len(apps) > 0 {
		srv, _ := inv.Server(d.server)
		want[tiers.NoVM] = srv.HostMount
	}
	for _, vm := range sortedVMs(d.mounts) {
		mp, ok := want[vm]
		if ok && mp == d.mounts[vm].mountpoint {
			continue
		}
		d.g.log.Info("unmounting", "vm", vm, "mountpoint", d.mounts[vm].mountpoint)
		if err := d.mounts[vm].m.Unmount(); err != nil {
			errs = append(errs, fmt.Errorf("vm %s: unmount %s: %w", vm, d.mounts[vm].mountpoint, err))
			continue
		}
		delete(d.mounts, vm)
	}
	for _, vm := range sortedVMs(want) {
		apps := fuseApps(inv.AppsOn(d.server, vm))
		rels := relpathsOf(apps)
		if cur, ok := d.mounts[vm]; ok {
			if err := cur.m.SetApps(apps); err != nil {
				errs = append(errs, fmt.Errorf("vm %s: reroute: %w", vm, err))
				continue
			}
			cur.relpaths.Store(&rels)
			continue
		}
		mp := want[vm]
		if err := prepareMountpoint(mp); err != nil {
			errs = append(errs, fmt.Errorf("vm %s: %w", vm, err))
			continue
		}
		vmm := &vmMount{mountpoint: mp}
		vmm.relpaths.Store(&rels)
		history := roview.NewHistory(d.part.SnapshotDir(tiers.Local), string(vm), func() []string { return *vmm.relpaths.Load() })
		cfg := fusefs.Config{
			VM: string(vm), LocalRoot: d.part.LocalRoot(), Apps: apps,
			Recorder: d.runs, Logger: d.g.log, Debug: d.o.Debug, Stats: true,
			Extra: map[string]fs.InodeEmbedder{".history": history},
		}
		if _, both := wantSock[vm]; both {
			// The same tree is also written over virtiofs, behind this
			// mount's kernel cache: keep that cache short.
			cfg.CacheTTL = fusefs.VirtiofsCacheTTL
		}
		m, err := fusefs.MountVM(mp, cfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("vm %s: mount %s: %w", vm, mp, err))
			continue
		}
		vmm.m = m
		d.mounts[vm] = vmm
	}
	return errors.Join(errs...)
}

// mountViews mounts the read-only remote view that backup servers pull
// (the latest complete snapshot, with SHA256SUMS) and, if configured, the
// all-VM history for administrators.
func (d *daemon) mountViews(inv *inventory.Inventory) error {
	srv, _ := inv.Server(d.server)
	snapDir := d.part.SnapshotDir(tiers.Local)
	if err := os.MkdirAll(snapDir, 0o755); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := prepareMountpoint(srv.RemoteView); err != nil {
		return fmt.Errorf("serve: remote view: %w", err)
	}
	view, err := roview.MountRemoteView(srv.RemoteView, roview.RemoteOptions{
		SnapDir: snapDir, Server: string(d.server), Manifest: d.manifest,
		StateDir: d.part.StateDir(), AllowOther: true, Logger: d.g.log.With("view", "remote"),
		Idle: srv.RemoteViewIdle.Duration, ShippedDir: nightly.ShippedDir(d.part),
	})
	if err != nil {
		return fmt.Errorf("serve: remote view at %s: %w", srv.RemoteView, err)
	}
	d.view = view
	d.g.log.Info("remote view mounted", "mountpoint", srv.RemoteView, "snapshot", view.Snapshot())
	if srv.HistoryMount != "" {
		if err := prepareMountpoint(srv.HistoryMount); err != nil {
			return fmt.Errorf("serve: history mount: %w", err)
		}
		if d.admin, err = roview.MountAdmin(srv.HistoryMount, snapDir); err != nil {
			return fmt.Errorf("serve: history mount at %s: %w", srv.HistoryMount, err)
		}
		d.g.log.Info("history mounted", "mountpoint", srv.HistoryMount)
	}
	return nil
}

func (d *daemon) unmountViews() {
	if d.view != nil {
		if err := d.view.Unmount(); err != nil {
			d.g.log.Error("unmount remote view", "err", err)
		}
	}
	if d.admin != nil {
		if err := d.admin.Unmount(); err != nil {
			d.g.log.Error("unmount history", "err", err)
		}
	}
}

// manifest gives the remote view a snapshot's files and hashes from the
// catalog, so SHA256SUMS costs no reading.
func (d *daemon) manifest(name string) ([]roview.ManifestEntry, error) {
	ctx := context.Background()
	snap, err := d.db.SnapshotByName(ctx, tiers.Local, string(d.server), name)
	if err != nil {
		return nil, err
	}
	var out []roview.ManifestEntry
	err = d.db.WalkManifest(ctx, snap.ID, "", func(e catalog.ManifestEntry) error {
		if e.SHA256 == "" {
			return fmt.Errorf("snapshot %s: %s has no hash in the catalog", name, e.Path)
		}
		out = append(out, roview.ManifestEntry{Path: e.Path, SHA256: e.SHA256, Size: e.Size})
		return nil
	})
	return out, err
}

// nightlyLoop takes the nightly snapshot at the inventory's time: it waits
// for the night's backups until the deadline, snapshots, writes history
// files, applies retention and purges pruned snapshots at idle priority.
func (d *daemon) nightlyLoop(ctx context.Context) {
	for {
		inv := d.cur.Load()
		at := inv.Site.Snapshot.Time
		next := at.Next(time.Now())
		d.g.log.Info("next nightly snapshot", "at", next.Format(time.DateTime))
		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-d.reschedule:
			timer.Stop()
			continue
		case <-timer.C:
		}
		d.runNightly(ctx, d.cur.Load())
	}
}

func (d *daemon) runNightly(ctx context.Context, inv *inventory.Inventory) {
	start := time.Now()
	d.g.log.Info("nightly snapshot: waiting for the night's backups", "deadline", start.Add(inv.Site.Snapshot.Deadline.Duration).Format(time.DateTime))
	if err := d.rec.Flush(ctx); err != nil {
		d.g.log.Warn("nightly snapshot: catalog flush", "err", err)
	}
	rep, err := nightly.Run(ctx, nightly.Options{Inv: inv, Server: d.server, Tier: tiers.Local, DB: d.db, Wait: true, Logger: d.g.log})
	if rep != nil {
		for _, a := range rep.Apps {
			d.g.log.Info("nightly snapshot", "snapshot", rep.Snapshot, "app", a.App, "state", a.State, "files", a.Files, "bytes", a.Bytes, "why", a.Why)
		}
	}
	if err != nil {
		d.g.log.Error("nightly snapshot failed", "err", err)
		return
	}
	if _, err := d.view.Refresh(); err != nil {
		d.g.log.Warn("remote view: switching to the new snapshot", "err", err)
	}
	if purged, err := nightly.Purge(ctx, inv, d.server, tiers.Local); err != nil {
		d.g.log.Error("purging pruned snapshots", "err", err)
	} else if len(purged) > 0 {
		d.g.log.Info("purged pruned snapshots", "snapshots", purged)
	}
}

// applySockets makes the vhost-user-fs sockets match want. A socket that
// cannot be created is an error for its VM only.
func (d *daemon) applySockets(inv *inventory.Inventory, want map[tiers.VM]string) []error {
	var errs []error
	for _, vm := range sortedVMs(d.sockets) {
		if p, ok := want[vm]; ok && p == d.sockets[vm].path {
			continue
		}
		d.closeSocket(vm)
	}
	for _, vm := range sortedVMs(want) {
		apps := fuseApps(inv.AppsOn(d.server, vm))
		rels := relpathsOf(apps)
		if cur, ok := d.sockets[vm]; ok {
			if err := cur.root.SetApps(apps); err != nil {
				errs = append(errs, fmt.Errorf("vm %s: reroute socket: %w", vm, err))
				continue
			}
			cur.relpaths.Store(&rels)
			continue
		}
		vs := &vmSocket{path: want[vm]}
		vs.relpaths.Store(&rels)
		// A node tree belongs to one server: the socket gets its own.
		history := roview.NewHistory(d.part.SnapshotDir(tiers.Local), string(vm), func() []string { return *vs.relpaths.Load() })
		root, err := fusefs.NewRoot(fusefs.Config{
			VM: string(vm), LocalRoot: d.part.LocalRoot(), Apps: apps,
			Recorder: d.runs, Logger: d.g.log, Debug: d.o.Debug,
			Extra: map[string]fs.InodeEmbedder{".history": history},
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("vm %s: %w", vm, err))
			continue
		}
		srv, err := vhost.Serve(d.ctx, vs.path, root.Node(), root.Options(), d.g.log.With("vm", vm))
		if err != nil {
			root.Close()
			d.g.log.Error("virtiofs socket not served; the other VMs go on", "vm", vm, "socket", vs.path, "err", err)
			errs = append(errs, fmt.Errorf("vm %s: socket %s: %w", vm, vs.path, err))
			continue
		}
		vs.root, vs.srv = root, srv
		d.sockets[vm] = vs
		d.g.log.Info("virtiofs socket listening", "vm", vm, "socket", vs.path, "apps", len(apps))
	}
	return errs
}

func (d *daemon) closeSocket(vm tiers.VM) {
	vs := d.sockets[vm]
	d.g.log.Info("closing virtiofs socket", "vm", vm, "socket", vs.path)
	if err := vs.srv.Close(); err != nil {
		d.g.log.Error("closing virtiofs socket", "vm", vm, "err", err)
	}
	vs.root.Close()
	delete(d.sockets, vm)
}

func (d *daemon) unmountAll() {
	for _, vm := range sortedVMs(d.sockets) {
		d.closeSocket(vm)
	}
	for _, vm := range sortedVMs(d.mounts) {
		if err := d.mounts[vm].m.Unmount(); err != nil {
			d.g.log.Error("unmount", "vm", vm, "err", err)
		}
		delete(d.mounts, vm)
	}
}

// prepareMountpoint creates a missing mount point, or detaches a stale
// mount a crashed daemon left there.
func prepareMountpoint(mp string) error {
	if _, err := os.Lstat(mp); errors.Is(err, iofs.ErrNotExist) {
		return os.MkdirAll(mp, 0o755)
	}
	return fusefs.RecoverStale(mp)
}

func fuseApps(apps []inventory.App) []fusefs.App {
	out := make([]fusefs.App, len(apps))
	for i, a := range apps {
		out[i] = fusefs.App{Name: a.Name, Relpath: string(a.Relpath)}
	}
	return out
}

func relpathsOf(apps []fusefs.App) []string {
	out := make([]string, len(apps))
	for i, a := range apps {
		out[i] = a.Relpath
	}
	return out
}

func sortedVMs[V any](m map[tiers.VM]V) []tiers.VM {
	vms := make([]tiers.VM, 0, len(m))
	for vm := range m {
		vms = append(vms, vm)
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i] < vms[j] })
	return vms
}

// sdNotify tells systemd (Type=notify) or a test harness about our state;
// a no-op without NOTIFY_SOCKET.
func sdNotify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	conn.Write([]byte(state))
}
