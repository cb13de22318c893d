package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Application is one row of the inventory as the catalog keeps it.
type Application struct {
	Name        string // unique, e.g. "hydro"
	Server      string // FQDN of the host, e.g. "zg-3.softxs.ch"
	VM          string // e.g. "web", or tiers.NoVM
	Relpath     string // e.g. "demo.softxs.ch/hydro"
	Type        string // "rails", "drawmgt", "git", ...
	Description string
	Status      string // the inventory's status column, free text
	UpdatedAt   time.Time
}

// UpsertApplications inserts or replaces applications by name, in one
// transaction. A zero UpdatedAt is set to now.
func (db *DB) UpsertApplications(ctx context.Context, apps []Application) error {
	for i, a := range apps {
		for _, f := range []struct{ name, v string }{{"name", a.Name}, {"server", a.Server}, {"vm", a.VM}, {"relpath", a.Relpath}, {"type", a.Type}} {
			if f.v == "" {
				return fmt.Errorf("catalog: application %d (%q): empty %s", i, a.Name, f.name)
			}
		}
	}
	now := db.opts.now()
	return db.write(ctx, func(tx *sql.Tx) error {
		st, err := tx.Prepare(`INSERT INTO applications (name, server, vm, relpath, type, description, status, updated_ns)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET server = excluded.server, vm = excluded.vm, relpath = excluded.relpath,
				type = excluded.type, description = excluded.description, status = excluded.status, updated_ns = excluded.updated_ns`)
		if err != nil {
			return fmt.Errorf("catalog %s: %w", db.path, err)
		}
		defer st.Close()
		for _, a := range apps {
			at := a.UpdatedAt
			if at.IsZero() {
				at = now
			}
			if _, err := st.Exec(a.Name, a.Server, a.VM, a.Relpath, a.Type, a.Description, a.Status, at.UnixNano()); err != nil {
				return fmt.Errorf("catalog %s: application %q: %w", db.path, a.Name, err)
			}
		}
		return nil
	})
}

// Applications lists the applications by name.
func (db *DB) Applications(ctx context.Context) ([]Application, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT name, server, vm, relpath, type, description, status, updated_ns FROM applications ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: applications: %w", db.path, err)
	}
	defer rows.Close()
	var out []Application
	for rows.Next() {
		var a Application
		var ns int64
		if err := rows.Scan(&a.Name, &a.Server, &a.VM, &a.Relpath, &a.Type, &a.Description, &a.Status, &ns); err != nil {
			return nil, fmt.Errorf("catalog %s: applications: %w", db.path, err)
		}
		a.UpdatedAt = timeOf(ns)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: applications: %w", db.path, err)
	}
	return out, nil
}

// RunStatus is the state of a job run.
type RunStatus string

// Run states.
const (
	RunRunning RunStatus = "running"
	RunOK      RunStatus = "ok"
	RunFailed  RunStatus = "failed"
	// RunPartial is a run that finished but skipped some of its work.
	RunPartial RunStatus = "partial"
)

// Run is one execution of a job for an application.
type Run struct {
	ID     int64
	App    string
	Kind   string // "backup", "restore", "pull", ...
	Start  time.Time
	End    time.Time // zero while running
	Status RunStatus
	Files  int64
	Bytes  int64
	Error  string
}

// StartRun records that a job of kind started for app at the given time and
// returns the run's id for FinishRun.
func (db *DB) StartRun(ctx context.Context, app, kind string, at time.Time) (int64, error) {
	if kind == "" {
		return 0, fmt.Errorf("catalog: run of %q: empty kind", app)
	}
	if at.IsZero() {
		return 0, fmt.Errorf("catalog: %s run of %q: zero start time", kind, app)
	}
	var id int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO runs (app, kind, start_ns, status) VALUES (?, ?, ?, 'running')`, app, kind, at.UnixNano())
		if err != nil {
			return fmt.Errorf("catalog %s: start %s run of %q: %w", db.path, kind, app, err)
		}
		id, err = res.LastInsertId()
		return err
	})
	return id, err
}

// FinishRun records the end of run id. status must be ok, failed or partial,
// and the run must still be running.
func (db *DB) FinishRun(ctx context.Context, id int64, end time.Time, status RunStatus, files, bytes int64, errMsg string) error {
	switch status {
	case RunOK, RunFailed, RunPartial:
	default:
		return fmt.Errorf("catalog: finish run %d: status %q: must be ok, failed or partial", id, status)
	}
	if end.IsZero() {
		return fmt.Errorf("catalog: finish run %d: zero end time", id)
	}
	if files < 0 || bytes < 0 {
		return fmt.Errorf("catalog: finish run %d: negative totals (files %d, bytes %d)", id, files, bytes)
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE runs SET end_ns = ?, status = ?, files = ?, bytes = ?, error = ? WHERE id = ? AND status = 'running'`,
			end.UnixNano(), string(status), files, bytes, errMsg, id)
		if err != nil {
			return fmt.Errorf("catalog %s: finish run %d: %w", db.path, id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var st string
			err := tx.QueryRow(`SELECT status FROM runs WHERE id = ?`, id).Scan(&st)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("catalog %s: finish run %d: %w", db.path, id, ErrNotFound)
			}
			return fmt.Errorf("catalog %s: finish run %d: already finished (%s)", db.path, id, st)
		}
		return nil
	})
}

const runCols = `id, app, kind, start_ns, end_ns, status, files, bytes, error`

func scanRun(sc interface{ Scan(...any) error }) (Run, error) {
	var r Run
	var start int64
	var end sql.NullInt64
	var st string
	err := sc.Scan(&r.ID, &r.App, &r.Kind, &start, &end, &st, &r.Files, &r.Bytes, &r.Error)
	r.Start, r.End, r.Status = timeOf(start), timeOfNull(end), RunStatus(st)
	return r, err
}

// GetRun returns run id.
func (db *DB) GetRun(ctx context.Context, id int64) (Run, error) {
	r, err := scanRun(db.r.QueryRowContext(ctx, `SELECT `+runCols+` FROM runs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Run{}, fmt.Errorf("catalog %s: run %d: %w", db.path, id, ErrNotFound)
	}
	if err != nil {
		return Run{}, fmt.Errorf("catalog %s: run %d: %w", db.path, id, err)
	}
	return r, nil
}

// LastSuccess returns the most recent successful (ok) run of kind for app;
// ok is false if there is none.
func (db *DB) LastSuccess(ctx context.Context, app, kind string) (run Run, ok bool, err error) {
	r, err := scanRun(db.r.QueryRowContext(ctx, `SELECT `+runCols+` FROM runs
		WHERE app = ? AND kind = ? AND status = 'ok' ORDER BY start_ns DESC, id DESC LIMIT 1`, app, kind))
	if errors.Is(err, sql.ErrNoRows) {
		return Run{}, false, nil
	}
	if err != nil {
		return Run{}, false, fmt.Errorf("catalog %s: last success of %s %q: %w", db.path, kind, app, err)
	}
	return r, true, nil
}

// LastSuccesses returns, for every app with at least one successful run of
// kind, its most recent one, by app name.
func (db *DB) LastSuccesses(ctx context.Context, kind string) (map[string]Run, error) {
	// SQLite's bare-column rule: with max(), the other columns come from the
	// row holding the maximum.
	rows, err := db.r.QueryContext(ctx, `SELECT id, app, kind, max(start_ns), end_ns, status, files, bytes, error
		FROM runs WHERE kind = ? AND status = 'ok' GROUP BY app`, kind)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: last successes of %s: %w", db.path, kind, err)
	}
	defer rows.Close()
	out := map[string]Run{}
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("catalog %s: last successes of %s: %w", db.path, kind, err)
		}
		out[r.App] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: last successes of %s: %w", db.path, kind, err)
	}
	return out, nil
}

// Runs lists the most recent runs, newest first; app and kind filter when
// not empty; limit <= 0 means no limit.
func (db *DB) Runs(ctx context.Context, app, kind string, limit int) ([]Run, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := db.r.QueryContext(ctx, `SELECT `+runCols+` FROM runs
		WHERE (?1 = '' OR app = ?1) AND (?2 = '' OR kind = ?2) ORDER BY start_ns DESC, id DESC LIMIT ?3`, app, kind, limit)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: runs: %w", db.path, err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("catalog %s: runs: %w", db.path, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog %s: runs: %w", db.path, err)
	}
	return out, nil
}
