package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mattn/go-sqlite3"
	"github.com/softxs/v2backup/tiers"
)

// Pull is one pull of a host's remote view by a backup server.
type Pull struct {
	ID           int64
	BackupServer string
	HostServer   string
	// Snapshot is the host's snapshot that was pulled, "" if none was
	// read (the column predates HostSnapshot; both hold the same name).
	Snapshot string
	// HostSnapshot is the host's local-tier snapshot the pull copied (from
	// its SNAPSHOT.json); "" = Snapshot.
	HostSnapshot string
	// RemoteSnapshot is the backup server's remote-tier snapshot taken
	// after the pull, which holds this copy; "" until SetPullRemoteSnapshot.
	RemoteSnapshot string
	Start, End     time.Time
	Files, Bytes   int64
	Result         RunStatus // ok, failed or partial
	Error          string
}

// RecordPull stores a finished pull and returns its id.
func (db *DB) RecordPull(ctx context.Context, p Pull) (int64, error) {
	switch {
	case p.BackupServer == "" || p.HostServer == "":
		return 0, fmt.Errorf("catalog: pull: backup server %q and host server %q must both be set", p.BackupServer, p.HostServer)
	case p.Result != RunOK && p.Result != RunFailed && p.Result != RunPartial:
		return 0, fmt.Errorf("catalog: pull of %s: result %q: must be ok, failed or partial", p.HostServer, p.Result)
	case p.Start.IsZero() || p.End.Before(p.Start):
		return 0, fmt.Errorf("catalog: pull of %s: start %v and end %v: need a start and an end not before it", p.HostServer, p.Start, p.End)
	}
	if p.HostSnapshot == "" {
		p.HostSnapshot = p.Snapshot
	}
	if p.Snapshot == "" {
		p.Snapshot = p.HostSnapshot
	}
	var id int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO pulls (backup_server, host_server, snapshot, start_ns, end_ns, files, bytes, result, error, host_snapshot, remote_snapshot)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, p.BackupServer, p.HostServer, p.Snapshot, p.Start.UnixNano(), p.End.UnixNano(),
			p.Files, p.Bytes, string(p.Result), p.Error, p.HostSnapshot, p.RemoteSnapshot)
		if err != nil {
			return fmt.Errorf("catalog %s: record pull of %s: %w", db.path, p.HostServer, err)
		}
		id, err = res.LastInsertId()
		return err
	})
	return id, err
}

// Pulls lists pulls of hostServer ("" = every host), newest first; limit
// <= 0 means no limit.
func (db *DB) Pulls(ctx context.Context, hostServer string, limit int) ([]Pull, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := db.r.QueryContext(ctx, `SELECT `+pullCols+`
		FROM pulls WHERE ?1 = '' OR host_server = ?1 ORDER BY start_ns DESC, id DESC LIMIT ?2`, hostServer, limit)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: pulls of %q: %w", db.path, hostServer, err)
	}
	defer rows.Close()
	var out []Pull
	for rows.Next() {
		p, err := scanPull(rows)
		if err != nil {
			return nil, fmt.Errorf("catalog %s: pulls of %q: %w", db.path, hostServer, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: pulls of %q: %w", db.path, hostServer, err)
	}
	return out, nil
}

// Medium is an off-site drive, known by its filesystem UUID.
type Medium struct {
	ID        int64
	Label     string
	FSUUID    string
	FirstSeen time.Time
	LastSeen  time.Time
}

// SeenMedium records that the drive with filesystem UUID fsUUID was seen at
// at, labelled label, creating it on first sight, and returns it.
func (db *DB) SeenMedium(ctx context.Context, label, fsUUID string, at time.Time) (Medium, error) {
	if fsUUID == "" {
		return Medium{}, fmt.Errorf("catalog: medium %q: empty filesystem UUID", label)
	}
	if at.IsZero() {
		return Medium{}, fmt.Errorf("catalog: medium %s: zero time", fsUUID)
	}
	var m Medium
	err := db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO media (label, fs_uuid, first_seen_ns, last_seen_ns) VALUES (?1, ?2, ?3, ?3)
			ON CONFLICT (fs_uuid) DO UPDATE SET label = excluded.label,
				first_seen_ns = min(first_seen_ns, excluded.first_seen_ns),
				last_seen_ns = max(last_seen_ns, excluded.last_seen_ns)`, label, fsUUID, at.UnixNano())
		if err != nil {
			return fmt.Errorf("catalog %s: medium %s: %w", db.path, fsUUID, err)
		}
		var first, last int64
		if err := tx.QueryRow(`SELECT id, label, fs_uuid, first_seen_ns, last_seen_ns FROM media WHERE fs_uuid = ?`, fsUUID).
			Scan(&m.ID, &m.Label, &m.FSUUID, &first, &last); err != nil {
			return fmt.Errorf("catalog %s: medium %s: %w", db.path, fsUUID, err)
		}
		m.FirstSeen, m.LastSeen = timeOf(first), timeOf(last)
		return nil
	})
	return m, err
}

// Media lists the known off-site drives by label.
func (db *DB) Media(ctx context.Context) ([]Medium, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, label, fs_uuid, first_seen_ns, last_seen_ns FROM media ORDER BY label, fs_uuid`)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: media: %w", db.path, err)
	}
	defer rows.Close()
	var out []Medium
	for rows.Next() {
		var m Medium
		var first, last int64
		if err := rows.Scan(&m.ID, &m.Label, &m.FSUUID, &first, &last); err != nil {
			return nil, fmt.Errorf("catalog %s: media: %w", db.path, err)
		}
		m.FirstSeen, m.LastSeen = timeOf(first), timeOf(last)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: media: %w", db.path, err)
	}
	return out, nil
}

// Copy is a snapshot of a server's tier copied onto a medium.
type Copy struct {
	ID         int64
	MediaID    int64
	Server     string
	Tier       tiers.Tier
	Snapshot   string
	At         time.Time
	Files      int64
	Bytes      int64
	VerifiedAt time.Time // zero until verified
}

// RecordCopy stores a copy onto medium c.MediaID and returns its id.
func (db *DB) RecordCopy(ctx context.Context, c Copy) (int64, error) {
	if _, err := tiers.ParseTier(string(c.Tier)); err != nil {
		return 0, fmt.Errorf("catalog: copy: %w", err)
	}
	if c.Server == "" || c.Snapshot == "" || c.At.IsZero() {
		return 0, fmt.Errorf("catalog: copy onto medium %d: server %q, snapshot %q and time must be set", c.MediaID, c.Server, c.Snapshot)
	}
	var id int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO copies (media_id, server, tier, snapshot, at_ns, files, bytes, verified_ns)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, c.MediaID, c.Server, string(c.Tier), c.Snapshot, c.At.UnixNano(),
			c.Files, c.Bytes, nullNS(c.VerifiedAt))
		if err != nil {
			if isForeignKey(err) {
				return fmt.Errorf("catalog %s: copy of %s/%s/%s: medium %d: %w", db.path, c.Tier, c.Server, c.Snapshot, c.MediaID, ErrNotFound)
			}
			return fmt.Errorf("catalog %s: copy of %s/%s/%s: %w", db.path, c.Tier, c.Server, c.Snapshot, err)
		}
		id, err = res.LastInsertId()
		return err
	})
	return id, err
}

// VerifyCopy records that copy id was verified at at.
func (db *DB) VerifyCopy(ctx context.Context, id int64, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("catalog: verify copy %d: zero time", id)
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE copies SET verified_ns = ? WHERE id = ?`, at.UnixNano(), id)
		if err != nil {
			return fmt.Errorf("catalog %s: verify copy %d: %w", db.path, id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("catalog %s: verify copy %d: %w", db.path, id, ErrNotFound)
		}
		return nil
	})
}

// Copies lists copies on medium mediaID (0 = every medium), oldest first.
func (db *DB) Copies(ctx context.Context, mediaID int64) ([]Copy, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, media_id, server, tier, snapshot, at_ns, files, bytes, verified_ns
		FROM copies WHERE ?1 = 0 OR media_id = ?1 ORDER BY at_ns, id`, mediaID)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: copies on medium %d: %w", db.path, mediaID, err)
	}
	defer rows.Close()
	var out []Copy
	for rows.Next() {
		var c Copy
		var tier string
		var at int64
		var ver sql.NullInt64
		if err := rows.Scan(&c.ID, &c.MediaID, &c.Server, &tier, &c.Snapshot, &at, &c.Files, &c.Bytes, &ver); err != nil {
			return nil, fmt.Errorf("catalog %s: copies on medium %d: %w", db.path, mediaID, err)
		}
		c.Tier, c.At, c.VerifiedAt = tiers.Tier(tier), timeOf(at), timeOfNull(ver)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: copies on medium %d: %w", db.path, mediaID, err)
	}
	return out, nil
}

func isForeignKey(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrConstraintForeignKey
}

func isUnique(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey)
}
