package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SetSnapshotVerified records that verify found every file of snapshot id
// intact at at.
func (db *DB) SetSnapshotVerified(ctx context.Context, id int64, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("catalog: verified snapshot %d: zero time", id)
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE snapshots SET verified_ns = ? WHERE id = ?`, at.UnixNano(), id)
		if err != nil {
			return fmt.Errorf("catalog %s: verified snapshot %d: %w", db.path, id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("catalog %s: verified snapshot %d: %w", db.path, id, ErrNotFound)
		}
		return nil
	})
}

// SnapshotVerified is when verify last found every file of snapshot id
// intact; zero if never, or if the catalog predates schema version 3 (a
// host's shipped catalog may be older than this binary).
func (db *DB) SnapshotVerified(ctx context.Context, id int64) (time.Time, error) {
	v, err := db.UserVersion(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if v < 3 {
		return time.Time{}, nil
	}
	var ns sql.NullInt64
	err = db.r.QueryRowContext(ctx, `SELECT verified_ns FROM snapshots WHERE id = ?`, id).Scan(&ns)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, fmt.Errorf("catalog %s: snapshot %d: %w", db.path, id, ErrNotFound)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("catalog %s: snapshot %d: %w", db.path, id, err)
	}
	return timeOfNull(ns), nil
}
