package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
	"time"
)

// FileRecord is the catalog's view of one live file of the local tier.
type FileRecord struct {
	Path   string // relative to {partition}/local, e.g. "web/demo.softxs.ch/hydro/db/x.sql.gz"
	App    string
	Size   int64
	MTime  time.Time
	SHA256 string // lower-case hex; "" = not hashed yet
	// HashedAt is when SHA256 was computed; zero means UpdatedAt.
	HashedAt time.Time
	// UpdatedAt is when the file was observed (stat before hashing); zero
	// means now. A record older than the stored one is ignored, so a slow
	// hash of stale content never overwrites a newer observation.
	UpdatedAt time.Time
	// Deleted removes the path's row (not a directory prefix; see
	// RemovePath) instead of upserting it.
	Deleted bool
}

// checkPath validates a path relative to a tier root: not empty, relative,
// clean, no "..", no NUL.
func checkPath(field, p string) error {
	switch {
	case p == "":
		return fmt.Errorf("catalog: %s: empty path", field)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("catalog: %s %q: must be relative to the tier root", field, p)
	case path.Clean(p) != p || p == ".":
		return fmt.Errorf("catalog: %s %q: must be a clean path (%q)", field, p, path.Clean(p))
	case p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("catalog: %s %q: must not leave the tier root", field, p)
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("catalog: %s %q: contains a NUL byte", field, p)
	}
	return nil
}

// checkPrefix is checkPath that also accepts "" (everything).
func checkPrefix(field, p string) error {
	if p == "" {
		return nil
	}
	return checkPath(field, p)
}

// under returns the bounds of the paths strictly below directory p in
// BINARY order: p/ < x < p0 ('0' follows '/'), a range an index can serve.
func under(p string) (lo, hi string) { return p + "/", p + "0" }

// prefixWhere selects col at or below the prefix bound by prefixArgs, in
// col order: one index range [p, p0) that needs no sort, filtered so that
// siblings sorting between p and p/ ("p.txt", "p-old") stay out.
func prefixWhere(col string) string {
	return col + ` >= ?1 AND ` + col + ` < ?3 AND (` + col + ` = ?1 OR ` + col + ` > ?2) ORDER BY ` + col
}

var filesUnderSQL = `SELECT ` + fileCols + ` FROM files WHERE ` + prefixWhere("path")

func prefixArgs(p string) []any {
	lo, hi := under(p)
	return []any{p, lo, hi}
}

// Times a row can hold: Unix nanoseconds in an int64.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// checkTime refuses the zero time and times an int64 of nanoseconds cannot
// hold (before 1678, after 2262).
func checkTime(p, field string, t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("catalog: %s: zero %s", p, field)
	}
	if t.Before(minTime) || t.After(maxTime) {
		return fmt.Errorf("catalog: %s: %s %v is out of range (1678 to 2262)", p, field, t)
	}
	return nil
}

// checkSHA validates a hex SHA-256 ("" allowed).
func checkSHA(p, sha string) error {
	if sha == "" {
		return nil
	}
	if len(sha) != 64 {
		return fmt.Errorf("catalog: %s: sha256 %q: must be 64 hex digits", p, sha)
	}
	for i := 0; i < len(sha); i++ {
		c := sha[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("catalog: %s: sha256 %q: must be lower-case hex", p, sha)
		}
	}
	return nil
}

// upsertFilesSQL upserts n rows in one statement: one cgo round trip and
// one statement step per n rows is what makes a 10k batch fast.
func upsertFilesSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO files (path, app, size, mtime_ns, sha256, hashed_ns, updated_ns) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?)")
	}
	b.WriteString(` ON CONFLICT (path) DO UPDATE SET app = excluded.app, size = excluded.size, mtime_ns = excluded.mtime_ns,
		sha256 = excluded.sha256, hashed_ns = excluded.hashed_ns, updated_ns = excluded.updated_ns
	WHERE excluded.updated_ns >= files.updated_ns`)
	return b.String()
}

// upsertChunk is the number of rows per upsert statement. Measured: SQLite
// runs single-row upserts faster than multi-row VALUES lists.
const upsertChunk = 1

const deleteFileSQL = `DELETE FROM files WHERE path = ? AND updated_ns <= ?`

// UpsertFiles inserts, updates or (Deleted) removes file rows, all in one
// transaction: after a crash either every record is in or none is.
func (db *DB) UpsertFiles(ctx context.Context, recs []FileRecord) error {
	if len(recs) == 0 {
		return nil
	}
	for _, r := range recs {
		if err := checkPath("file path", r.Path); err != nil {
			return err
		}
		if err := checkSHA(r.Path, r.SHA256); err != nil {
			return err
		}
		if r.Size < 0 {
			return fmt.Errorf("catalog: %s: negative size %d", r.Path, r.Size)
		}
		if !r.Deleted {
			if err := checkTime(r.Path, "mtime", r.MTime); err != nil {
				return err
			}
		}
	}
	// Path order makes the index inserts sequential, which is measurably
	// faster. Sort indexes, not the wide records; ties keep their order.
	if !slices.IsSortedFunc(recs, cmpPath) {
		idx := make([]int32, len(recs))
		for i := range idx {
			idx[i] = int32(i)
		}
		slices.SortFunc(idx, func(a, b int32) int {
			if c := strings.Compare(recs[a].Path, recs[b].Path); c != 0 {
				return c
			}
			return int(a - b)
		})
		sorted := make([]FileRecord, len(recs))
		for i, j := range idx {
			sorted[i] = recs[j]
		}
		recs = sorted
	}
	now := db.opts.now()
	return db.write(ctx, func(tx *sql.Tx) error { return db.upsertFilesTx(tx, recs, now) })
}

func cmpPath(a, b FileRecord) int { return strings.Compare(a.Path, b.Path) }

func (db *DB) upsertFilesTx(tx *sql.Tx, recs []FileRecord, now time.Time) error {
	stmts := map[int]*sql.Stmt{} // by rows per statement; 0 = delete
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	stmt := func(n int) (*sql.Stmt, error) {
		if st := stmts[n]; st != nil {
			return st, nil
		}
		q := deleteFileSQL
		if n > 0 {
			q = upsertFilesSQL(n)
		}
		st, err := tx.Prepare(q)
		if err != nil {
			return nil, fmt.Errorf("catalog %s: %w", db.path, err)
		}
		stmts[n] = st
		return st, nil
	}
	args := make([]any, 0, 7*upsertChunk)
	for i := 0; i < len(recs); {
		if recs[i].Deleted {
			r := recs[i]
			st, err := stmt(0)
			if err != nil {
				return err
			}
			if _, err := st.Exec(r.Path, nsOr(r.UpdatedAt, now)); err != nil {
				return fmt.Errorf("catalog %s: delete file %q: %w", db.path, r.Path, err)
			}
			if db.opts.upsertHook != nil {
				db.opts.upsertHook(i)
			}
			i++
			continue
		}
		// A run of upserts, up to a chunk, in one statement.
		j := i
		for j < len(recs) && j-i < upsertChunk && !recs[j].Deleted {
			j++
		}
		n := j - i
		if n < upsertChunk {
			n = 1 // remainders go one by one: no statement per odd size
			j = i + 1
		}
		args = args[:0]
		for _, r := range recs[i:j] {
			at := nsOr(r.UpdatedAt, now)
			var sha, hashed any
			if r.SHA256 != "" {
				sha = r.SHA256
				if r.HashedAt.IsZero() {
					hashed = at
				} else {
					hashed = r.HashedAt.UnixNano()
				}
			}
			args = append(args, r.Path, r.App, r.Size, r.MTime.UnixNano(), sha, hashed, at)
		}
		st, err := stmt(n)
		if err != nil {
			return err
		}
		if _, err := st.Exec(args...); err != nil {
			if n == 1 {
				return fmt.Errorf("catalog %s: upsert file %q: %w", db.path, recs[i].Path, err)
			}
			return fmt.Errorf("catalog %s: upsert files %q to %q: %w", db.path, recs[i].Path, recs[j-1].Path, err)
		}
		if db.opts.upsertHook != nil {
			db.opts.upsertHook(j - 1)
		}
		i = j
	}
	return nil
}

// nsOr is t in Unix nanoseconds, or def's if t is zero.
func nsOr(t, def time.Time) int64 {
	if t.IsZero() {
		return def.UnixNano()
	}
	return t.UnixNano()
}

// RemovePath removes the row of p and of every path below it (unlink, rmdir
// or rm -r of p). It returns how many rows went.
func (db *DB) RemovePath(ctx context.Context, p string) (int64, error) {
	if err := checkPath("removed path", p); err != nil {
		return 0, err
	}
	var n int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = removeTx(tx, p)
		if err != nil {
			return fmt.Errorf("catalog %s: remove %q: %w", db.path, p, err)
		}
		return nil
	})
	return n, err
}

func removeTx(tx *sql.Tx, p string) (int64, error) {
	lo, hi := under(p)
	res, err := tx.Exec(`DELETE FROM files WHERE path = ? OR (path > ? AND path < ?)`, p, lo, hi)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// RenamePath moves the row of from, and every row below it, to to, as
// rename(2) does: rows at or below to are replaced. Hashes are kept, since a
// rename changes neither content nor mtime. If app is not empty the moved
// rows are attributed to it.
func (db *DB) RenamePath(ctx context.Context, from, to, app string) error {
	if err := checkPath("rename source", from); err != nil {
		return err
	}
	if err := checkPath("rename target", to); err != nil {
		return err
	}
	if from == to {
		return nil
	}
	if strings.HasPrefix(to, from+"/") {
		return fmt.Errorf("catalog: rename %q to %q: target is inside the source", from, to)
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		if err := renameTx(tx, from, to, app); err != nil {
			return fmt.Errorf("catalog %s: rename %q to %q: %w", db.path, from, to, err)
		}
		return nil
	})
}

func renameTx(tx *sql.Tx, from, to, app string) error {
	if strings.HasPrefix(to, from+"/") {
		return errors.New("target is inside the source")
	}
	if _, err := removeTx(tx, to); err != nil {
		return err
	}
	lo, hi := under(from)
	// The new path is to + the part after from; a BINARY range keeps the
	// index usable.
	_, err := tx.Exec(`UPDATE files SET path = ?1 || substr(path, ?2), app = CASE WHEN ?3 = '' THEN app ELSE ?3 END
		WHERE path = ?4 OR (path > ?5 AND path < ?6)`, to, len(from)+1, app, from, lo, hi)
	return err
}

const fileCols = `path, app, size, mtime_ns, sha256, hashed_ns, updated_ns`

func scanFile(sc interface{ Scan(...any) error }) (FileRecord, error) {
	var f FileRecord
	var mtime, updated int64
	var sha sql.NullString
	var hashed sql.NullInt64
	err := sc.Scan(&f.Path, &f.App, &f.Size, &mtime, &sha, &hashed, &updated)
	f.MTime, f.SHA256, f.HashedAt, f.UpdatedAt = time.Unix(0, mtime), sha.String, timeOfNull(hashed), timeOf(updated)
	return f, err
}

// LookupFile returns the row of path p; ok is false if there is none.
func (db *DB) LookupFile(ctx context.Context, p string) (rec FileRecord, ok bool, err error) {
	f, err := scanFile(db.r.QueryRowContext(ctx, `SELECT `+fileCols+` FROM files WHERE path = ?`, p))
	if errors.Is(err, sql.ErrNoRows) {
		return FileRecord{}, false, nil
	}
	if err != nil {
		return FileRecord{}, false, fmt.Errorf("catalog %s: file %q: %w", db.path, p, err)
	}
	return f, true, nil
}

// FileHash returns the catalog's SHA-256 of p if it was hashed with exactly
// this size and mtime, so that a snapshot can reuse it instead of reading
// the file again.
func (db *DB) FileHash(ctx context.Context, p string, size int64, mtime time.Time) (sha string, ok bool, err error) {
	var s sql.NullString
	err = db.r.QueryRowContext(ctx, `SELECT sha256 FROM files WHERE path = ? AND size = ? AND mtime_ns = ?`,
		p, size, mtime.UnixNano()).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) || err == nil && !s.Valid {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("catalog %s: hash of %q: %w", db.path, p, err)
	}
	return s.String, true, nil
}

// WalkFiles calls fn for every row at or below prefix ("" = all), in path
// order, from one consistent read snapshot. An error from fn stops the walk
// and is returned.
func (db *DB) WalkFiles(ctx context.Context, prefix string, fn func(FileRecord) error) error {
	if err := checkPrefix("file prefix", prefix); err != nil {
		return err
	}
	var rows *sql.Rows
	var err error
	if prefix == "" {
		rows, err = db.r.QueryContext(ctx, `SELECT `+fileCols+` FROM files ORDER BY path`)
	} else {
		rows, err = db.r.QueryContext(ctx, filesUnderSQL, prefixArgs(prefix)...)
	}
	if err != nil {
		return fmt.Errorf("catalog %s: files under %q: %w", db.path, prefix, err)
	}
	defer rows.Close()
	for rows.Next() {
		f, err := scanFile(rows)
		if err != nil {
			return fmt.Errorf("catalog %s: files under %q: %w", db.path, prefix, err)
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("catalog %s: files under %q: %w", db.path, prefix, err)
	}
	return nil
}

// FileTotal is the live-file total of one application.
type FileTotal struct {
	App      string
	Files    int64
	Bytes    int64
	Unhashed int64 // files whose SHA-256 is not known yet
}

// FileTotals sums the live files per application, by app name.
func (db *DB) FileTotals(ctx context.Context) ([]FileTotal, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT app, count(*), coalesce(sum(size), 0), count(*) - count(sha256)
		FROM files GROUP BY app ORDER BY app`)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: file totals: %w", db.path, err)
	}
	defer rows.Close()
	var out []FileTotal
	for rows.Next() {
		var t FileTotal
		if err := rows.Scan(&t.App, &t.Files, &t.Bytes, &t.Unhashed); err != nil {
			return nil, fmt.Errorf("catalog %s: file totals: %w", db.path, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: file totals: %w", db.path, err)
	}
	return out, nil
}
