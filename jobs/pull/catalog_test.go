package pull

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/pull/sums"
	"github.com/softxs/v2backup/jobs/sshtest"
	"github.com/softxs/v2backup/tiers"
)

// plainView writes a host's view as a plain directory (rsync reads it like
// the FUSE view): files, SHA256SUMS, and SNAPSHOT.json with the catalog
// (if cat is not nil) and its hash (sha "" = the real one).
func plainView(t *testing.T, dir, name string, files map[string]string, cat []byte, sha string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	writeTree(t, dir, files)
	var ents []sums.Entry
	var bytes int64
	for p, c := range files {
		ents = append(ents, sums.Entry{Path: p, SHA256: sumOf(c)})
		bytes += int64(len(c))
	}
	if err := sums.WriteFile(dir, ents); err != nil {
		t.Fatal(err)
	}
	d := sums.Description{Server: string(hostA), Snapshot: name, Time: "2026-11-28T05:00:00Z", Files: int64(len(ents)), Bytes: bytes, Manifest: sums.SumsName}
	if cat != nil {
		if err := os.WriteFile(filepath.Join(dir, tiers.ShippedCatalogName), cat, 0o644); err != nil {
			t.Fatal(err)
		}
		if sha == "" {
			h := sha256.Sum256(cat)
			sha = hex.EncodeToString(h[:])
		}
		d.Catalog, d.CatalogSHA256 = tiers.ShippedCatalogName, sha
	}
	if err := sums.WriteDescription(dir, d); err != nil {
		t.Fatal(err)
	}
}

// hostCatalog is a real catalog export of a host that took snapshot name.
func hostCatalog(t *testing.T, name string) []byte {
	t.Helper()
	ctx := context.Background()
	db := openDB(t)
	b, err := db.BeginSnapshot(ctx, tiers.Local, string(hostA), name, time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "export.db")
	if err := db.ExportTo(ctx, p); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestPullShipsTheHostCatalog(t *testing.T) {
	ctx := context.Background()
	s := sshtest.StartT(t)
	db := openDB(t)
	o := options(t, s, db)
	view := filepath.Join(t.TempDir(), "view")
	o.Hosts = []Host{{Server: hostA, SSH: s.Target(), Port: s.Port, View: view, Apps: apps}}

	cat1 := hostCatalog(t, "2026-11-28T050000")
	plainView(t, view, "2026-11-28T050000", day1, cat1, "")
	rep := mustRun(t, o)
	got, err := os.ReadFile(o.Partition.HostCatalog(hostA))
	if err != nil || string(got) != string(cat1) {
		t.Fatalf("host catalog after the pull: %d bytes, %v; want the shipped %d bytes", len(got), err, len(cat1))
	}
	ro, err := catalog.OpenReadOnly(o.Partition.HostCatalog(hostA))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok, err := ro.LatestSnapshot(ctx, tiers.Local, string(hostA)); err != nil || !ok || s.Name != "2026-11-28T050000" {
		t.Fatalf("shipped catalog's latest snapshot %+v %v %v", s, ok, err)
	}
	ro.Close()
	// The pull says which host snapshot it copied and which remote-tier
	// snapshot holds it; the remote snapshot has each app's digest.
	ps, err := db.PullsOfHostSnapshot(ctx, string(hostA), "2026-11-28T050000")
	if err != nil || len(ps) != 1 || ps[0].RemoteSnapshot != rep.Snapshot || rep.Snapshot == "" {
		t.Fatalf("pulls %+v %v; remote snapshot %q", ps, err, rep.Snapshot)
	}
	rs, err := db.SnapshotByName(ctx, tiers.Remote, string(backup), rep.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	sha, ok, err := db.StoredAppDigest(ctx, rs.ID, "hydro")
	want, derr := db.AppDigest(ctx, rs.ID, string(hostA)+"/web/demo.softxs.ch/hydro")
	if err != nil || derr != nil || !ok || sha != want.SHA256 || want.Files != 3 {
		t.Fatalf("stored digest %q %v %v; computed %+v %v", sha, ok, err, want, derr)
	}

	// Day 2's catalog does not match SNAPSHOT.json: refused, last good
	// copy (and catalog) kept.
	o.Now = clock(time.Date(2026, 11, 29, 6, 0, 0, 0, time.Local))
	plainView(t, view, "2026-11-29T050000", day1, hostCatalog(t, "2026-11-29T050000"), strings.Repeat("0", 64))
	rep, err = Run(ctx, o)
	if err == nil {
		t.Fatal("a pull whose catalog does not match SNAPSHOT.json succeeded")
	}
	if r := rep.Results[0]; r.Step != StepVerify || !strings.Contains(r.Err.Error(), "host catalog") || !strings.Contains(r.Err.Error(), strings.Repeat("0", 64)) {
		t.Fatalf("result: step %s, %v", r.Step, r.Err)
	}
	if got, err := os.ReadFile(o.Partition.HostCatalog(hostA)); err != nil || string(got) != string(cat1) {
		t.Fatalf("last good host catalog replaced: %v", err)
	}

	// SNAPSHOT.json lists a catalog the view does not have.
	o.Now = clock(time.Date(2026, 11, 30, 6, 0, 0, 0, time.Local))
	plainView(t, view, "2026-11-30T050000", day1, []byte("x"), "")
	if err := os.Remove(filepath.Join(view, tiers.ShippedCatalogName)); err != nil {
		t.Fatal(err)
	}
	rep, _ = Run(ctx, o)
	if r := rep.Results[0]; r.Step != StepVerify || !strings.Contains(r.Err.Error(), "host catalog listed in SNAPSHOT.json") {
		t.Fatalf("missing catalog: step %s, %v", r.Step, r.Err)
	}

	// A CATALOG.db that SNAPSHOT.json does not list is an unlisted file,
	// refused like any other.
	o.Now = clock(time.Date(2026, 12, 1, 6, 0, 0, 0, time.Local))
	plainView(t, view, "2026-12-01T050000", day1, nil, "")
	if err := os.WriteFile(filepath.Join(view, tiers.ShippedCatalogName), cat1, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, _ = Run(ctx, o)
	if r := rep.Results[0]; r.OK() || r.Step != StepVerify || !strings.Contains(r.Err.Error(), tiers.ShippedCatalogName) {
		t.Fatalf("unlisted catalog: step %s, %v", r.Step, r.Err)
	}

	// Another catalog name in SNAPSHOT.json.
	d := sums.Description{Server: string(hostA), Snapshot: "x", Catalog: "other.db", CatalogSHA256: strings.Repeat("0", 64)}
	if err := verifyCatalog(view, d); err == nil || !strings.Contains(err.Error(), `"other.db"`) {
		t.Fatalf("other catalog name: %v", err)
	}
}
