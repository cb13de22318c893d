package catalog

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/tiers"
)

var updateV2 = flag.Bool("update-v2", false, "regenerate testdata/catalog-v2.db with migrations 1 and 2 (never after a release)")

const v2File = "testdata/catalog-v2.db"

// TestGenerateV2 writes the frozen version-2 database. Run it with
// -update-v2 and commit the file; other runs only check it exists.
func TestGenerateV2(t *testing.T) {
	if !*updateV2 {
		if _, err := os.Stat(v2File); err != nil {
			t.Fatalf("frozen database missing: %v (generate it with -run TestGenerateV2 -update-v2)", err)
		}
		return
	}
	tmp := filepath.Join(t.TempDir(), "v2.db")
	db, err := Open(tmp, func(o *options) { o.schemaVersion = 2 })
	if err != nil {
		t.Fatal(err)
	}
	err = db.write(context.Background(), func(tx *sql.Tx) error {
		for _, q := range []string{
			`INSERT INTO paths (id, path) VALUES (1, 'zg-3.softxs.ch/web/demo.softxs.ch/hydro/db/hydro.sql.gz')`,
			`INSERT INTO snapshots (id, tier, server, name, created_ns, state, files, bytes) VALUES (1, 'remote', 'bk.softxs.ch', '2026-11-28T060000', 1764309600000000000, 'complete', 1, 1000)`,
			`INSERT INTO manifest VALUES (1, 1, 1000, 1764306000000000000, x'` + strings.Repeat("ab", 32) + `')`,
			`INSERT INTO snapshot_apps VALUES (1, 'hydro', 'complete', 1, 1000)`,
			`INSERT INTO pulls (backup_server, host_server, snapshot, start_ns, end_ns, files, bytes, result, error) VALUES ('bk.softxs.ch', 'zg-3.softxs.ch', '2026-11-28T050000', 1764309000000000000, 1764309500000000000, 1, 1000, 'ok', '')`,
			`INSERT INTO media (id, label, fs_uuid, first_seen_ns, last_seen_ns) VALUES (1, 'usb-1', '1234-abcd', 1764309600000000000, 1764309600000000000)`,
			`INSERT INTO copies (media_id, server, tier, snapshot, at_ns, files, bytes, verified_ns) VALUES (1, 'bk.softxs.ch', 'remote', '2026-11-28T060000', 1764310000000000000, 1, 1000, 1764310100000000000)`,
		} {
			if _, err := tx.Exec(q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
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
	if _, err := os.Stat(tmp + "-wal"); err == nil {
		t.Fatal("WAL left behind: the frozen file would be incomplete")
	}
	raw, err := os.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v2File, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", v2File, len(raw))
}

// Migration 3 on a frozen version-2 catalog: old pulls keep the host's
// snapshot, now also as HostSnapshot, and the new queries work.
func TestUpgradeFromV2(t *testing.T) {
	raw, err := os.ReadFile(v2File)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "catalog.db")
	must(t, os.WriteFile(p, raw, 0o600))

	// A read-only open does not migrate, and still reads version 2.
	ro, err := OpenReadOnly(p)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := ro.UserVersion(context.Background()); err != nil || v != 2 {
		t.Fatalf("read-only version %d, %v", v, err)
	}
	ro.Close()

	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if v, err := db.UserVersion(ctx); err != nil || v != 3 {
		t.Fatalf("version %d, %v; want 3", v, err)
	}
	ps, err := db.PullsOfHostSnapshot(ctx, "zg-3.softxs.ch", "2026-11-28T050000")
	if err != nil || len(ps) != 1 || ps[0].HostSnapshot != "2026-11-28T050000" || ps[0].Snapshot != "2026-11-28T050000" || ps[0].RemoteSnapshot != "" {
		t.Fatalf("pulls %+v, %v", ps, err)
	}
	must(t, db.SetPullRemoteSnapshot(ctx, ps[0].ID, "2026-11-28T060000"))
	ps, err = db.Pulls(ctx, "zg-3.softxs.ch", 0)
	if err != nil || len(ps) != 1 || ps[0].RemoteSnapshot != "2026-11-28T060000" {
		t.Fatalf("pulls %+v, %v", ps, err)
	}
	cs, err := db.CopiesOfSnapshot(ctx, tiers.Remote, "bk.softxs.ch", "2026-11-28T060000")
	if err != nil || len(cs) != 1 || cs[0].Medium.Label != "usb-1" || cs[0].Copy.VerifiedAt.IsZero() {
		t.Fatalf("copies %+v, %v", cs, err)
	}
	d, err := db.AppDigest(ctx, 1, "zg-3.softxs.ch/web/demo.softxs.ch/hydro")
	if err != nil || d.Files != 1 || d.Bytes != 1000 || d.Unhashed != 0 {
		t.Fatalf("digest %+v, %v", d, err)
	}
	again, err := os.ReadFile(v2File)
	if err != nil || string(again) != string(raw) {
		t.Fatal("testdata was modified")
	}
}

// Migrations 1 and 2 are frozen: they must still produce exactly the schema
// of the committed version-2 file.
func TestMigrationTwoFrozen(t *testing.T) {
	raw, err := os.ReadFile(v2File)
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
	fresh, err := Open(filepath.Join(t.TempDir(), "v2.db"), func(o *options) { o.schemaVersion = 2 })
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if a, b := schemaText(t, frozen), schemaText(t, fresh.r); a != b {
		t.Fatalf("migrations 1-2 changed since %s was made:\nfrozen:\n%s\nnow:\n%s", v2File, a, b)
	}
}

func schemaText(t *testing.T, db *sql.DB) string {
	t.Helper()
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

// snapWith records a complete snapshot of tier on server holding files
// (path -> sha256) for app.
func snapWith(t *testing.T, db *DB, tier tiers.Tier, server, name, app string, files map[string]string) Snapshot {
	t.Helper()
	ctx := context.Background()
	b, err := db.BeginSnapshot(ctx, tier, server, name, t0)
	if err != nil {
		t.Fatal(err)
	}
	for p, sha := range files {
		if err := b.Add(ctx, ManifestEntry{Path: p, Size: 100, MTime: t0, SHA256: sha, App: app}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := b.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAppDigestAcrossTiers(t *testing.T) {
	ctx := context.Background()
	host, bk := openTest(t), openTest(t)
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	local := snapWith(t, host, tiers.Local, "zg-3.softxs.ch", "2026-11-28T050000", "hydro", map[string]string{
		"web/hydro/db/h.sql": a, "web/hydro/var/x": b, "web/hydro2/y": a, // hydro2 is a sibling, not hydro
	})
	remote := snapWith(t, bk, tiers.Remote, "bk.softxs.ch", "2026-11-28T060000", "hydro", map[string]string{
		"zg-3.softxs.ch/web/hydro/db/h.sql": a, "zg-3.softxs.ch/web/hydro/var/x": b,
	})
	changed := snapWith(t, bk, tiers.Remote, "bk.softxs.ch", "2026-11-29T060000", "hydro", map[string]string{
		"zg-3.softxs.ch/web/hydro/db/h.sql": b, "zg-3.softxs.ch/web/hydro/var/x": b,
	})
	dl, err := host.AppDigest(ctx, local.ID, "web/hydro")
	if err != nil {
		t.Fatal(err)
	}
	dr, err := bk.AppDigest(ctx, remote.ID, "zg-3.softxs.ch/web/hydro")
	if err != nil {
		t.Fatal(err)
	}
	if dl != dr || dl.Files != 2 || len(dl.SHA256) != 64 {
		t.Fatalf("host %+v, backup server %+v: want equal, 2 files", dl, dr)
	}
	dc, err := bk.AppDigest(ctx, changed.ID, "zg-3.softxs.ch/web/hydro")
	if err != nil || dc.SHA256 == dl.SHA256 {
		t.Fatalf("changed content, same digest %+v %v", dc, err)
	}
	// A renamed file changes the digest too.
	renamed := snapWith(t, host, tiers.Local, "zg-3.softxs.ch", "2026-11-29T050000", "hydro", map[string]string{
		"web/hydro/db/h2.sql": a, "web/hydro/var/x": b,
	})
	if d, err := host.AppDigest(ctx, renamed.ID, "web/hydro"); err != nil || d.SHA256 == dl.SHA256 {
		t.Fatalf("renamed file, same digest %+v %v", d, err)
	}
	if _, err := host.AppDigest(ctx, local.ID, ""); err == nil || !strings.Contains(err.Error(), "empty application prefix") {
		t.Fatalf("empty prefix: %v", err)
	}
	if _, err := host.AppDigest(ctx, local.ID, "../x"); err == nil || !strings.Contains(err.Error(), "../x") {
		t.Fatalf("bad prefix: %v", err)
	}
	if sa, ok, err := host.AppInSnapshot(ctx, local.ID, "hydro"); err != nil || !ok || sa.Files != 3 || sa.Snapshot.Name != local.Name {
		t.Fatalf("app in snapshot %+v %v %v", sa, ok, err)
	}
	if _, ok, err := host.AppInSnapshot(ctx, local.ID, "nope"); err != nil || ok {
		t.Fatalf("unknown app in snapshot: %v %v", ok, err)
	}
	if s, err := host.SnapshotByID(ctx, local.ID); err != nil || s.Name != local.Name {
		t.Fatalf("%+v %v", s, err)
	}
	if _, err := host.SnapshotByID(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing snapshot: %v", err)
	}
}

func TestPullsOfHostSnapshot(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	rec := func(host, snap string, res RunStatus, end time.Duration) int64 {
		id, err := db.RecordPull(ctx, Pull{BackupServer: "bk.softxs.ch", HostServer: host, HostSnapshot: snap,
			Start: t0, End: t0.Add(end), Result: res})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	rec("zg-3.softxs.ch", "2026-11-28T050000", RunOK, time.Minute)
	id2 := rec("zg-3.softxs.ch", "2026-11-28T050000", RunOK, 2*time.Minute)
	rec("zg-3.softxs.ch", "2026-11-28T050000", RunFailed, 3*time.Minute)
	rec("zg-3.softxs.ch", "2026-11-29T050000", RunOK, 24*time.Hour)
	rec("zg-4.softxs.ch", "2026-11-28T050000", RunOK, time.Minute)
	ps, err := db.PullsOfHostSnapshot(ctx, "zg-3.softxs.ch", "2026-11-28T050000")
	if err != nil || len(ps) != 2 || ps[0].ID != id2 || ps[0].Snapshot != "2026-11-28T050000" {
		t.Fatalf("%+v %v", ps, err)
	}
	ps, err = db.PullsOfHostSnapshot(ctx, "zg-3.softxs.ch", "")
	if err != nil || len(ps) != 3 || ps[0].HostSnapshot != "2026-11-29T050000" {
		t.Fatalf("%+v %v", ps, err)
	}
	err = db.SetPullRemoteSnapshot(ctx, id2, "not-a-name")
	wantErr(t, err, "not-a-name")
	err = db.SetPullRemoteSnapshot(ctx, 999, "2026-11-28T060000")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown pull: %v", err)
	}
	ro := readOnlyCopy(t, db)
	err = ro.SetPullRemoteSnapshot(ctx, id2, "2026-11-28T060000")
	if !errors.Is(err, ErrReadOnly) {
		t.Fatalf("read-only: %v", err)
	}
}

func readOnlyCopy(t *testing.T, db *DB) *DB {
	t.Helper()
	p := filepath.Join(t.TempDir(), "export.db")
	must(t, db.ExportTo(context.Background(), p))
	ro, err := OpenReadOnly(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	return ro
}

// The digest is computed on demand: this measures it on a 100k-file
// application (go test -run XXX -bench AppDigest ./catalog).
func BenchmarkAppDigest100k(b *testing.B) {
	ctx := context.Background()
	db, err := Open(filepath.Join(b.TempDir(), "c.db"), WithLogger(slogDiscard()))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	sb, err := db.BeginSnapshot(ctx, tiers.Local, "zg-3.softxs.ch", "2026-11-28T050000", t0)
	if err != nil {
		b.Fatal(err)
	}
	sha := strings.Repeat("c", 64)
	for i := range 100_000 {
		if err := sb.Add(ctx, ManifestEntry{Path: fmt.Sprintf("web/hydro/var/%03d/f%06d", i%1000, i), Size: 1, MTime: t0, SHA256: sha, App: "hydro"}); err != nil {
			b.Fatal(err)
		}
	}
	s, err := sb.Commit(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		d, err := db.AppDigest(ctx, s.ID, "web/hydro")
		if err != nil || d.Files != 100_000 {
			b.Fatal(d, err)
		}
	}
}

func TestStoreAppDigests(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	a := strings.Repeat("a", 64)
	s := snapWith(t, db, tiers.Local, "zg-3.softxs.ch", "2026-11-28T050000", "hydro", map[string]string{"web/hydro/f": a})
	if _, ok, err := db.StoredAppDigest(ctx, s.ID, "hydro"); err != nil || ok {
		t.Fatalf("digest before storing: %v %v", ok, err)
	}
	must(t, db.StoreAppDigests(ctx, s.ID, map[string]string{"hydro": "web/hydro", "absent": "web/absent"}))
	want, err := db.AppDigest(ctx, s.ID, "web/hydro")
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := db.StoredAppDigest(ctx, s.ID, "hydro")
	if err != nil || !ok || got != want.SHA256 {
		t.Fatalf("stored %q %v %v, want %q", got, ok, err, want.SHA256)
	}
	err = db.StoreAppDigests(ctx, s.ID, map[string]string{"hydro": "/abs"})
	wantErr(t, err, "/abs")
	// A version-2 catalog has no stored digests, and says so without error.
	raw, err := os.ReadFile(v2File)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "v2.db")
	must(t, os.WriteFile(p, raw, 0o600))
	ro, err := OpenReadOnly(p)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, ok, err := ro.StoredAppDigest(ctx, 1, "hydro"); err != nil || ok {
		t.Fatalf("v2 stored digest: %v %v", ok, err)
	}
}
