package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// RescanOptions tunes Rescan.
type RescanOptions struct {
	// Prefix limits the rescan to this path and below ("" = whole tree).
	Prefix string
	// AppOf attributes a path to its application. nil keeps a known row's
	// app and leaves new rows with "".
	AppOf func(path string) string
	// Workers is the number of hashing goroutines. Default 2.
	Workers int
	// MaxRetries is how often a file that changes while hashed is read
	// again before it is recorded without a hash. Default 3.
	MaxRetries int
	// Logger defaults to the DB's.
	Logger *slog.Logger
}

// RescanStats counts what a rescan found and did.
type RescanStats struct {
	Files       int64 // regular files found
	Unchanged   int64 // size and mtime as catalogued, hash known: not read
	Hashed      int64 // files read and hashed
	HashedBytes int64
	Added       int64 // rows created
	Updated     int64 // rows changed (content or app)
	Removed     int64 // rows of files no longer on disk
	Skipped     int64 // entries that are not regular files or directories (symlinks, devices...)
	Errors      int64 // files or directories that could not be read (logged)
}

const rescanBatch = 1000

// Rescan brings the live-file rows at or below opt.Prefix in step with the
// tree at root ({partition}/local), never following a symlink: it hashes
// files whose size or mtime differ from the catalog (or were never hashed),
// adds missing ones and removes rows of files gone from disk. Unreadable
// files are logged and counted, not fatal. A complete rescan (no prefix,
// no errors) clears RescanRecommended.
func (db *DB) Rescan(ctx context.Context, root string, opt RescanOptions) (RescanStats, error) {
	var stats RescanStats
	if err := checkPrefix("rescan prefix", opt.Prefix); err != nil {
		return stats, err
	}
	if opt.Workers == 0 {
		opt.Workers = 2
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = 3
	}
	if opt.Logger == nil {
		opt.Logger = db.opts.logger
	}
	if opt.Workers < 1 || opt.MaxRetries < 0 {
		return stats, fmt.Errorf("catalog: rescan of %s: invalid options: workers %d, retries %d", root, opt.Workers, opt.MaxRetries)
	}
	t, err := openTree(root)
	if err != nil {
		return stats, fmt.Errorf("catalog: rescan: %w", err)
	}
	defer t.close()
	dirtyBefore, err := db.getMeta(ctx, metaDirty)
	if err != nil {
		return stats, err
	}
	results := make(chan FileRecord, 256)
	rs := &rescan{db: db, t: t, opt: opt, stats: &stats, results: results}
	if rs.lookup, err = db.r.PrepareContext(ctx, `SELECT app, size, mtime_ns, sha256, hashed_ns FROM files WHERE path = ?`); err != nil {
		return stats, fmt.Errorf("catalog %s: rescan: %w", db.path, err)
	}
	defer rs.lookup.Close()

	// Phase 1: walk the tree; hash what is new or changed.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan hashJob, 256)
	var wg sync.WaitGroup
	wg.Add(opt.Workers)
	for range opt.Workers {
		go func() { defer wg.Done(); rs.hasher(ctx, jobs, results) }()
	}
	writeErr := make(chan error, 1)
	go func() { writeErr <- rs.writeResults(ctx, results) }()
	walkErr := rs.walk(ctx, opt.Prefix, jobs)
	close(jobs)
	wg.Wait()
	close(results)
	if err := errors.Join(walkErr, <-writeErr); err != nil {
		cancel(err)
		return stats, err
	}

	// Phase 2: rows of files that are gone.
	var gonePaths []FileRecord
	flushGone := func() error {
		if len(gonePaths) == 0 {
			return nil
		}
		err := db.UpsertFiles(ctx, gonePaths)
		if err == nil {
			stats.Removed += int64(len(gonePaths))
		}
		gonePaths = gonePaths[:0]
		return err
	}
	err = db.WalkFiles(ctx, opt.Prefix, func(f FileRecord) error {
		observed := db.opts.now()
		_, err := t.lstat(f.Path)
		switch {
		case err == nil:
			return nil
		case gone(err):
			gonePaths = append(gonePaths, FileRecord{Path: f.Path, Deleted: true, UpdatedAt: observed})
			if len(gonePaths) >= rescanBatch {
				return flushGone()
			}
			return nil
		default:
			stats.Errors++
			opt.Logger.Error("catalog rescan: cannot stat file", "path", f.Path, "err", err)
			return nil
		}
	})
	if err = errors.Join(err, flushGone()); err != nil {
		return stats, err
	}
	if opt.Prefix == "" && stats.Errors == 0 && dirtyBefore != "" && !isRunning(dirtyBefore) {
		// Only the mark of a recorder that is gone; a running one owns its mark.
		if err := db.deleteMeta(ctx, metaDirty); err != nil {
			return stats, err
		}
	}
	return stats, nil
}

type rescan struct {
	db     *DB
	t      *tree
	opt    RescanOptions
	lookup *sql.Stmt
	// results feeds the batching writer: from hashers, and from the walker
	// for rows that only change application.
	results chan<- FileRecord
	mu      sync.Mutex // guards stats
	stats   *RescanStats
}

type hashJob struct {
	rel    string
	app    string
	exists bool
}

func (rs *rescan) count(f func(s *RescanStats)) {
	rs.mu.Lock()
	f(rs.stats)
	rs.mu.Unlock()
}

// walk visits the tree below prefix through directory fds opened with
// O_NOFOLLOW, so that no symlink is ever followed, in name order.
func (rs *rescan) walk(ctx context.Context, prefix string, jobs chan<- hashJob) error {
	if prefix != "" {
		// The prefix may be a file.
		dir, name := path.Split(prefix)
		dfd, err := rs.t.openDir(trimSlash(dir))
		if err != nil {
			if gone(err) {
				return nil
			}
			return fmt.Errorf("catalog: rescan of %s: %w", path.Join(rs.t.root, prefix), err)
		}
		defer unix.Close(dfd)
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if gone(err) {
				return nil
			}
			return fmt.Errorf("catalog: rescan of %s: %w", path.Join(rs.t.root, prefix), err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
		case unix.S_IFREG:
			return rs.visit(ctx, prefix, &st, jobs)
		default:
			// A symlink or device: nothing of the tree is at or below it.
			rs.count(func(s *RescanStats) { s.Skipped++ })
			return nil
		}
	}
	fd, err := rs.t.openDir(prefix)
	if err != nil {
		return fmt.Errorf("catalog: rescan of %s: %w", path.Join(rs.t.root, prefix), err)
	}
	defer unix.Close(fd)
	return rs.walkDir(ctx, fd, prefix, jobs)
}

func trimSlash(s string) string {
	if len(s) > 0 && s[len(s)-1] == '/' {
		return s[:len(s)-1]
	}
	return s
}

// walkDir lists directory rel, reached as pathFD (an O_PATH fd).
func (rs *rescan) walkDir(ctx context.Context, pathFD int, rel string, jobs chan<- hashJob) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	full := path.Join(rs.t.root, rel)
	fd, err := unix.Openat(pathFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		rs.count(func(s *RescanStats) { s.Errors++ })
		rs.opt.Logger.Error("catalog rescan: cannot read directory", "path", full, "err", err)
		return nil
	}
	f := os.NewFile(uintptr(fd), full)
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		rs.count(func(s *RescanStats) { s.Errors++ })
		rs.opt.Logger.Error("catalog rescan: cannot read directory", "path", full, "err", err)
		return nil
	}
	sort.Strings(names)
	for _, name := range names {
		child := name
		if rel != "" {
			child = rel + "/" + name
		}
		var st unix.Stat_t
		if err := unix.Fstatat(pathFD, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if !gone(err) {
				rs.count(func(s *RescanStats) { s.Errors++ })
				rs.opt.Logger.Error("catalog rescan: cannot stat", "path", path.Join(full, name), "err", err)
			}
			continue
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			cfd, err := unix.Openat(pathFD, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				if !gone(err) {
					rs.count(func(s *RescanStats) { s.Errors++ })
					rs.opt.Logger.Error("catalog rescan: cannot open directory", "path", path.Join(full, name), "err", err)
				}
				continue
			}
			err = rs.walkDir(ctx, cfd, child, jobs)
			unix.Close(cfd)
			if err != nil {
				return err
			}
		case unix.S_IFREG:
			if err := rs.visit(ctx, child, &st, jobs); err != nil {
				return err
			}
		default:
			rs.count(func(s *RescanStats) { s.Skipped++ })
		}
	}
	return nil
}

// visit decides whether regular file rel must be hashed.
func (rs *rescan) visit(ctx context.Context, rel string, st *unix.Stat_t, jobs chan<- hashJob) error {
	rs.count(func(s *RescanStats) { s.Files++ })
	var app string
	var size, mtime int64
	var sha sql.NullString
	var hashed sql.NullInt64
	err := rs.lookup.QueryRowContext(ctx, rel).Scan(&app, &size, &mtime, &sha, &hashed)
	exists := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("catalog %s: rescan: look up %q: %w", rs.db.path, rel, err)
	}
	want := app
	if rs.opt.AppOf != nil {
		want = rs.opt.AppOf(rel)
	}
	if exists && sha.Valid && size == st.Size && mtime == st.Mtim.Nano() {
		if want == app {
			rs.count(func(s *RescanStats) { s.Unchanged++ })
			return nil
		}
		// Same content, another application: no need to read it.
		rec := FileRecord{Path: rel, App: want, Size: size, MTime: time.Unix(0, mtime), SHA256: sha.String,
			HashedAt: timeOfNull(hashed), UpdatedAt: rs.db.opts.now()}
		rs.count(func(s *RescanStats) { s.Updated++ })
		select {
		case rs.results <- rec:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case jobs <- hashJob{rel: rel, app: want, exists: exists}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (rs *rescan) hasher(ctx context.Context, jobs <-chan hashJob, results chan<- FileRecord) {
	for j := range jobs {
		if ctx.Err() != nil {
			continue // drain
		}
		for attempt := 0; ; attempt++ {
			observed := rs.db.opts.now()
			st, sum, changed, err := rs.t.hashFile(j.rel)
			if err != nil {
				if !gone(err) {
					rs.count(func(s *RescanStats) { s.Errors++ })
					rs.opt.Logger.Error("catalog rescan: cannot hash file", "path", j.rel, "err", err)
				}
				break // gone files are phase 2's business
			}
			if changed && attempt < rs.opt.MaxRetries {
				continue
			}
			if changed {
				sum = ""
			}
			rs.count(func(s *RescanStats) {
				s.Hashed++
				s.HashedBytes += st.size
				if j.exists {
					s.Updated++
				} else {
					s.Added++
				}
			})
			select {
			case results <- FileRecord{Path: j.rel, App: j.app, Size: st.size, MTime: time.Unix(0, st.mtimeNS), SHA256: sum, UpdatedAt: observed}:
			case <-ctx.Done():
			}
			break
		}
	}
}

func (rs *rescan) writeResults(ctx context.Context, results <-chan FileRecord) error {
	var batch []FileRecord
	var firstErr error
	flush := func() {
		if len(batch) > 0 && firstErr == nil {
			firstErr = rs.db.UpsertFiles(ctx, batch)
		}
		batch = batch[:0]
	}
	for r := range results {
		batch = append(batch, r)
		if len(batch) >= rescanBatch {
			flush()
		}
	}
	flush()
	return firstErr
}

// isRunning tells the mark a live recorder holds from one left behind.
func isRunning(mark string) bool { return len(mark) > 14 && mark[:14] == "running since " }
