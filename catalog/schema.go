package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mattn/go-sqlite3"
)

// migrations[i] takes the schema from user_version i to i+1. They are frozen
// once released: a change is a new entry, never an edit (the tests open a
// frozen version-1 database from testdata/).
var migrations = []string{
	// 1: applications, runs, live files, snapshots and their manifests.
	`
CREATE TABLE applications (
	name        TEXT PRIMARY KEY,
	server      TEXT NOT NULL,
	vm          TEXT NOT NULL,
	relpath     TEXT NOT NULL,
	type        TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	status      TEXT NOT NULL DEFAULT '',
	updated_ns  INTEGER NOT NULL
);

CREATE TABLE runs (
	id       INTEGER PRIMARY KEY,
	app      TEXT NOT NULL,
	kind     TEXT NOT NULL CHECK (kind <> ''),
	start_ns INTEGER NOT NULL,
	end_ns   INTEGER,
	status   TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'partial')),
	files    INTEGER NOT NULL DEFAULT 0,
	bytes    INTEGER NOT NULL DEFAULT 0,
	error    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_app ON runs (app, kind, status, start_ns);

-- Live files of the local tier; a removed file is a removed row. A rowid
-- table with a unique path index inserts faster than WITHOUT ROWID here
-- (rows are wide: the hex hash). No index on app: an application's files
-- are a path range (vm/relpath/...).
CREATE TABLE files (
	id         INTEGER PRIMARY KEY,
	path       TEXT NOT NULL UNIQUE,
	app        TEXT NOT NULL,
	size       INTEGER NOT NULL,
	mtime_ns   INTEGER NOT NULL,
	sha256     TEXT, -- lower-case hex, NULL = not hashed yet (checked in Go: a CHECK here costs 10% of insert speed)
	hashed_ns  INTEGER,
	updated_ns INTEGER NOT NULL
);

-- Every path any manifest mentions, once: manifests of nightly snapshots
-- repeat the same paths, so they store a small integer instead.
CREATE TABLE paths (
	id   INTEGER PRIMARY KEY,
	path TEXT NOT NULL UNIQUE
);

CREATE TABLE snapshots (
	id         INTEGER PRIMARY KEY,
	tier       TEXT NOT NULL CHECK (tier IN ('local', 'remote')),
	server     TEXT NOT NULL,
	name       TEXT NOT NULL,
	created_ns INTEGER NOT NULL,
	state      TEXT NOT NULL CHECK (state IN ('building', 'complete')),
	UNIQUE (tier, server, name)
);

CREATE TABLE manifest (
	snapshot_id INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
	path_id     INTEGER NOT NULL REFERENCES paths (id),
	size        INTEGER NOT NULL,
	mtime_ns    INTEGER NOT NULL,
	sha256      BLOB CHECK (sha256 IS NULL OR length(sha256) = 32),
	PRIMARY KEY (snapshot_id, path_id)
) WITHOUT ROWID;
-- "In which snapshots did this path exist?"
CREATE INDEX manifest_path ON manifest (path_id);
`,
	// 2: snapshot totals and per-app state, pulls, off-site media and copies,
	// and a small key/value table for the catalog's own state.
	`
ALTER TABLE snapshots ADD COLUMN files INTEGER NOT NULL DEFAULT 0;
ALTER TABLE snapshots ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE snapshots SET
	files = (SELECT count(*) FROM manifest m WHERE m.snapshot_id = snapshots.id),
	bytes = (SELECT coalesce(sum(size), 0) FROM manifest m WHERE m.snapshot_id = snapshots.id);

-- Per application and snapshot: totals for trends, and whether the app was
-- complete or carried over from the last complete state (its backup was
-- running or failed when the snapshot was taken).
CREATE TABLE snapshot_apps (
	snapshot_id INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
	app         TEXT NOT NULL,
	state       TEXT NOT NULL CHECK (state IN ('complete', 'carried')),
	files       INTEGER NOT NULL,
	bytes       INTEGER NOT NULL,
	PRIMARY KEY (snapshot_id, app)
) WITHOUT ROWID;
CREATE INDEX snapshot_apps_app ON snapshot_apps (app);

CREATE TABLE pulls (
	id            INTEGER PRIMARY KEY,
	backup_server TEXT NOT NULL,
	host_server   TEXT NOT NULL,
	snapshot      TEXT NOT NULL DEFAULT '',
	start_ns      INTEGER NOT NULL,
	end_ns        INTEGER NOT NULL,
	files         INTEGER NOT NULL DEFAULT 0,
	bytes         INTEGER NOT NULL DEFAULT 0,
	result        TEXT NOT NULL CHECK (result IN ('ok', 'failed', 'partial')),
	error         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX pulls_host ON pulls (host_server, start_ns);

CREATE TABLE media (
	id            INTEGER PRIMARY KEY,
	label         TEXT NOT NULL,
	fs_uuid       TEXT NOT NULL UNIQUE CHECK (fs_uuid <> ''),
	first_seen_ns INTEGER NOT NULL,
	last_seen_ns  INTEGER NOT NULL
);

CREATE TABLE copies (
	id          INTEGER PRIMARY KEY,
	media_id    INTEGER NOT NULL REFERENCES media (id) ON DELETE CASCADE,
	server      TEXT NOT NULL,
	tier        TEXT NOT NULL CHECK (tier IN ('local', 'remote')),
	snapshot    TEXT NOT NULL,
	at_ns       INTEGER NOT NULL,
	files       INTEGER NOT NULL DEFAULT 0,
	bytes       INTEGER NOT NULL DEFAULT 0,
	verified_ns INTEGER
);
CREATE INDEX copies_media ON copies (media_id, at_ns);
CREATE INDEX copies_snapshot ON copies (server, tier, snapshot);

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) WITHOUT ROWID;
`,
	// 3: which host snapshot each pull copied and which remote-tier
	// snapshot holds it, and each application's digest per snapshot, for
	// "where are the copies of that night".
	// Pulls recorded before stored the host's snapshot in "snapshot".
	`
ALTER TABLE pulls ADD COLUMN host_snapshot TEXT NOT NULL DEFAULT '';
ALTER TABLE pulls ADD COLUMN remote_snapshot TEXT NOT NULL DEFAULT '';
UPDATE pulls SET host_snapshot = snapshot;
CREATE INDEX pulls_host_snapshot ON pulls (host_server, host_snapshot);
-- The application's Digest (see AppDigest), stored when the snapshot is
-- taken; NULL = computed on demand.
ALTER TABLE snapshot_apps ADD COLUMN digest TEXT;
-- When verify last found every file of the snapshot intact; NULL = never.
ALTER TABLE snapshots ADD COLUMN verified_ns INTEGER;
`,
}

// SchemaVersion is the schema version this binary creates and understands:
// len(migrations).
const SchemaVersion = 3

// migrate brings the database to version target (0 = latest), one
// transaction per migration. It re-reads user_version under the write lock,
// so two processes opening a new catalog at once do not both migrate.
//
// SQLite answers SQLITE_BUSY without waiting while another connection
// switches a new database to WAL; those are retried until busyTimeout.
func migrate(w *sql.DB, path string, target int, busyTimeout time.Duration) error {
	if target == 0 {
		target = len(migrations)
	}
	ctx := context.Background()
	deadline := time.Now().Add(busyTimeout)
	delay := time.Millisecond
	for {
		done, err := migrateOne(ctx, w, path, target)
		if isBusy(err) && time.Now().Before(deadline) {
			time.Sleep(delay)
			delay = min(2*delay, 100*time.Millisecond)
			continue
		}
		if err != nil || done {
			return err
		}
	}
}

func isBusy(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)
}

func migrateOne(ctx context.Context, w *sql.DB, path string, target int) (done bool, err error) {
	tx, err := w.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock): takes the write lock
	if err != nil {
		return false, fmt.Errorf("catalog %s: begin migration: %w", path, err)
	}
	defer func() {
		if err != nil || done {
			tx.Rollback()
		}
	}()
	var v int
	if err := tx.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		return false, fmt.Errorf("catalog %s: read schema version: %w", path, err)
	}
	switch {
	case v > len(migrations):
		return false, fmt.Errorf("catalog %s: schema version %d is newer than this v2backup understands (%d): upgrade v2backup", path, v, len(migrations))
	case v < 0:
		return false, fmt.Errorf("catalog %s: invalid schema version %d", path, v)
	case v >= target:
		return true, nil
	}
	if _, err := tx.Exec(migrations[v]); err != nil {
		return false, fmt.Errorf("catalog %s: migration to schema version %d: %w", path, v+1, err)
	}
	// PRAGMA takes no parameters; v+1 is an int.
	if _, err := tx.Exec(fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return false, fmt.Errorf("catalog %s: set schema version %d: %w", path, v+1, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("catalog %s: commit migration to schema version %d: %w", path, v+1, err)
	}
	return false, nil
}

// UserVersion reports the schema version stored in the database.
func (db *DB) UserVersion(ctx context.Context) (int, error) {
	var v int
	if err := db.r.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("catalog %s: read schema version: %w", db.path, err)
	}
	return v, nil
}
