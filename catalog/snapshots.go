package catalog

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/snapshot"
)

// SnapshotState is whether a snapshot is still being recorded.
type SnapshotState string

// Snapshot states.
const (
	SnapshotBuilding SnapshotState = "building"
	SnapshotComplete SnapshotState = "complete"
)

// AppState is how an application entered a snapshot.
type AppState string

// Application states in a snapshot.
const (
	// AppComplete: the application's backup was complete when the snapshot
	// was taken.
	AppComplete AppState = "complete"
	// AppCarried: the application's backup was running or had failed, so
	// the snapshot holds its files from the last complete state.
	AppCarried AppState = "carried"
)

// Snapshot is one snapshot of a tier.
type Snapshot struct {
	ID      int64
	Tier    tiers.Tier
	Server  string // the host whose tier this is
	Name    string // e.g. "2026-11-28T050000"
	Created time.Time
	State   SnapshotState
	Files   int64
	Bytes   int64
}

// ManifestEntry is one file of a snapshot.
type ManifestEntry struct {
	Path   string // relative to the tier root, as in FileRecord
	Size   int64
	MTime  time.Time
	SHA256 string // lower-case hex, "" = unknown
	// App attributes the entry for the snapshot's per-app totals; it is not
	// stored per entry. "" = no application.
	App string
}

// SnapshotBuilder records a snapshot's manifest. Entries are written in
// batches as they are added; the snapshot stays "building" (and is listed
// as such, never as complete) until Commit. A builder belongs to one
// goroutine.
type SnapshotBuilder struct {
	db      *DB
	snap    Snapshot
	buf     []ManifestEntry
	files   int64
	bytes   int64
	apps    map[string]*appTotal
	done    bool
	batchSz int
}

type appTotal struct {
	state        AppState
	files, bytes int64
}

const manifestBatch = 5000

// BeginSnapshot starts recording snapshot name of tier on server. The name
// must follow tiers.SnapshotLayout and be new for (tier, server).
func (db *DB) BeginSnapshot(ctx context.Context, tier tiers.Tier, server, name string, created time.Time) (*SnapshotBuilder, error) {
	if _, err := tiers.ParseTier(string(tier)); err != nil {
		return nil, fmt.Errorf("catalog: begin snapshot: %w", err)
	}
	if _, err := tiers.ParseServer(server); err != nil {
		return nil, fmt.Errorf("catalog: begin snapshot: %w", err)
	}
	if _, err := tiers.ParseSnapshotName(name, time.UTC); err != nil {
		return nil, fmt.Errorf("catalog: begin snapshot: %w", err)
	}
	if created.IsZero() {
		created = db.opts.now()
	}
	b := &SnapshotBuilder{
		db:      db,
		snap:    Snapshot{Tier: tier, Server: server, Name: name, Created: created, State: SnapshotBuilding},
		apps:    map[string]*appTotal{},
		batchSz: manifestBatch,
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO snapshots (tier, server, name, created_ns, state) VALUES (?, ?, ?, ?, 'building')`,
			string(tier), server, name, created.UnixNano())
		if err != nil {
			if isUnique(err) {
				return fmt.Errorf("catalog %s: snapshot %s: already exists", db.path, b.label())
			}
			return fmt.Errorf("catalog %s: begin snapshot %s: %w", db.path, b.label(), err)
		}
		b.snap.ID, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (b *SnapshotBuilder) label() string {
	return fmt.Sprintf("%s/%s/%s", b.snap.Tier, b.snap.Server, b.snap.Name)
}

// Snapshot returns the snapshot being built (its ID is valid).
func (b *SnapshotBuilder) Snapshot() Snapshot { return b.snap }

// Add appends entries to the manifest, writing a batch when enough have
// accumulated. A path may appear only once per snapshot.
func (b *SnapshotBuilder) Add(ctx context.Context, entries ...ManifestEntry) error {
	if b.done {
		return fmt.Errorf("catalog: snapshot %s: add after commit or abort", b.label())
	}
	for _, e := range entries {
		if err := checkPath("manifest path", e.Path); err != nil {
			return fmt.Errorf("snapshot %s: %w", b.label(), err)
		}
		if err := checkSHA(e.Path, e.SHA256); err != nil {
			return fmt.Errorf("snapshot %s: %w", b.label(), err)
		}
		if e.Size < 0 {
			return fmt.Errorf("catalog: snapshot %s: %s: negative size %d", b.label(), e.Path, e.Size)
		}
		if err := checkTime(e.Path, "mtime", e.MTime); err != nil {
			return fmt.Errorf("snapshot %s: %w", b.label(), err)
		}
	}
	for _, e := range entries {
		b.buf = append(b.buf, e)
		if len(b.buf) >= b.batchSz {
			if err := b.flush(ctx, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// SetApp records app's state in this snapshot (AppComplete is the default
// for every app that has entries).
func (b *SnapshotBuilder) SetApp(app string, state AppState) error {
	if app == "" {
		return fmt.Errorf("catalog: snapshot %s: empty application name", b.label())
	}
	if state != AppComplete && state != AppCarried {
		return fmt.Errorf("catalog: snapshot %s: application %q: state %q: must be complete or carried", b.label(), app, state)
	}
	b.app(app).state = state
	return nil
}

func (b *SnapshotBuilder) app(name string) *appTotal {
	t := b.apps[name]
	if t == nil {
		t = &appTotal{state: AppComplete}
		b.apps[name] = t
	}
	return t
}

// flush writes the buffered entries, and then runs final (if any) in the
// same transaction.
func (b *SnapshotBuilder) flush(ctx context.Context, final func(tx *sql.Tx) error) error {
	entries := b.buf
	err := b.db.write(ctx, func(tx *sql.Tx) error {
		if err := b.db.insertManifestTx(tx, b.snap.ID, entries); err != nil {
			return fmt.Errorf("catalog %s: snapshot %s: %w", b.db.path, b.label(), err)
		}
		if final != nil {
			return final(tx)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range entries {
		b.files++
		b.bytes += e.Size
		if e.App != "" {
			t := b.app(e.App)
			t.files++
			t.bytes += e.Size
		}
	}
	b.buf = b.buf[:0]
	return nil
}

func (db *DB) insertManifestTx(tx *sql.Tx, snapID int64, entries []ManifestEntry) error {
	if len(entries) == 0 {
		return nil
	}
	// In path order, path ids and manifest keys grow together: appends.
	if !slices.IsSortedFunc(entries, func(a, b ManifestEntry) int { return strings.Compare(a.Path, b.Path) }) {
		entries = slices.Clone(entries)
		slices.SortFunc(entries, func(a, b ManifestEntry) int { return strings.Compare(a.Path, b.Path) })
	}
	getPath, err := tx.Prepare(`SELECT id FROM paths WHERE path = ?`)
	if err != nil {
		return err
	}
	defer getPath.Close()
	addPath, err := tx.Prepare(`INSERT INTO paths (path) VALUES (?)`)
	if err != nil {
		return err
	}
	defer addPath.Close()
	ins, err := tx.Prepare(`INSERT INTO manifest (snapshot_id, path_id, size, mtime_ns, sha256) VALUES (?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer ins.Close()
	for _, e := range entries {
		var id int64
		err := getPath.QueryRow(e.Path).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			var res sql.Result
			if res, err = addPath.Exec(e.Path); err == nil {
				id, err = res.LastInsertId()
			}
		}
		if err != nil {
			return fmt.Errorf("path %q: %w", e.Path, err)
		}
		var sha any
		if e.SHA256 != "" {
			raw, _ := hex.DecodeString(e.SHA256) // checked by Add
			sha = raw
		}
		if _, err := ins.Exec(snapID, id, e.Size, e.MTime.UnixNano(), sha); err != nil {
			if isUnique(err) {
				return fmt.Errorf("path %q: listed twice", e.Path)
			}
			return fmt.Errorf("path %q: %w", e.Path, err)
		}
	}
	return nil
}

// Commit writes the remaining entries and the per-app totals and marks the
// snapshot complete, all in one transaction.
func (b *SnapshotBuilder) Commit(ctx context.Context) (Snapshot, error) {
	if b.done {
		return Snapshot{}, fmt.Errorf("catalog: snapshot %s: commit after commit or abort", b.label())
	}
	// Totals include the last batch, which is written in the same
	// transaction as the flip; compute them before.
	files, bytes := b.files, b.bytes
	apps := map[string]appTotal{}
	for n, t := range b.apps {
		apps[n] = *t
	}
	for _, e := range b.buf {
		files++
		bytes += e.Size
		if e.App != "" {
			t := apps[e.App]
			if t.state == "" {
				t.state = AppComplete
			}
			t.files++
			t.bytes += e.Size
			apps[e.App] = t
		}
	}
	names := make([]string, 0, len(apps))
	for n := range apps {
		names = append(names, n)
	}
	sort.Strings(names)
	err := b.flush(ctx, func(tx *sql.Tx) error {
		st, err := tx.Prepare(`INSERT INTO snapshot_apps (snapshot_id, app, state, files, bytes) VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, n := range names {
			t := apps[n]
			if _, err := st.Exec(b.snap.ID, n, string(t.state), t.files, t.bytes); err != nil {
				return fmt.Errorf("catalog %s: snapshot %s: application %q: %w", b.db.path, b.label(), n, err)
			}
		}
		res, err := tx.Exec(`UPDATE snapshots SET state = 'complete', files = ?, bytes = ? WHERE id = ? AND state = 'building'`,
			files, bytes, b.snap.ID)
		if err != nil {
			return fmt.Errorf("catalog %s: commit snapshot %s: %w", b.db.path, b.label(), err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("catalog %s: commit snapshot %s: it was deleted while being built", b.db.path, b.label())
		}
		return nil
	})
	if err != nil {
		return Snapshot{}, err
	}
	b.done = true
	b.snap.State, b.snap.Files, b.snap.Bytes = SnapshotComplete, files, bytes
	return b.snap, nil
}

// Abort deletes the snapshot being built and its entries.
func (b *SnapshotBuilder) Abort(ctx context.Context) error {
	if b.done {
		return nil
	}
	b.done = true
	b.buf = nil
	return b.db.DeleteSnapshot(ctx, b.snap.ID)
}

// DeleteSnapshot deletes snapshot id, its manifest and per-app totals.
// Paths no other manifest uses are kept (they are small, and pruning them
// would scan the manifest index); see PrunePaths.
func (db *DB) DeleteSnapshot(ctx context.Context, id int64) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM snapshots WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("catalog %s: delete snapshot %d: %w", db.path, id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("catalog %s: delete snapshot %d: %w", db.path, id, ErrNotFound)
		}
		return nil
	})
}

// PrunePaths deletes paths no manifest refers to any more, and returns how
// many went. Run it after pruning snapshots.
func (db *DB) PrunePaths(ctx context.Context) (int64, error) {
	var n int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM paths WHERE NOT EXISTS (SELECT 1 FROM manifest m WHERE m.path_id = paths.id)`)
		if err != nil {
			return fmt.Errorf("catalog %s: prune paths: %w", db.path, err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

const snapCols = `id, tier, server, name, created_ns, state, files, bytes`

func scanSnapshot(sc interface{ Scan(...any) error }) (Snapshot, error) {
	var s Snapshot
	var tier, state string
	var created int64
	err := sc.Scan(&s.ID, &tier, &s.Server, &s.Name, &created, &state, &s.Files, &s.Bytes)
	s.Tier, s.State, s.Created = tiers.Tier(tier), SnapshotState(state), timeOf(created)
	return s, err
}

// ListSnapshots lists the snapshots of tier on server ("" = every server),
// building ones included, oldest first.
func (db *DB) ListSnapshots(ctx context.Context, tier tiers.Tier, server string) ([]Snapshot, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+snapCols+` FROM snapshots
		WHERE tier = ? AND (?2 = '' OR server = ?2) ORDER BY server, name`, string(tier), server)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: snapshots of %s/%s: %w", db.path, tier, server, err)
	}
	defer rows.Close()
	var out []Snapshot
	for rows.Next() {
		s, err := scanSnapshot(rows)
		if err != nil {
			return nil, fmt.Errorf("catalog %s: snapshots of %s/%s: %w", db.path, tier, server, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: snapshots of %s/%s: %w", db.path, tier, server, err)
	}
	return out, nil
}

// LatestSnapshot returns the newest complete snapshot of tier on server; ok
// is false if there is none.
func (db *DB) LatestSnapshot(ctx context.Context, tier tiers.Tier, server string) (snap Snapshot, ok bool, err error) {
	s, err := scanSnapshot(db.r.QueryRowContext(ctx, `SELECT `+snapCols+` FROM snapshots
		WHERE tier = ? AND server = ? AND state = 'complete' ORDER BY name DESC LIMIT 1`, string(tier), server))
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, false, nil
	}
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("catalog %s: latest snapshot of %s/%s: %w", db.path, tier, server, err)
	}
	return s, true, nil
}

// SnapshotByName returns snapshot name of tier on server (wrapping
// ErrNotFound if there is none).
func (db *DB) SnapshotByName(ctx context.Context, tier tiers.Tier, server, name string) (Snapshot, error) {
	s, err := scanSnapshot(db.r.QueryRowContext(ctx, `SELECT `+snapCols+` FROM snapshots
		WHERE tier = ? AND server = ? AND name = ?`, string(tier), server, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, fmt.Errorf("catalog %s: snapshot %s/%s/%s: %w", db.path, tier, server, name, ErrNotFound)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("catalog %s: snapshot %s/%s/%s: %w", db.path, tier, server, name, err)
	}
	return s, nil
}

// WalkManifest calls fn for every entry of snapshot id at or below prefix
// ("" = all), in path order. App is not set (entries do not store it).
func (db *DB) WalkManifest(ctx context.Context, id int64, prefix string, fn func(ManifestEntry) error) error {
	if err := checkPrefix("manifest prefix", prefix); err != nil {
		return err
	}
	var rows *sql.Rows
	var err error
	if prefix == "" {
		rows, err = db.r.QueryContext(ctx, `SELECT p.path, m.size, m.mtime_ns, m.sha256
			FROM manifest m JOIN paths p ON p.id = m.path_id WHERE m.snapshot_id = ? ORDER BY p.path`, id)
	} else {
		// Driven by the paths index (CROSS JOIN fixes the loop order): the
		// cost follows the size of the subtree, not of the snapshot.
		rows, err = db.r.QueryContext(ctx, manifestUnderSQL, append(prefixArgs(prefix), id)...)
	}
	if err != nil {
		return fmt.Errorf("catalog %s: manifest of snapshot %d: %w", db.path, id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var e ManifestEntry
		var mtime int64
		var sha []byte
		if err := rows.Scan(&e.Path, &e.Size, &mtime, &sha); err != nil {
			return fmt.Errorf("catalog %s: manifest of snapshot %d: %w", db.path, id, err)
		}
		e.MTime, e.SHA256 = time.Unix(0, mtime), hexOf(sha)
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("catalog %s: manifest of snapshot %d: %w", db.path, id, err)
	}
	return nil
}

var manifestUnderSQL = `SELECT p.path, m.size, m.mtime_ns, m.sha256
	FROM paths p CROSS JOIN manifest m ON m.snapshot_id = ?4 AND m.path_id = p.id
	WHERE ` + prefixWhere("p.path")

func hexOf(b []byte) string {
	if b == nil {
		return ""
	}
	return hex.EncodeToString(b)
}

// Change is a path present in both snapshots of a diff, with different
// content.
type Change struct {
	Old, New ManifestEntry
}

// Diff is the difference between two snapshots.
type Diff struct {
	Added   []ManifestEntry // only in the newer snapshot
	Removed []ManifestEntry // only in the older snapshot
	Changed []Change
}

// DiffSnapshots compares snapshot a (older) with b (newer) at or below
// prefix ("" = all). An entry changed if its size differs, or its SHA-256
// differs, or, when either hash is unknown, its mtime differs. Results are
// in path order.
func (db *DB) DiffSnapshots(ctx context.Context, a, b int64, prefix string) (Diff, error) {
	var d Diff
	if err := checkPrefix("diff prefix", prefix); err != nil {
		return d, err
	}
	// A merge join of the two path-ordered manifests: one pass, any size.
	type cursor struct {
		ch   chan ManifestEntry
		errc chan error
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	open := func(id int64) cursor {
		c := cursor{make(chan ManifestEntry, 256), make(chan error, 1)}
		go func() {
			defer close(c.ch)
			c.errc <- db.WalkManifest(cctx, id, prefix, func(e ManifestEntry) error {
				select {
				case c.ch <- e:
					return nil
				case <-cctx.Done():
					return cctx.Err()
				}
			})
		}()
		return c
	}
	for _, id := range []int64{a, b} {
		var n int
		if err := db.r.QueryRowContext(ctx, `SELECT count(*) FROM snapshots WHERE id = ?`, id).Scan(&n); err != nil {
			return d, fmt.Errorf("catalog %s: diff: snapshot %d: %w", db.path, id, err)
		} else if n == 0 {
			return d, fmt.Errorf("catalog %s: diff: snapshot %d: %w", db.path, id, ErrNotFound)
		}
	}
	ca, cb := open(a), open(b)
	ea, oka := <-ca.ch
	eb, okb := <-cb.ch
	for oka || okb {
		switch {
		case !okb || oka && ea.Path < eb.Path:
			d.Removed = append(d.Removed, ea)
			ea, oka = <-ca.ch
		case !oka || eb.Path < ea.Path:
			d.Added = append(d.Added, eb)
			eb, okb = <-cb.ch
		default:
			if changed(ea, eb) {
				d.Changed = append(d.Changed, Change{Old: ea, New: eb})
			}
			ea, oka = <-ca.ch
			eb, okb = <-cb.ch
		}
	}
	// Both channels are closed: both walks have ended, on their own or on
	// an error.
	if err := errors.Join(<-ca.errc, <-cb.errc); err != nil {
		return Diff{}, fmt.Errorf("catalog %s: diff of snapshots %d and %d: %w", db.path, a, b, err)
	}
	return d, nil
}

func changed(a, b ManifestEntry) bool {
	if a.Size != b.Size {
		return true
	}
	if a.SHA256 != "" && b.SHA256 != "" {
		return a.SHA256 != b.SHA256
	}
	return !a.MTime.Equal(b.MTime)
}

// PathVersion is a path as one snapshot holds it.
type PathVersion struct {
	Snapshot Snapshot
	Entry    ManifestEntry
}

// PathHistory lists, oldest snapshot first, every complete snapshot of tier
// ("" = both) on server ("" = every server) that holds a path matching
// pattern: an exact path, or a shell glob (*, ?, [...], as SQLite's GLOB,
// where * also crosses "/") when pattern contains one of "*?[".
func (db *DB) PathHistory(ctx context.Context, tier tiers.Tier, server, pattern string) ([]PathVersion, error) {
	if pattern == "" {
		return nil, errors.New("catalog: path history: empty pattern")
	}
	op := "="
	if strings.ContainsAny(pattern, "*?[") {
		op = "GLOB"
	}
	rows, err := db.r.QueryContext(ctx, `SELECT s.id, s.tier, s.server, s.name, s.created_ns, s.state, s.files, s.bytes,
			p.path, m.size, m.mtime_ns, m.sha256
		FROM paths p JOIN manifest m ON m.path_id = p.id JOIN snapshots s ON s.id = m.snapshot_id
		WHERE p.path `+op+` ?1 AND s.state = 'complete' AND (?2 = '' OR s.tier = ?2) AND (?3 = '' OR s.server = ?3)
		ORDER BY s.name, s.server, s.tier, p.path`, pattern, string(tier), server)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: history of %q: %w", db.path, pattern, err)
	}
	defer rows.Close()
	var out []PathVersion
	for rows.Next() {
		var v PathVersion
		var tierS, state string
		var created, mtime int64
		var sha []byte
		if err := rows.Scan(&v.Snapshot.ID, &tierS, &v.Snapshot.Server, &v.Snapshot.Name, &created, &state,
			&v.Snapshot.Files, &v.Snapshot.Bytes, &v.Entry.Path, &v.Entry.Size, &mtime, &sha); err != nil {
			return nil, fmt.Errorf("catalog %s: history of %q: %w", db.path, pattern, err)
		}
		v.Snapshot.Tier, v.Snapshot.State, v.Snapshot.Created = tiers.Tier(tierS), SnapshotState(state), timeOf(created)
		v.Entry.MTime, v.Entry.SHA256 = time.Unix(0, mtime), hexOf(sha)
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: history of %q: %w", db.path, pattern, err)
	}
	return out, nil
}

// SnapshotApp is an application's totals and state in one snapshot.
type SnapshotApp struct {
	Snapshot Snapshot
	App      string
	State    AppState
	Files    int64
	Bytes    int64
}

// AppHistory lists per-app totals of the complete snapshots of tier on
// server ("" = every server), oldest first, for app ("" = every app): the
// data of history and trend reports.
func (db *DB) AppHistory(ctx context.Context, tier tiers.Tier, server, app string) ([]SnapshotApp, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT s.id, s.tier, s.server, s.name, s.created_ns, s.state, s.files, s.bytes,
			a.app, a.state, a.files, a.bytes
		FROM snapshot_apps a JOIN snapshots s ON s.id = a.snapshot_id
		WHERE s.tier = ?1 AND s.state = 'complete' AND (?2 = '' OR s.server = ?2) AND (?3 = '' OR a.app = ?3)
		ORDER BY s.name, s.server, a.app`, string(tier), server, app)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: app history of %q: %w", db.path, app, err)
	}
	defer rows.Close()
	var out []SnapshotApp
	for rows.Next() {
		var v SnapshotApp
		var tierS, state, astate string
		var created int64
		if err := rows.Scan(&v.Snapshot.ID, &tierS, &v.Snapshot.Server, &v.Snapshot.Name, &created, &state,
			&v.Snapshot.Files, &v.Snapshot.Bytes, &v.App, &astate, &v.Files, &v.Bytes); err != nil {
			return nil, fmt.Errorf("catalog %s: app history of %q: %w", db.path, app, err)
		}
		v.Snapshot.Tier, v.Snapshot.State, v.Snapshot.Created = tiers.Tier(tierS), SnapshotState(state), timeOf(created)
		v.State = AppState(astate)
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: app history of %q: %w", db.path, app, err)
	}
	return out, nil
}

// Take builds the hard-link snapshot opts describes (tiers/snapshot.Create)
// and records its manifest in b: the regular files, each with the
// application appOf names (empty: none). opts.Emit, if set, sees every
// batch first. The tree and the record come or go together: if the
// snapshot fails, b is aborted; if the record cannot be committed, the
// tree is moved aside, so the next snapshot never builds on one the
// catalog does not know. Updating the "latest" link is the caller's.
func (b *SnapshotBuilder) Take(ctx context.Context, opts snapshot.Options, appOf func(path string) string) (*snapshot.Result, Snapshot, error) {
	also := opts.Emit
	opts.Emit = func(batch []snapshot.Entry) error {
		if also != nil {
			if err := also(batch); err != nil {
				return err
			}
		}
		entries := make([]ManifestEntry, 0, len(batch))
		for _, e := range batch {
			if e.Mode.IsRegular() {
				entries = append(entries, ManifestEntry{Path: e.Path, Size: e.Size, MTime: e.MTime, SHA256: e.SHA256, App: appOf(e.Path)})
			}
		}
		return b.Add(ctx, entries...)
	}
	res, err := snapshot.Create(ctx, opts)
	if err != nil {
		b.Abort(context.WithoutCancel(ctx))
		return nil, Snapshot{}, err
	}
	snap, err := b.Commit(ctx)
	if err != nil {
		err = fmt.Errorf("snapshot %s: recording the manifest: %w", opts.Name, err)
		if derr := snapshot.Discard(opts.SnapDir, opts.Name); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, Snapshot{}, err
	}
	return res, snap, nil
}
