// Package pull is a backup server's pull of hosts' remote views: for each
// host, rsync over ssh into a staging tree (unchanged files hard-linked
// from the last good copy), verify every file against the pulled
// SHA256SUMS, switch the verified tree into {partition}/remote/{server}
// atomically, record the pull in the catalog, then snapshot the remote tier
// and write history files for each host and application.
//
// A failed or interrupted pull never touches the last good copy: rsync
// writes only into the staging tree, replaces files there by rename (never
// in place, which would write through the hard links into the good copy),
// and the switch happens only after verification.
package pull

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/pull/sums"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
	"github.com/softxs/v2backup/tiers/snapshot"
	"golang.org/x/sys/unix"
)

// App is an application of a pulled host, for its history file.
type App struct {
	Name    string
	VM      tiers.VM
	Relpath tiers.Relpath
}

// Host is one host to pull.
type Host struct {
	Server tiers.Server
	// SSH is user@address; Port 0 means 22.
	SSH  string
	Port int
	// View is the absolute path of the host's remote view.
	View string
	// Apps are its applications, for their history files.
	Apps []App
}

// Options configures Run.
type Options struct {
	// BackupServer is this machine's name, recorded with each pull.
	BackupServer tiers.Server
	// Partition holds the remote tier, the staging trees and the snapshots.
	Partition tiers.Partition
	Hosts     []Host
	// Parallel is how many hosts are pulled at once; 0 or 1: one after
	// another.
	Parallel int
	// Identity is the ssh private key, KnownHosts the only host keys
	// trusted (StrictHostKeyChecking=yes). Empty: ssh's defaults.
	Identity   string
	KnownHosts string
	// RsyncOptions are added to rsync's command line. Options that write
	// files in place are refused (see checkRsyncOptions).
	RsyncOptions []string
	// HistoryDir receives the history files; empty: none are written.
	HistoryDir string
	// DB is the catalog: pulls, and the remote tier's snapshot manifest.
	DB *catalog.DB
	// NoSnapshot skips the remote tier's snapshot (and its manifest);
	// history files are still written.
	NoSnapshot bool
	// FullVerify reads and hashes every pulled file. By default a file that
	// rsync hard-linked from the last good copy (the same inode, verified
	// by an earlier pull) and whose checksum is unchanged in the new
	// manifest is not read again: a daily pull then hashes only what
	// changed. Rot of such an inode on this server is what `v2backup
	// verify` finds, against the hashes recorded with each snapshot.
	FullVerify bool
	// Rsync and SSH are the programs; empty: "rsync" and "ssh" from PATH.
	Rsync, SSH string
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger

	// started, if set, is told about each rsync process (tests kill it).
	started func(host tiers.Server, pid int)
}

// Step is where a pull failed.
type Step string

// The steps of a pull, in order.
const (
	StepLock     Step = "lock"
	StepRsync    Step = "rsync"
	StepManifest Step = "manifest" // reading the pulled SHA256SUMS / SNAPSHOT.json
	StepVerify   Step = "verify"
	StepSwitch   Step = "switch"
	StepRecord   Step = "record"
)

// Result is the outcome of one host's pull.
type Result struct {
	Server tiers.Server
	// Snapshot is the host's snapshot that was pulled (from SNAPSHOT.json),
	// "" if it was never read.
	Snapshot string
	// Files and Bytes are the regular files of the verified copy.
	Files, Bytes int64
	Start        time.Time
	Duration     time.Duration
	// Step and Err say where and why it failed; Err is nil on success.
	Step Step
	Err  error
	// PullID is the catalog's record of it, 0 if it could not be recorded.
	PullID int64
	// Hashed counts the files read to verify them; the others were hard
	// links to the last good copy with an unchanged checksum.
	Hashed int64
	// Took is the wall time of each step that ran.
	Took map[Step]time.Duration

	files []sums.File       // the verified files, for the snapshot's hashes
	prev  map[string]string // the last good copy's manifest, for "changed"
}

// OK reports whether the pull succeeded.
func (r *Result) OK() bool { return r.Err == nil }

func (r *Result) Error() string {
	if r.Err == nil {
		return ""
	}
	return fmt.Sprintf("pull of %s: %s: %v", r.Server, r.Step, r.Err)
}

// Report is what Run did.
type Report struct {
	Results []Result
	// Snapshot is the remote tier's new snapshot, "" if none was taken.
	Snapshot string
	// History lists the history files written.
	History []string
	// SnapshotTook is the time the remote tier's snapshot took.
	SnapshotTook time.Duration
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) log() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

func (o *Options) check() error {
	if _, err := tiers.ParseServer(string(o.BackupServer)); err != nil {
		return fmt.Errorf("pull: backup server: %w", err)
	}
	if _, err := tiers.ParsePartition(string(o.Partition)); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	if o.DB == nil {
		return errors.New("pull: no catalog given")
	}
	if o.Parallel < 0 {
		return fmt.Errorf("pull: parallel %d must not be negative", o.Parallel)
	}
	if err := checkRsyncOptions(o.RsyncOptions); err != nil {
		return err
	}
	seen := map[tiers.Server]bool{}
	for _, h := range o.Hosts {
		if _, err := tiers.ParseServer(string(h.Server)); err != nil {
			return fmt.Errorf("pull: host: %w", err)
		}
		if seen[h.Server] {
			return fmt.Errorf("pull: host %s listed twice", h.Server)
		}
		seen[h.Server] = true
		if h.SSH == "" || strings.ContainsAny(h.SSH, " \t\n:'\"") {
			return fmt.Errorf("pull: host %s: ssh destination %q must be user@address with no spaces, quotes or ':'", h.Server, h.SSH)
		}
		if !filepath.IsAbs(h.View) || filepath.Clean(h.View) != h.View {
			return fmt.Errorf("pull: host %s: remote view %q must be an absolute, clean path", h.Server, h.View)
		}
		if h.Port < 0 || h.Port > 65535 {
			return fmt.Errorf("pull: host %s: ssh port %d out of range", h.Server, h.Port)
		}
	}
	return nil
}

// checkRsyncOptions refuses options that would write into a file that is
// a hard link to the last good copy or to a snapshot, or that take over
// the link-dest the pull sets itself.
func checkRsyncOptions(opts []string) error {
	for _, o := range opts {
		name, _, _ := strings.Cut(o, "=")
		switch name {
		case "--inplace", "--append", "--append-verify", "--link-dest", "--compare-dest", "--copy-dest",
			"--remove-source-files", "--write-devices", "--only-write-batch", "--read-batch":
			return fmt.Errorf("pull: rsync option %q is not allowed: it would write into the last good copy's hard-linked files or change where the pull writes", o)
		}
	}
	return nil
}

// FromInventory builds the options for backupServer from an inventory:
// its hosts (all it pulls, or only those named), their ssh addresses,
// remote views and applications, its key, known hosts, rsync options,
// parallelism, partition and history directory. The caller sets DB.
func FromInventory(inv *inventory.Inventory, backupServer tiers.Server, only []tiers.Server) (Options, error) {
	var bs *inventory.BackupServer
	for i := range inv.BackupServers {
		if inv.BackupServers[i].Name == backupServer {
			bs = &inv.BackupServers[i]
		}
	}
	if bs == nil {
		return Options{}, fmt.Errorf("%s: %s is not a backup server (no [[backup_server]] with that name)", inv.File, backupServer)
	}
	part := bs.Partition
	if part == "" {
		part = inv.Site.Partition
	}
	hist := inv.Site.History
	if hist == "" {
		hist = part.HistoryDir()
	}
	o := Options{
		BackupServer: backupServer, Partition: part, Parallel: bs.Parallel,
		Identity: bs.Identity, KnownHosts: bs.KnownHosts, RsyncOptions: bs.RsyncOptions,
		HistoryDir: hist,
	}
	for _, name := range only {
		if !slices.Contains(bs.Pulls, name) {
			return Options{}, fmt.Errorf("%s: backup server %s does not pull %s (its pulls: %v)", inv.File, backupServer, name, bs.Pulls)
		}
	}
	for _, name := range bs.Pulls {
		if len(only) > 0 && !slices.Contains(only, name) {
			continue
		}
		var srv *inventory.Server
		for i := range inv.Servers {
			if inv.Servers[i].Name == name {
				srv = &inv.Servers[i]
			}
		}
		if srv == nil {
			return Options{}, fmt.Errorf("%s: backup server %s pulls %s, which is not a [[server]]", inv.File, backupServer, name)
		}
		h := Host{Server: name, SSH: srv.SSH, Port: srv.SSHPort, View: srv.RemoteView}
		if h.SSH == "" {
			h.SSH = "root@" + string(name)
		}
		if h.View == "" {
			hp := srv.Partition
			if hp == "" {
				hp = inv.Site.Partition
			}
			h.View = filepath.Join(string(hp), "view")
		}
		for _, a := range inv.Apps {
			if a.Server == name {
				vm := a.VM
				if vm == "" {
					vm = tiers.NoVM
				}
				h.Apps = append(h.Apps, App{Name: a.Name, VM: vm, Relpath: a.Relpath})
			}
		}
		o.Hosts = append(o.Hosts, h)
	}
	return o, nil
}

// Run pulls every host, Parallel at a time, then snapshots the remote tier
// and writes the history files. The report lists every host in the order
// given, pulled or not; the error joins every failure.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	for _, d := range []string{o.Partition.RemoteRoot(), filepath.Dir(o.Partition.StagingDir("x.y"))} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("pull: %w", err)
		}
	}
	rep := &Report{Results: make([]Result, len(o.Hosts))}
	par := max(o.Parallel, 1)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i, h := range o.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rep.Results[i] = o.pullOne(ctx, h)
		}()
	}
	wg.Wait()

	var errs []error
	for i := range rep.Results {
		if r := &rep.Results[i]; !r.OK() {
			errs = append(errs, errors.New(r.Error()))
		}
	}
	now := o.now()
	name := snapshot.Name(now)
	if !o.NoSnapshot && slices.ContainsFunc(rep.Results, func(r Result) bool { return r.OK() }) {
		t0 := time.Now()
		err := o.snapshotRemote(ctx, name, now, rep)
		rep.SnapshotTook = time.Since(t0)
		if err != nil {
			errs = append(errs, fmt.Errorf("pull: snapshot of the remote tier: %w", err))
		} else {
			rep.Snapshot = name
		}
	}
	if o.HistoryDir != "" {
		written, err := o.writeHistory(name, now, rep)
		rep.History = written
		if err != nil {
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// pullOne pulls one host; it never returns with the last good copy touched
// unless the new one replaced it whole.
func (o *Options) pullOne(ctx context.Context, h Host) (r Result) {
	r = Result{Server: h.Server, Start: o.now(), Took: map[Step]time.Duration{}}
	t0 := time.Now()
	step := func(s Step) { r.Took[s] += time.Since(t0); t0 = time.Now() }
	log := o.log().With("host", h.Server)
	defer func() {
		r.Duration = o.now().Sub(r.Start)
		res, msg := catalog.RunOK, ""
		if r.Err != nil {
			res, msg = catalog.RunFailed, r.Error()
		}
		id, err := o.DB.RecordPull(context.WithoutCancel(ctx), catalog.Pull{
			BackupServer: string(o.BackupServer), HostServer: string(h.Server), Snapshot: r.Snapshot, HostSnapshot: r.Snapshot,
			Start: r.Start, End: r.Start.Add(r.Duration), Files: r.Files, Bytes: r.Bytes, Result: res, Error: msg,
		})
		if err != nil && r.Err == nil {
			r.Step, r.Err = StepRecord, err
		}
		r.PullID = id
		if r.Err != nil {
			log.Error("pull failed", "step", r.Step, "err", r.Err)
		} else {
			log.Info("pulled", "snapshot", r.Snapshot, "files", r.Files, "bytes", r.Bytes, "took", r.Duration.Round(time.Millisecond))
		}
	}()
	fail := func(s Step, err error) Result {
		r.Step, r.Err = s, err
		return r
	}

	stateDir := o.Partition.StateDir()
	unlock, err := snapshot.TryLock(filepath.Join(stateDir, "pull-"+string(h.Server)+".lock"))
	if err != nil {
		var held *snapshot.LockedError
		if errors.As(err, &held) {
			err = fmt.Errorf("another pull of %s is running (pid %d, since %s; lock %s)", h.Server, held.PID, held.Since.Local().Format(time.DateTime), held.Path)
		}
		return fail(StepLock, err)
	}
	defer unlock()

	current := o.Partition.RemoteServer(h.Server)
	staging := o.Partition.StagingDir(h.Server)
	hasCurrent, err := isDir(current)
	if err != nil {
		return fail(StepRsync, err)
	}
	// A staging tree left by a failed pull is reused: rsync brings it up
	// to date and verification covers every file anyway.
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return fail(StepRsync, err)
	}
	err = o.rsync(ctx, h, staging, current, hasCurrent)
	step(StepRsync)
	if err != nil {
		return fail(StepRsync, err)
	}

	desc, err := sums.ReadDescription(filepath.Join(staging, sums.DescName))
	if err != nil {
		return fail(StepManifest, fmt.Errorf("the pulled view has no usable %s: %w", sums.DescName, err))
	}
	r.Snapshot = desc.Snapshot
	if desc.Server != string(h.Server) {
		return fail(StepManifest, fmt.Errorf("%s:%s is the remote view of %q, not of %s", h.SSH, h.View, desc.Server, h.Server))
	}
	want, err := sums.ReadFile(filepath.Join(staging, sums.SumsName))
	if err != nil {
		return fail(StepManifest, fmt.Errorf("the pulled view has no usable %s: %w", sums.SumsName, err))
	}
	if int64(len(want)) != desc.Files {
		return fail(StepManifest, fmt.Errorf("%s lists %d files, %s says %d", sums.SumsName, len(want), sums.DescName, desc.Files))
	}
	if hasCurrent {
		if old, err := sums.ReadFile(filepath.Join(current, sums.SumsName)); err == nil {
			r.prev = make(map[string]string, len(old))
			for _, e := range old {
				r.prev[e.Path] = e.SHA256
			}
		}
	}
	vo := sums.Options{Ignore: []string{sums.SumsName, sums.DescName}}
	if desc.CatalogSHA256 != "" {
		// The host's catalog is checked against SNAPSHOT.json instead.
		vo.Ignore = append(vo.Ignore, tiers.ShippedCatalogName)
		t := time.Now()
		err := verifyCatalog(staging, desc)
		r.Took[StepVerify] += time.Since(t)
		if err != nil {
			return fail(StepVerify, fmt.Errorf("snapshot %s refused, last good copy kept: %w", desc.Snapshot, err))
		}
	}
	if !o.FullVerify && r.prev != nil {
		vo.Known = func(rel string, dev, ino uint64, size, mtimeNs int64) (string, bool) {
			sum, ok := r.prev[rel]
			if !ok {
				return "", false
			}
			var st unix.Stat_t
			if unix.Fstatat(unix.AT_FDCWD, filepath.Join(current, rel), &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				return "", false
			}
			return sum, st.Dev == dev && st.Ino == ino
		}
	}
	files, err := sums.Verify(ctx, staging, want, vo)
	step(StepVerify)
	if err != nil {
		return fail(StepVerify, fmt.Errorf("snapshot %s refused, last good copy kept: %w", desc.Snapshot, err))
	}
	for _, f := range files {
		r.Files++
		r.Bytes += f.Size
		if !f.Known {
			r.Hashed++
		}
	}

	err = o.switchIn(ctx, staging, current, hasCurrent)
	step(StepSwitch)
	if err != nil {
		return fail(StepSwitch, err)
	}
	r.files = files
	return r
}

func isDir(p string) (bool, error) {
	st, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !st.IsDir() {
		return false, fmt.Errorf("%s is not a directory (%v)", p, st.Mode().Type())
	}
	return true, nil
}

// switchIn makes the verified staging tree the current copy.
//
// It uses renameat2(RENAME_EXCHANGE): the current name never stops
// pointing at a complete tree, not even across a crash, unlike "rename the
// old copy aside, rename staging in", which leaves a window with no
// current copy at all. The old tree ends up at the staging name and is
// removed afterwards. The data is made durable (syncfs) before the
// exchange, and the exchange before the removal.
func (o *Options) switchIn(ctx context.Context, staging, current string, hasCurrent bool) error {
	fd, err := unix.Open(staging, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Syncfs(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("syncfs %s: %w", staging, err)
	}
	// A snapshot of the remote tier must never see half a switch.
	snapDir := o.Partition.SnapshotDir(tiers.Remote)
	if err := os.MkdirAll(snapDir, 0o700); err != nil {
		return err
	}
	unlock, err := snapshot.Lock(ctx, filepath.Join(snapDir, ".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if hasCurrent {
		err = unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, current, unix.RENAME_EXCHANGE)
	} else {
		err = unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, current, unix.RENAME_NOREPLACE)
	}
	if err != nil {
		return fmt.Errorf("moving %s to %s: %w", staging, current, err)
	}
	for _, d := range []string{filepath.Dir(current), filepath.Dir(staging)} {
		if err := tiers.SyncDir(d); err != nil {
			return err
		}
	}
	if hasCurrent {
		// The old copy, now at the staging name; its files live on in the
		// snapshots and as hard links in the new copy.
		if err := os.RemoveAll(staging); err != nil {
			o.log().Warn("pull: could not remove the replaced copy; the next pull reuses it as staging", "dir", staging, "err", err)
		}
	}
	return nil
}
