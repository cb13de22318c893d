package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// getMeta reads the catalog's own state; "" if key is not set.
func (db *DB) getMeta(ctx context.Context, key string) (string, error) {
	var v string
	err := db.r.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("catalog %s: read %s: %w", db.path, key, err)
	}
	return v, nil
}

func (db *DB) setMeta(ctx context.Context, key, value string) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
			return fmt.Errorf("catalog %s: set %s: %w", db.path, key, err)
		}
		return nil
	})
}

func (db *DB) deleteMeta(ctx context.Context, key string) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM meta WHERE key = ?`, key); err != nil {
			return fmt.Errorf("catalog %s: clear %s: %w", db.path, key, err)
		}
		return nil
	})
}

// RescanRecommended returns why the live-file rows may be out of step with
// the local tier (a recorder crashed, dropped events or failed to write),
// or "" if they are believed current. A full Rescan clears it.
func (db *DB) RescanRecommended(ctx context.Context) (string, error) {
	return db.getMeta(ctx, metaDirty)
}
