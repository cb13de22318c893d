package catalog

import (
	"context"
	"database/sql"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/softxs/v2backup/tiers"
)

var updateV1 = flag.Bool("update-v1", false, "regenerate testdata/catalog-v1.db with migration 1 (only when migration 1 itself changes, i.e. never after a release)")

const v1File = "testdata/catalog-v1.db"

func TestSchemaVersionConstant(t *testing.T) {
	if SchemaVersion != len(migrations) {
		t.Fatalf("SchemaVersion %d, but %d migrations", SchemaVersion, len(migrations))
	}
}

// TestGenerateV1 writes the frozen version-1 database. Run it with
// -update-v1 and commit the file; other runs only check it exists.
func TestGenerateV1(t *testing.T) {
	if !*updateV1 {
		if _, err := os.Stat(v1File); err != nil {
			t.Fatalf("frozen database missing: %v (generate it with -run TestGenerateV1 -update-v1)", err)
		}
		return
	}
	tmp := filepath.Join(t.TempDir(), "v1.db")
	db, err := Open(tmp, func(o *options) { o.schemaVersion = 1 })
	if err != nil {
		t.Fatal(err)
	}
	err = db.write(context.Background(), func(tx *sql.Tx) error {
		for _, q := range []string{
			`INSERT INTO applications VALUES ('hydro', 'zg-3.softxs.ch', 'web', 'demo.softxs.ch/hydro', 'rails', 'Hydro demo', 'production', 1764306000000000000)`,
			`INSERT INTO runs (app, kind, start_ns, end_ns, status, files, bytes, error) VALUES ('hydro', 'backup', 1764306000000000000, 1764306060000000000, 'ok', 3, 3000, '')`,
			`INSERT INTO runs (app, kind, start_ns, end_ns, status, files, bytes, error) VALUES ('hydro', 'backup', 1764392400000000000, 1764392460000000000, 'failed', 0, 0, 'mysqldump: access denied')`,
			`INSERT INTO files (path, app, size, mtime_ns, sha256, hashed_ns, updated_ns) VALUES ('web/demo.softxs.ch/hydro/db/hydro.sql.gz', 'hydro', 1000, 1764306000000000000, '` + strings.Repeat("ab", 32) + `', 1764306001000000000, 1764306001000000000)`,
			`INSERT INTO files (path, app, size, mtime_ns, sha256, hashed_ns, updated_ns) VALUES ('web/demo.softxs.ch/hydro/var/a.pdf', 'hydro', 2000, 1764306000000000000, NULL, NULL, 1764306001000000000)`,
			`INSERT INTO paths (id, path) VALUES (1, 'web/demo.softxs.ch/hydro/db/hydro.sql.gz'), (2, 'web/demo.softxs.ch/hydro/var/a.pdf')`,
			`INSERT INTO snapshots (id, tier, server, name, created_ns, state) VALUES (1, 'local', 'zg-3.softxs.ch', '2026-11-28T050000', 1764306000000000000, 'complete')`,
			`INSERT INTO manifest VALUES (1, 1, 1000, 1764306000000000000, x'` + strings.Repeat("ab", 32) + `'), (1, 2, 2000, 1764306000000000000, NULL)`,
		} {
			if _, err := tx.Exec(q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp + "-wal"); err == nil {
		t.Fatal("WAL left behind: the frozen file would be incomplete")
	}
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v1File, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", v1File, len(raw))
}

func TestUpgradeFromV1(t *testing.T) {
	raw, err := os.ReadFile(v1File)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "catalog.db")
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if v, err := db.UserVersion(ctx); err != nil || v != SchemaVersion {
		t.Fatalf("version %d, %v; want %d", v, err, SchemaVersion)
	}
	apps, err := db.Applications(ctx)
	if err != nil || len(apps) != 1 || apps[0].Relpath != "demo.softxs.ch/hydro" || apps[0].Type != "rails" {
		t.Fatalf("applications %+v, %v", apps, err)
	}
	last, ok, err := db.LastSuccess(ctx, "hydro", "backup")
	if err != nil || !ok || last.Files != 3 || last.Bytes != 3000 {
		t.Fatalf("last success %+v %v %v", last, ok, err)
	}
	runs, err := db.Runs(ctx, "hydro", "backup", 0)
	if err != nil || len(runs) != 2 || runs[0].Status != RunFailed || runs[0].Error != "mysqldump: access denied" {
		t.Fatalf("runs %+v, %v", runs, err)
	}
	f, ok, err := db.LookupFile(ctx, "web/demo.softxs.ch/hydro/db/hydro.sql.gz")
	if err != nil || !ok || f.SHA256 != strings.Repeat("ab", 32) || f.Size != 1000 {
		t.Fatalf("file %+v %v %v", f, ok, err)
	}
	// Migration 2 computed the snapshot totals from the manifest.
	s, ok, err := db.LatestSnapshot(ctx, tiers.Local, "zg-3.softxs.ch")
	if err != nil || !ok || s.Name != "2026-11-28T050000" || s.Files != 2 || s.Bytes != 3000 {
		t.Fatalf("snapshot %+v %v %v", s, ok, err)
	}
	var entries []ManifestEntry
	if err := db.WalkManifest(ctx, s.ID, "", func(e ManifestEntry) error { entries = append(entries, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].SHA256 != strings.Repeat("ab", 32) || entries[1].SHA256 != "" {
		t.Fatalf("manifest %+v", entries)
	}
	// And the new tables work.
	if _, err := db.SeenMedium(ctx, "usb-1", "1234-abcd", t0); err != nil {
		t.Fatal(err)
	}
	// The frozen file itself is untouched.
	again, err := os.ReadFile(v1File)
	if err != nil || string(again) != string(raw) {
		t.Fatal("testdata was modified")
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "catalog.db")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.withWriteConn(context.Background(), func(c *sql.Conn) error {
		_, err := c.ExecContext(context.Background(), "PRAGMA user_version = 99")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(p)
	wantErr(t, err, p, "schema version 99", "newer", "upgrade v2backup")
}

func TestFailedMigrationRollsBack(t *testing.T) {
	p := filepath.Join(t.TempDir(), "catalog.db")
	db, err := Open(p, func(o *options) { o.schemaVersion = 1 })
	if err != nil {
		t.Fatal(err)
	}
	// A table migration 2 will try to create: migration 2 must fail whole.
	if err := db.write(context.Background(), func(tx *sql.Tx) error {
		_, err := tx.Exec("CREATE TABLE pulls (x)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(p)
	wantErr(t, err, p, "migration to schema version 2", "pulls")
	db, err = Open(p, func(o *options) { o.schemaVersion = 1 })
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := db.UserVersion(context.Background())
	if err != nil || v != 1 {
		t.Fatalf("version after failed migration %d, %v; want 1", v, err)
	}
	var n int
	if err := db.r.QueryRow(`SELECT count(*) FROM pragma_table_info('snapshots') WHERE name = 'files'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("half-applied migration: snapshots.files exists (%d, %v)", n, err)
	}
}

// Two processes (here: two DBs) creating the same catalog at once.
func TestConcurrentCreate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "catalog.db")
	var wg sync.WaitGroup
	dbs := make([]*DB, 4)
	errs := make([]error, 4)
	for i := range dbs {
		wg.Add(1)
		go func() { defer wg.Done(); dbs[i], errs[i] = Open(p) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("open %d: %v", i, err)
			continue
		}
		dbs[i].Close()
	}
}

// Migration 1 is frozen: it must still produce exactly the schema of the
// committed version-1 file.
func TestMigrationOneFrozen(t *testing.T) {
	schemaOf := func(db *sql.DB) string {
		rows, err := db.Query(`SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			var typ, name, q string
			if err := rows.Scan(&typ, &name, &q); err != nil {
				t.Fatal(err)
			}
			b.WriteString(typ + " " + name + ": " + q + "\n")
		}
		return b.String()
	}
	raw, err := os.ReadFile(v1File)
	if err != nil {
		t.Fatal(err)
	}
	frozenPath := filepath.Join(t.TempDir(), "frozen.db")
	must(t, os.WriteFile(frozenPath, raw, 0o600))
	frozen, err := sql.Open("sqlite3", "file:"+frozenPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer frozen.Close()
	fresh, err := Open(filepath.Join(t.TempDir(), "v1.db"), func(o *options) { o.schemaVersion = 1 })
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if a, b := schemaOf(frozen), schemaOf(fresh.r); a != b {
		t.Fatalf("migration 1 changed since %s was made:\nfrozen:\n%s\nnow:\n%s", v1File, a, b)
	}
}
