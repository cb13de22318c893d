package jobs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/softxs/v2backup/jobs/dbtest"
	"github.com/softxs/v2backup/jobs/runfile"
	"github.com/softxs/v2backup/tiers/inventory"
)

func dumpPostgres(t *testing.T, p *dbtest.Postgres, db string) string {
	t.Helper()
	cmd := exec.Command("pg_dump", "--no-owner", "--no-privileges")
	cmd.Env = append(os.Environ(), "PGHOST="+p.SocketDir, "PGPORT="+strconv.Itoa(p.Port), "PGUSER=postgres",
		"PGPASSWORD="+dbtest.SuperPassword, "PGDATABASE="+db)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump %s: %v", db, err)
	}
	return normalizeDump(string(out))
}

// TestRailsPostgres backs up and restores a Rails app on PostgreSQL, then
// fails on a wrong password and on a server that is down.
func TestRailsPostgres(t *testing.T) {
	needServers(t)
	p := dbtest.PostgresT(t)
	ctx := context.Background()
	const pw = `pg:pa\ss "x`
	if _, err := p.SQL("postgres", `CREATE ROLE roadnotes LOGIN CREATEDB PASSWORD 'pg:pa\ss "x';
CREATE DATABASE roadnotes_production OWNER roadnotes;`); err != nil {
		t.Fatal(err)
	}
	if _, err := p.SQL("roadnotes_production", `SET ROLE roadnotes;
CREATE TABLE notes (id serial PRIMARY KEY, road text NOT NULL, note text, at timestamptz DEFAULT '2026-11-28 10:00+00');
INSERT INTO notes (road, note) VALUES ('A1', 'pothole km 12'), ('A3', 'Zürich–Chur ✓'), ('N2', NULL);
CREATE INDEX notes_road ON notes (road);
CREATE VIEW busy AS SELECT road, count(*) FROM notes GROUP BY road;`); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	yml := `production:
  adapter: postgresql
  encoding: unicode
  database: roadnotes_production
  username: roadnotes
  password: <%= ENV.fetch("ROADNOTES_DB_PASSWORD") { 'fallback' } %>
  host: ` + p.SocketDir + `
  port: ` + strconv.Itoa(p.Port) + `
`
	path, _ := railsApp(t, root, "roadnotes", yml)
	app := &inventory.App{Name: "roadnotes", Type: inventory.TypeRails, Path: path, Relpath: "pms.roadnotes.ch"}
	target := filepath.Join(root, "backup")
	env := getenvWith("ROADNOTES_DB_PASSWORD", pw)
	o := Options{Target: target, Now: clock(), Getenv: env}
	res, err := Backup(ctx, app, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := res.Dir
	if !strings.Contains(res.Record.Tools["pg_dump"], "PostgreSQL") {
		t.Errorf("tools %v", res.Record.Tools)
	}
	dest := filepath.Join(root, "restored")
	if _, err := Restore(ctx, app, RestoreOptions{Source: dir, Dest: dest, Database: "roadnotes_copy", Getenv: env}); err != nil {
		t.Fatal(err)
	}
	if want, got := dumpPostgres(t, p, "roadnotes_production"), dumpPostgres(t, p, "roadnotes_copy"); want != got || !strings.Contains(got, "pothole km 12") {
		t.Errorf("restored database differs:\n--- original\n%s\n--- restored\n%s", want, got)
	}
	// Loading again into the now non-empty database is refused.
	if _, err := Restore(ctx, app, RestoreOptions{Source: dir, Dest: filepath.Join(root, "r2"), Database: "roadnotes_copy", Getenv: env}); err == nil || !strings.Contains(err.Error(), "new or empty database") {
		t.Errorf("second load: %v", err)
	}

	before := tree(t, dir, under(runfile.Name))
	fails := func(o Options, cause string) {
		t.Helper()
		_, err := Backup(ctx, app, o)
		var je *Error
		if !errors.As(err, &je) || je.Step != "dump database roadnotes_production" || !strings.Contains(err.Error(), cause) {
			t.Fatalf("error %v: want step dump database roadnotes_production, cause %q", err, cause)
		}
		kept(t, before, tree(t, dir, under(runfile.Name)))
		noTemps(t, dir)
		if rec := readRun(t, dir); rec.Status != runfile.Failed {
			t.Errorf("run file %+v", rec)
		}
	}
	// Unset: the ERB default applies, and is wrong.
	fails(Options{Target: target, Now: o.Now, Getenv: getenvWith()}, `password authentication failed for user "roadnotes"`)
	p.Kill()
	fails(o, "No such file or directory")
}
