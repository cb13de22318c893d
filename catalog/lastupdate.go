package catalog

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// LastUpdate is the latest time a live row at or below prefix ("" = all)
// was written, zero if there is none: "when was this application last
// written to", one indexed range scan instead of reading every row.
func (db *DB) LastUpdate(ctx context.Context, prefix string) (time.Time, error) {
	if err := checkPrefix("file prefix", prefix); err != nil {
		return time.Time{}, err
	}
	var ns sql.NullInt64
	var err error
	if prefix == "" {
		err = db.r.QueryRowContext(ctx, `SELECT max(updated_ns) FROM files`).Scan(&ns)
	} else {
		err = db.r.QueryRowContext(ctx, `SELECT max(updated_ns) FROM files WHERE path >= ?1 AND path < ?3 AND (path = ?1 OR path > ?2)`,
			prefixArgs(prefix)...).Scan(&ns)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("catalog %s: last update under %q: %w", db.path, prefix, err)
	}
	return timeOfNull(ns), nil
}
