// Package jobs runs application backup jobs and restores their results.
//
// A job backs up one application of the inventory into
// {target}/{relpath}/, where target is the well-known directory: /backup
// inside a VM (the host daemon's mount), or the host mount for applications
// with no VM. Each application type has its own job (rails, drawmgt,
// moinmoin, git, cvs, maildir, wordpress, files) that uses the real tools:
// mariadb-dump/mysqldump, pg_dump, rsync, git, gzip.
//
// A job never needs the catalog, which lives on the host: it records its run
// in {target}/{relpath}/.v2backup-job (package runfile), which the host
// daemon sees through the mount.
//
// Failure keeps the previous backup usable: database dumps and git bundles
// are written under a temporary name (".tmp-…") and renamed into place only
// after they have been read back and verified; rsync replaces each file
// atomically (temporary file + rename), so a failed run leaves every file
// whole, some from the previous run and some from this one, and the run file
// says "failed" so the host takes the snapshot from the last complete state.
//
// Symlinks that point out of the application's tree (Capistrano's absolute
// current and linked files) are recorded in {relpath}/.v2backup-symlinks
// instead of being created, since the host daemon's mount refuses links
// that lead out of a VM's tree; Restore recreates them.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/softxs/v2backup/jobs/runfile"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// DefaultGuestDir is the well-known directory inside a VM.
const DefaultGuestDir = "/backup"

// DefaultHostMount is where a host mounts the directory of its applications
// with no VM.
const DefaultHostMount = "/srv/v2backup/_host"

// DefaultKeepDumps is how many database dumps stay in the live tree when
// the inventory does not say.
const DefaultKeepDumps = 3

// DefaultLockWait is how long a CVS job waits for a repository lock.
const DefaultLockWait = 10 * time.Minute

// Options configures backup runs.
type Options struct {
	// Target is the well-known directory the application's relpath lies
	// under (see TargetDir). Required.
	Target string
	// Host names the machine running the job in the run file; default
	// os.Hostname().
	Host string
	// Now is the clock (dump names, run times); nil means time.Now.
	Now func() time.Time
	// Getenv resolves ENV[...] in database.yml; nil means os.Getenv.
	Getenv func(string) string
	// LockWait is how long a CVS job waits for a running CVS command's lock
	// before it reports it; default DefaultLockWait.
	LockWait time.Duration
	// Progress receives progress lines for long runs (a terminal); nil
	// means quiet, as under cron.
	Progress io.Writer
	// Logger receives one line per step; nil discards.
	Logger *slog.Logger
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) getenv(k string) string {
	if o.Getenv != nil {
		return o.Getenv(k)
	}
	return os.Getenv(k)
}

func (o *Options) log() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Error is a failed job or restore: which application, which step, why.
type Error struct {
	App  string
	Step string
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s: %v", e.App, e.Step, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Result is what one backup run did: its run record as written to the run
// file, and where.
type Result struct {
	// Dir is the application's backup directory, {target}/{relpath}.
	Dir    string
	Record runfile.Record
	// Err is the run's failure (an *Error), nil on success.
	Err error
}

// TargetDir is the well-known directory an application's job writes
// under: the VM's guest directory (default /backup) for an application in
// a VM, the server's host mount (default /srv/v2backup/_host) for one with
// no VM.
func TargetDir(inv *inventory.Inventory, app *inventory.App) string {
	if app.VM == "" || app.VM == tiers.NoVM {
		for _, s := range inv.Servers {
			if s.Name == app.Server && s.HostMount != "" {
				return s.HostMount
			}
		}
		return DefaultHostMount
	}
	for _, v := range inv.VMs {
		if v.Name == app.VM && v.Server == app.Server && v.GuestDir != "" {
			return v.GuestDir
		}
	}
	return DefaultGuestDir
}

// Select picks applications from the inventory: those named, or with all
// every application of the given server and VM (tiers.NoVM: those with no
// VM), in inventory order. A name that is not in the inventory, or that
// runs elsewhere, is an error.
func Select(inv *inventory.Inventory, server tiers.Server, vm tiers.VM, names []string, all bool) ([]*inventory.App, error) {
	here := func(a *inventory.App) bool {
		avm := a.VM
		if avm == "" {
			avm = tiers.NoVM
		}
		return a.Server == server && avm == vm
	}
	if all {
		if len(names) > 0 {
			return nil, errors.New("give application names or --all, not both")
		}
		var out []*inventory.App
		for i := range inv.Apps {
			if here(&inv.Apps[i]) {
				out = append(out, &inv.Apps[i])
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("inventory %s: no applications on server %s, vm %s", inv.File, server, vm)
		}
		return out, nil
	}
	if len(names) == 0 {
		return nil, errors.New("name at least one application, or use --all")
	}
	var out []*inventory.App
	for _, n := range names {
		var found *inventory.App
		for i := range inv.Apps {
			if inv.Apps[i].Name == n {
				found = &inv.Apps[i]
				break
			}
		}
		if found == nil {
			return nil, fmt.Errorf("inventory %s: no application %q", inv.File, n)
		}
		if !here(found) {
			return nil, fmt.Errorf("inventory %s: application %q runs on server %s, vm %s, not here (server %s, vm %s)",
				inv.File, n, found.Server, orNoVM(found.VM), server, vm)
		}
		out = append(out, found)
	}
	return out, nil
}

func orNoVM(v tiers.VM) tiers.VM {
	if v == "" {
		return tiers.NoVM
	}
	return v
}

// Backup runs the application's job into {o.Target}/{relpath}. The run
// file is written when it starts and when it ends. The error, also in
// Result.Err, is an *Error naming the application, the step and the cause.
func Backup(ctx context.Context, app *inventory.App, o Options) (*Result, error) {
	if o.Target == "" {
		return nil, &Error{app.Name, "start", errors.New("no target directory")}
	}
	if _, err := tiers.ParseRelpath(string(app.Relpath)); err != nil {
		return nil, &Error{app.Name, "start", err}
	}
	host := o.Host
	if host == "" {
		host, _ = os.Hostname()
	}
	dir := filepath.Join(o.Target, string(app.Relpath))
	r := &run{
		ctx:   ctx,
		app:   app,
		o:     &o,
		dir:   dir,
		tools: map[string]string{},
		rec: runfile.Record{
			App:    app.Name,
			Type:   string(app.Type),
			Host:   host,
			Status: runfile.Running,
			Start:  o.now(),
		},
	}
	res := &Result{Dir: dir}
	fail := func(step string, err error) (*Result, error) {
		e := &Error{app.Name, step, err}
		r.rec.Status = runfile.Failed
		r.rec.Step = step
		r.rec.Error = err.Error()
		r.finish()
		if werr := runfile.Write(dir, r.rec); werr != nil {
			e.Err = fmt.Errorf("%w (and recording the failure: %v)", err, werr)
		}
		res.Record = r.rec
		res.Err = e
		r.progressf("%s: FAILED: %s: %v\n", app.Name, step, e.Err)
		o.log().Error("backup failed", "app", app.Name, "step", step, "err", e.Err)
		return res, e
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, &Error{app.Name, "create backup directory", err}
	}
	if err := runfile.Write(dir, r.rec); err != nil {
		return nil, &Error{app.Name, "write run file", err}
	}
	o.log().Info("backup started", "app", app.Name, "type", app.Type, "dir", dir)
	if err := r.runType(); err != nil {
		var se *stepError
		if errors.As(err, &se) {
			return fail(se.step, se.err)
		}
		return fail("run", err)
	}
	if err := ctx.Err(); err != nil {
		return fail("run", err)
	}
	r.finish()
	r.rec.Status = runfile.OK
	if err := runfile.Write(dir, r.rec); err != nil {
		return fail("write run file", err)
	}
	res.Record = r.rec
	o.log().Info("backup done", "app", app.Name, "files", r.rec.Files, "bytes", r.rec.Bytes,
		"seconds", r.rec.End.Sub(r.rec.Start).Seconds())
	r.progressf("%s: ok, %d files, %s in %s\n", app.Name, r.rec.Files, humanBytes(r.rec.Bytes),
		r.rec.End.Sub(r.rec.Start).Round(time.Second))
	return res, nil
}

// BackupAll runs each application's job in turn; one failure does not stop
// the others. The error joins every failure.
func BackupAll(ctx context.Context, apps []*inventory.App, o Options) ([]*Result, error) {
	var out []*Result
	var errs []error
	for _, a := range apps {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		res, err := Backup(ctx, a, o)
		if res != nil {
			out = append(out, res)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// finish counts the tree and sets the end time and tool versions.
func (r *run) finish() {
	files, bytes, err := countTree(r.dir)
	if err != nil {
		r.o.log().Warn("counting backup tree", "dir", r.dir, "err", err)
	}
	r.rec.Files, r.rec.Bytes = files, bytes
	r.rec.End = r.o.now()
	if r.rec.End.Before(r.rec.Start) {
		r.rec.End = r.rec.Start
	}
	if len(r.tools) > 0 {
		r.rec.Tools = r.tools
	}
}

// countTree counts the regular files of an application's backup tree and
// their bytes, leaving out v2backup's own dot entries at its top.
func countTree(dir string) (files, bytes int64, err error) {
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if filepath.Dir(p) == dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			files++
			bytes += fi.Size()
		}
		return nil
	})
	return files, bytes, err
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
