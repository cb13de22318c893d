package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"time"

	_ "github.com/mattn/go-sqlite3" // the catalog's own driver, read-only here
)

// catalogPoll is how often the catalog is read while waiting for hashes.
const catalogPoll = 50 * time.Millisecond

// catalogReader reads a v2backup catalog (catalog package schema) while
// the daemon writes it: read-only, never migrating or locking it.
type catalogReader struct {
	path string
	db   *sql.DB
}

func openCatalogReader(path string) (*catalogReader, error) {
	uri := "file:" + (&url.URL{Path: path}).EscapedPath() + "?mode=ro&_busy_timeout=10000"
	db, err := sql.Open("sqlite3", uri)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	return &catalogReader{path: path, db: db}, nil
}

func (r *catalogReader) close() error { return r.db.Close() }

// counts returns how many file rows lie below the directory prefix (a
// path relative to the local root, without trailing slash) and how many
// of them have a hash.
func (r *catalogReader) counts(ctx context.Context, prefix string) (rows, hashed int, err error) {
	lo, hi := prefix+"/", prefix+"0" // '0' sorts right after '/'
	err = r.db.QueryRowContext(ctx,
		`SELECT count(*), count(CASE WHEN sha256 IS NOT NULL AND sha256 <> '' THEN 1 END) FROM files WHERE path >= ? AND path < ?`,
		lo, hi).Scan(&rows, &hashed)
	if err != nil {
		return 0, 0, fmt.Errorf("catalog %s: count files under %q: %w", r.path, prefix, err)
	}
	return rows, hashed, nil
}

// waitCatalog polls until cond(rows, hashed) holds for the files below
// prefix and returns how long that took; after limit it fails, naming the
// last counts.
func waitCatalog(ctx context.Context, path, prefix string, limit time.Duration, what string, cond func(rows, hashed int) bool) (time.Duration, error) {
	r, err := openCatalogReader(path)
	if err != nil {
		return 0, err
	}
	defer r.close()
	start := time.Now()
	deadline := start.Add(limit)
	for {
		rows, hashed, err := r.counts(ctx, prefix)
		// The daemon creates the database when it starts; until its first
		// write the table may be missing: keep polling until the deadline.
		if err == nil && cond(rows, hashed) {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return time.Since(start), fmt.Errorf("waiting %v for %s: %w", limit, what, err)
			}
			return time.Since(start), fmt.Errorf("catalog %s: waited %v for %s under %q: %d rows, %d hashed", path, limit, what, prefix, rows, hashed)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(catalogPoll):
		}
	}
}

// catalogCounts reads the file rows below prefix once.
func catalogCounts(ctx context.Context, path, prefix string) (rows, hashed int, err error) {
	r, err := openCatalogReader(path)
	if err != nil {
		return 0, 0, err
	}
	defer r.close()
	return r.counts(ctx, prefix)
}
