package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/softxs/v2backup/tiers"
)

// ErrReadOnly is returned by every write to a catalog opened with
// OpenReadOnly.
var ErrReadOnly = errors.New("catalog opened read-only")

// OpenReadOnly opens an existing catalog for queries only: a host's
// catalog shipped to a backup server with a pull, which lives in the remote
// tier and is hard-linked into its snapshots, so nothing may write to it,
// not even SQLite's own journal. Its schema version must be one this binary
// understands; it is not migrated. Writes fail with ErrReadOnly.
func OpenReadOnly(path string) (*DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", abs, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("catalog %s: not a regular file (%s)", abs, st.Mode().Type())
	}
	// immutable=1: SQLite neither locks nor looks for a WAL, so it writes
	// nothing next to the file; a shipped catalog never changes in place
	// (a new pull replaces the file).
	uri := "file:" + (&url.URL{Path: abs}).EscapedPath() + "?mode=ro&immutable=1"
	r, err := openReader(uri, abs)
	if err != nil {
		return nil, err
	}
	db := &DB{path: abs, r: r, readonly: true, done: make(chan struct{}),
		opts: options{logger: slog.Default(), now: time.Now, maxBatch: 1, readers: 1}}
	close(db.done)
	v, err := db.UserVersion(context.Background())
	if err == nil && (v < 1 || v > SchemaVersion) {
		err = fmt.Errorf("catalog %s: schema version %d: this v2backup reads versions 1 to %d", abs, v, SchemaVersion)
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	return db, nil
}

// ExportTo writes a consistent copy of the catalog to path (VACUUM INTO a
// temporary file, fsynced, then renamed over path: SQLite writes the file
// itself, so renameio cannot wrap it), for shipping with a
// pull. Writers are not blocked while it runs; the copy is the state of one
// read transaction.
func (db *DB) ExportTo(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("catalog %s: export to %s: %w", db.path, path, err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d-%d", path, os.Getpid(), time.Now().UnixNano())
	defer os.Remove(tmp)
	if _, err := db.r.ExecContext(ctx, "VACUUM INTO ?", tmp); err != nil {
		return fmt.Errorf("catalog %s: export to %s: %w", db.path, path, err)
	}
	f, err := os.Open(tmp)
	if err != nil {
		return fmt.Errorf("catalog %s: export to %s: %w", db.path, path, err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("catalog %s: export to %s: fsync: %w", db.path, path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("catalog %s: export to %s: %w", db.path, path, err)
	}
	if err := tiers.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("catalog %s: export to %s: %w", db.path, path, err)
	}
	return nil
}
