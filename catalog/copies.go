package catalog

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/softxs/v2backup/tiers"
)

const pullCols = `id, backup_server, host_server, snapshot, start_ns, end_ns, files, bytes, result, error, host_snapshot, remote_snapshot`

func scanPull(sc interface{ Scan(...any) error }) (Pull, error) {
	var p Pull
	var start, end int64
	var res string
	err := sc.Scan(&p.ID, &p.BackupServer, &p.HostServer, &p.Snapshot, &start, &end, &p.Files, &p.Bytes, &res, &p.Error,
		&p.HostSnapshot, &p.RemoteSnapshot)
	p.Start, p.End, p.Result = timeOf(start), timeOf(end), RunStatus(res)
	return p, err
}

// SetPullRemoteSnapshot records that the remote-tier snapshot name holds
// the copy pull id made.
func (db *DB) SetPullRemoteSnapshot(ctx context.Context, id int64, name string) error {
	if _, err := tiers.ParseSnapshotName(name, time.UTC); err != nil {
		return fmt.Errorf("catalog: pull %d: remote snapshot: %w", id, err)
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE pulls SET remote_snapshot = ? WHERE id = ?`, name, id)
		if err != nil {
			return fmt.Errorf("catalog %s: pull %d: set remote snapshot %s: %w", db.path, id, name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("catalog %s: pull %d: %w", db.path, id, ErrNotFound)
		}
		return nil
	})
}

// PullsOfHostSnapshot lists the successful pulls of host's local-tier
// snapshot hostSnapshot ("" = every snapshot), newest first: every copy a
// backup server made of that night.
func (db *DB) PullsOfHostSnapshot(ctx context.Context, host, hostSnapshot string) ([]Pull, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+pullCols+` FROM pulls
		WHERE host_server = ?1 AND (?2 = '' OR host_snapshot = ?2) AND result = 'ok' AND host_snapshot <> ''
		ORDER BY host_snapshot DESC, end_ns DESC, id DESC`, host, hostSnapshot)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: pulls of %s snapshot %q: %w", db.path, host, hostSnapshot, err)
	}
	defer rows.Close()
	var out []Pull
	for rows.Next() {
		p, err := scanPull(rows)
		if err != nil {
			return nil, fmt.Errorf("catalog %s: pulls of %s snapshot %q: %w", db.path, host, hostSnapshot, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: pulls of %s snapshot %q: %w", db.path, host, hostSnapshot, err)
	}
	return out, nil
}

// MediumCopy is a copy of a tier snapshot on an off-site drive, with the
// drive.
type MediumCopy struct {
	Copy   Copy
	Medium Medium
}

// CopiesOfSnapshot lists the off-site copies of snapshot name of tier on
// server, newest first.
func (db *DB) CopiesOfSnapshot(ctx context.Context, tier tiers.Tier, server, name string) ([]MediumCopy, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT c.id, c.media_id, c.server, c.tier, c.snapshot, c.at_ns, c.files, c.bytes, c.verified_ns,
			m.label, m.fs_uuid, m.first_seen_ns, m.last_seen_ns
		FROM copies c JOIN media m ON m.id = c.media_id
		WHERE c.server = ? AND c.tier = ? AND c.snapshot = ? ORDER BY c.at_ns DESC, c.id DESC`, server, string(tier), name)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: off-site copies of %s/%s/%s: %w", db.path, tier, server, name, err)
	}
	defer rows.Close()
	var out []MediumCopy
	for rows.Next() {
		var mc MediumCopy
		var tierS string
		var at, first, last int64
		var ver sql.NullInt64
		if err := rows.Scan(&mc.Copy.ID, &mc.Copy.MediaID, &mc.Copy.Server, &tierS, &mc.Copy.Snapshot, &at, &mc.Copy.Files,
			&mc.Copy.Bytes, &ver, &mc.Medium.Label, &mc.Medium.FSUUID, &first, &last); err != nil {
			return nil, fmt.Errorf("catalog %s: off-site copies of %s/%s/%s: %w", db.path, tier, server, name, err)
		}
		mc.Copy.Tier, mc.Copy.At, mc.Copy.VerifiedAt = tiers.Tier(tierS), timeOf(at), timeOfNull(ver)
		mc.Medium.ID = mc.Copy.MediaID
		mc.Medium.FirstSeen, mc.Medium.LastSeen = timeOf(first), timeOf(last)
		out = append(out, mc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: off-site copies of %s/%s/%s: %w", db.path, tier, server, name, err)
	}
	return out, nil
}

// AppInSnapshot returns app's totals and state in snapshot id; ok is
// false if the snapshot does not list the application.
func (db *DB) AppInSnapshot(ctx context.Context, id int64, app string) (SnapshotApp, bool, error) {
	var v SnapshotApp
	var tierS, state, astate string
	var created int64
	err := db.r.QueryRowContext(ctx, `SELECT s.id, s.tier, s.server, s.name, s.created_ns, s.state, s.files, s.bytes,
			a.app, a.state, a.files, a.bytes
		FROM snapshot_apps a JOIN snapshots s ON s.id = a.snapshot_id WHERE s.id = ? AND a.app = ?`, id, app).
		Scan(&v.Snapshot.ID, &tierS, &v.Snapshot.Server, &v.Snapshot.Name, &created, &state,
			&v.Snapshot.Files, &v.Snapshot.Bytes, &v.App, &astate, &v.Files, &v.Bytes)
	if errors.Is(err, sql.ErrNoRows) {
		return SnapshotApp{}, false, nil
	}
	if err != nil {
		return SnapshotApp{}, false, fmt.Errorf("catalog %s: application %q in snapshot %d: %w", db.path, app, id, err)
	}
	v.Snapshot.Tier, v.Snapshot.State, v.Snapshot.Created = tiers.Tier(tierS), SnapshotState(state), timeOf(created)
	v.State = AppState(astate)
	return v, true, nil
}

// Digest is an application's content in one snapshot, in a form that is
// the same wherever a copy of it lives.
type Digest struct {
	// SHA256 is the SHA-256, lower-case hex, over one line per file in
	// path order: "{path relative to the app's directory}\t{sha256}\n"
	// (sha256 empty when the manifest does not know it).
	SHA256 string
	Files  int64
	Bytes  int64
	// Unhashed counts files whose checksum the manifest lacks; a digest
	// with unhashed files proves less.
	Unhashed int64
}

// AppDigest computes the digest of the files of snapshot id below prefix
// (an application's directory in its tier: "{vm}/{relpath}" in a local
// tier, "{host}/{vm}/{relpath}" in a remote one). Paths are taken relative
// to prefix, so the same night gives the same digest on the host, on a
// backup server and on a drive. It is computed from the manifest on each
// call (about a second per million files: no need to store it).
func (db *DB) AppDigest(ctx context.Context, id int64, prefix string) (Digest, error) {
	if prefix == "" {
		return Digest{}, fmt.Errorf("catalog %s: digest of snapshot %d: empty application prefix", db.path, id)
	}
	h := sha256.New()
	var d Digest
	var line []byte
	err := db.WalkManifest(ctx, id, prefix, func(e ManifestEntry) error {
		rel, ok := strings.CutPrefix(e.Path, prefix+"/")
		if !ok {
			rel = "" // the prefix is a file itself
		}
		line = append(line[:0], rel...)
		line = append(line, '\t')
		line = append(line, e.SHA256...)
		line = append(line, '\n')
		h.Write(line)
		d.Files++
		d.Bytes += e.Size
		if e.SHA256 == "" {
			d.Unhashed++
		}
		return nil
	})
	if err != nil {
		return Digest{}, fmt.Errorf("digest of %s: %w", prefix, err)
	}
	d.SHA256 = hex.EncodeToString(h.Sum(nil))
	return d, nil
}

// SnapshotByID returns snapshot id (wrapping ErrNotFound if there is none).
func (db *DB) SnapshotByID(ctx context.Context, id int64) (Snapshot, error) {
	s, err := scanSnapshot(db.r.QueryRowContext(ctx, `SELECT `+snapCols+` FROM snapshots WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, fmt.Errorf("catalog %s: snapshot %d: %w", db.path, id, ErrNotFound)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("catalog %s: snapshot %d: %w", db.path, id, err)
	}
	return s, nil
}

// StoreAppDigests computes the digest of each application of snapshot id
// (apps maps its name to its directory in the tier, as AppDigest's prefix)
// and stores it with the snapshot's per-app totals, so copies need not
// read the manifest again. Applications the snapshot does not list are
// skipped.
func (db *DB) StoreAppDigests(ctx context.Context, id int64, apps map[string]string) error {
	var errs []error
	for app, prefix := range apps {
		d, err := db.AppDigest(ctx, id, prefix)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = db.write(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`UPDATE snapshot_apps SET digest = ? WHERE snapshot_id = ? AND app = ?`, d.SHA256, id, app)
			if err != nil {
				return fmt.Errorf("catalog %s: snapshot %d: application %q: store digest: %w", db.path, id, app, err)
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StoredAppDigest returns the digest StoreAppDigests stored for app in
// snapshot id; ok is false if there is none (not stored, or a catalog
// older than schema version 3).
func (db *DB) StoredAppDigest(ctx context.Context, id int64, app string) (sha string, ok bool, err error) {
	v, err := db.UserVersion(ctx)
	if err != nil || v < 3 {
		return "", false, err
	}
	var s sql.NullString
	err = db.r.QueryRowContext(ctx, `SELECT digest FROM snapshot_apps WHERE snapshot_id = ? AND app = ?`, id, app).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("catalog %s: snapshot %d: application %q: digest: %w", db.path, id, app, err)
	}
	return s.String, s.Valid, nil
}
