package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/fusefs"
	"github.com/softxs/v2backup/jobs/runfile"
)

// jobRuns is the daemon's Recorder: it passes every event to the catalog
// recorder and, when a job's run file (.v2backup-job) is written through a
// mount, records the run in the catalog. Jobs inside VMs cannot reach the
// host's catalog; the run file is how they report. Reading and recording
// happen on a goroutine of its own, never on the FUSE request path.
type jobRuns struct {
	inner fusefs.Recorder
	db    *catalog.DB
	root  string // {partition}/local
	log   *slog.Logger

	events chan jobEvent
	wg     sync.WaitGroup

	// open maps an app to its running run (by start time) so the final
	// record finishes the run its first record started.
	open map[string]openRun
}

type jobEvent struct{ app, path string }

type openRun struct {
	id    int64
	start int64 // unix ns
	done  bool
}

func newJobRuns(inner fusefs.Recorder, db *catalog.DB, root string, log *slog.Logger) *jobRuns {
	j := &jobRuns{inner: inner, db: db, root: root, log: log, events: make(chan jobEvent, 1024), open: map[string]openRun{}}
	j.wg.Add(1)
	go j.loop()
	return j
}

func (j *jobRuns) Written(app, p string) {
	j.inner.Written(app, p)
	j.maybeRun(app, p)
}

func (j *jobRuns) Removed(app, p string) { j.inner.Removed(app, p) }

func (j *jobRuns) Renamed(app, from, to string) {
	j.inner.Renamed(app, from, to)
	j.maybeRun(app, to)
}

func (j *jobRuns) maybeRun(app, p string) {
	if path.Base(p) != runfile.Name {
		return
	}
	select {
	case j.events <- jobEvent{app, p}:
	default:
		j.log.Warn("job run file event dropped (queue full); the run is not recorded", "app", app, "path", p)
	}
}

// Close stops the loop after the queued events are recorded.
func (j *jobRuns) Close() {
	close(j.events)
	j.wg.Wait()
}

func (j *jobRuns) loop() {
	defer j.wg.Done()
	for ev := range j.events {
		if err := j.record(context.Background(), ev); err != nil {
			j.log.Error("recording a job run", "app", ev.app, "path", ev.path, "err", err)
		}
	}
}

func (j *jobRuns) record(ctx context.Context, ev jobEvent) error {
	data, err := readBeneath(j.root, ev.path)
	if errors.Is(err, unix.ENOENT) {
		return nil // replaced again since; the newer event follows
	}
	if err != nil {
		return err
	}
	rec, err := runfile.Parse(ev.path, data)
	if err != nil {
		return err
	}
	if rec.App != ev.app {
		// The mount knows which application the file lies in; a VM
		// cannot report for another application.
		j.log.Warn("job run file names another application; recorded for the one it lies in", "file_app", rec.App, "app", ev.app, "path", ev.path)
	}
	cur, ok := j.open[ev.app]
	same := ok && cur.start == rec.Start.UnixNano()
	switch rec.Status {
	case runfile.Running:
		if same {
			return nil
		}
		id, err := j.db.StartRun(ctx, ev.app, "backup", rec.Start)
		if err != nil {
			return err
		}
		j.open[ev.app] = openRun{id: id, start: rec.Start.UnixNano()}
		return nil
	default:
		if same && cur.done {
			return nil // the same final record seen twice (write, then rename)
		}
		id := cur.id
		if !same {
			if id, err = j.db.StartRun(ctx, ev.app, "backup", rec.Start); err != nil {
				return err
			}
		}
		status := catalog.RunOK
		msg := rec.Error
		if rec.Status != runfile.OK {
			status = catalog.RunFailed
			if rec.Step != "" {
				msg = rec.Step + ": " + msg
			}
		}
		if err := j.db.FinishRun(ctx, id, rec.End, status, rec.Files, rec.Bytes, msg); err != nil {
			return err
		}
		j.open[ev.app] = openRun{id: id, start: rec.Start.UnixNano(), done: true}
		j.log.Info("job run recorded", "app", ev.app, "status", status, "files", rec.Files, "bytes", rec.Bytes)
		return nil
	}
}

// readBeneath reads root/rel without following any symlink on the way: a
// VM could plant a symlink named like a run file.
func readBeneath(root, rel string) ([]byte, error) {
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}
