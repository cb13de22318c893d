package copies

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

const testInventory = `
[site]
partition = "/v01/backup"

[[server]]
name = "zg-3.softxs.ch"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"

[[app]]
name = "hydro"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "demo.softxs.ch/hydro"
type = "rails"
`

const (
	host   = "zg-3.softxs.ch"
	backup = "bk.softxs.ch"
	night1 = "2026-11-28T050000"
	night2 = "2026-11-29T050000"
	remote = "2026-11-28T060000"
	rem2   = "2026-11-29T060000"
)

var t0 = time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)

func openDB(t *testing.T) *catalog.DB {
	t.Helper()
	db, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// snap records a complete snapshot with hydro's files below prefix,
// storing its digest if store is set.
func snap(t *testing.T, db *catalog.DB, tier tiers.Tier, server, name, prefix string, files map[string]string, store bool) catalog.Snapshot {
	t.Helper()
	ctx := context.Background()
	b, err := db.BeginSnapshot(ctx, tier, server, name, t0)
	if err != nil {
		t.Fatal(err)
	}
	for p, c := range files {
		if err := b.Add(ctx, catalog.ManifestEntry{Path: prefix + "/" + p, Size: int64(len(c)), MTime: t0, SHA256: strings.Repeat(c[:1], 64), App: "hydro"}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := b.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if store {
		if err := db.StoreAppDigests(ctx, s.ID, map[string]string{"hydro": prefix}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func drive(t *testing.T, db *catalog.DB, label, uuid string, tier tiers.Tier, server, name string, verified time.Time) {
	t.Helper()
	ctx := context.Background()
	m, err := db.SeenMedium(ctx, label, uuid, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.RecordCopy(ctx, catalog.Copy{MediaID: m.ID, Server: server, Tier: tier, Snapshot: name, At: t0.Add(2 * time.Hour), Files: 2, Bytes: 2, VerifiedAt: verified}); err != nil {
		t.Fatal(err)
	}
}

func setup(t *testing.T) (*inventory.Inventory, *catalog.DB, *catalog.DB) {
	t.Helper()
	inv, err := inventory.Parse("/etc/v2backup/inventory.toml", []byte(testInventory))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The host: two nights, night 1 also on its drive (never verified).
	hostDB := openDB(t)
	day1 := map[string]string{"db/h.sql": "a", "var/x": "b"}
	day2 := map[string]string{"db/h.sql": "c", "var/x": "b"}
	snap(t, hostDB, tiers.Local, host, night1, "web/demo.softxs.ch/hydro", day1, true)
	snap(t, hostDB, tiers.Local, host, night2, "web/demo.softxs.ch/hydro", day2, false)
	drive(t, hostDB, "usb-host", "1111-aaaa", tiers.Local, host, night1, time.Time{})
	// The backup server: night 1 pulled as it was; night 2 pulled, but its
	// copy differs (as if a file rotted): the digests must say so.
	bk := openDB(t)
	snap(t, bk, tiers.Remote, backup, remote, host+"/web/demo.softxs.ch/hydro", day1, false)
	snap(t, bk, tiers.Remote, backup, rem2, host+"/web/demo.softxs.ch/hydro", map[string]string{"db/h.sql": "c", "var/x": "d"}, true)
	for _, p := range []struct{ hostSnap, remSnap string }{{night1, remote}, {night2, rem2}} {
		at, _ := tiers.ParseSnapshotName(p.remSnap, time.UTC)
		id, err := bk.RecordPull(ctx, catalog.Pull{BackupServer: backup, HostServer: host, HostSnapshot: p.hostSnap,
			Start: at.Add(-time.Minute), End: at, Files: 2, Bytes: 2, Result: catalog.RunOK})
		if err != nil {
			t.Fatal(err)
		}
		if err := bk.SetPullRemoteSnapshot(ctx, id, p.remSnap); err != nil {
			t.Fatal(err)
		}
	}
	// jobs/offsite records a backup server's drive copy of a host under
	// the host and the host's snapshot.
	drive(t, bk, "usb-bk", "2222-bbbb", tiers.Remote, host, night1, t0.Add(3*time.Hour))
	return inv, hostDB, bk
}

// shipped is hostDB as a backup server holds it: exported, read-only.
func shipped(t *testing.T, db *catalog.DB) *catalog.DB {
	t.Helper()
	p := filepath.Join(t.TempDir(), "CATALOG.db")
	if err := db.ExportTo(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	ro, err := catalog.OpenReadOnly(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	return ro
}

func TestFindOnABackupServer(t *testing.T) {
	ctx := context.Background()
	inv, hostDB, bk := setup(t)
	nights, err := Find(ctx, Options{Inventory: inv, App: "hydro", HostDB: shipped(t, hostDB), Own: bk, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	if len(nights) != 2 || nights[0].Snapshot != night2 || nights[1].Snapshot != night1 || nights[1].Day != "2026-11-28" {
		t.Fatalf("nights %+v", nights)
	}
	n1 := nights[1]
	if len(n1.Copies) != 4 || n1.Mismatch {
		t.Fatalf("night 1: %+v", n1)
	}
	want := []struct {
		kind  Kind
		where string
		snap  string
	}{{Local, host, night1}, {Remote, backup, remote}, {Drive, "usb-host", night1}, {Drive, "usb-bk", night1}}
	for i, w := range want {
		c := n1.Copies[i]
		if c.Kind != w.kind || c.Where != w.where || c.Snapshot != w.snap || c.Files != 2 || c.Digest != n1.Copies[0].Digest || len(c.Digest) != 64 {
			t.Errorf("night 1 copy %d = %+v, want %v %s %s", i, c, w.kind, w.where, w.snap)
		}
	}
	if !n1.Copies[0].VerifiedAt.IsZero() || !n1.Copies[2].VerifiedAt.IsZero() {
		t.Errorf("host snapshot and host drive were never verified: %+v", n1.Copies)
	}
	if rt, _ := tiers.ParseSnapshotName(remote, time.UTC); !n1.Copies[1].VerifiedAt.Equal(rt) || !n1.Copies[3].VerifiedAt.Equal(t0.Add(3*time.Hour)) {
		t.Errorf("verification dates: %+v", n1.Copies)
	}
	if n1.Copies[3].DriveUUID != "2222-bbbb" {
		t.Errorf("drive uuid: %+v", n1.Copies[3])
	}
	n2 := nights[0]
	if len(n2.Copies) != 2 || !n2.Mismatch || n2.Copies[0].Digest == n2.Copies[1].Digest {
		t.Fatalf("night 2 should show a mismatch: %+v", n2)
	}

	// --at as a day and as a snapshot name.
	for _, at := range []string{"2026-11-28", night1} {
		ns, err := Find(ctx, Options{Inventory: inv, App: "hydro", At: at, HostDB: shipped(t, hostDB), Own: bk, Location: time.UTC})
		if err != nil || len(ns) != 1 || ns[0].Snapshot != night1 || len(ns[0].Copies) != 4 {
			t.Fatalf("--at %s: %+v %v", at, ns, err)
		}
	}
	// A remote snapshot pruned by retention is no copy any more.
	rs, err := bk.SnapshotByName(ctx, tiers.Remote, backup, rem2)
	if err != nil {
		t.Fatal(err)
	}
	if err := bk.DeleteSnapshot(ctx, rs.ID); err != nil {
		t.Fatal(err)
	}
	ns, err := Find(ctx, Options{Inventory: inv, App: "hydro", At: night2, HostDB: hostDB, Own: bk, Location: time.UTC})
	if err != nil || len(ns) != 1 || len(ns[0].Copies) != 1 || ns[0].Copies[0].Kind != Local || ns[0].Mismatch {
		t.Fatalf("night 2 after pruning its remote snapshot: %+v %v", ns, err)
	}
	// A backup server without the host's catalog still lists its own copies.
	ns, err = Find(ctx, Options{Inventory: inv, App: "hydro", Own: bk, Location: time.UTC})
	if err != nil || len(ns) != 1 || len(ns[0].Copies) != 2 || ns[0].Copies[0].Kind != Remote {
		t.Fatalf("without a host catalog: %+v %v", ns, err)
	}
}

func TestFindOnTheHost(t *testing.T) {
	ctx := context.Background()
	inv, hostDB, _ := setup(t)
	ns, err := Find(ctx, Options{Inventory: inv, App: "hydro", HostDB: hostDB, Own: hostDB, Location: time.UTC})
	if err != nil || len(ns) != 2 || len(ns[1].Copies) != 2 || ns[1].Copies[1].Kind != Drive || len(ns[0].Copies) != 1 {
		t.Fatalf("%+v %v", ns, err)
	}
	// The stored digest (night 1) and a computed one agree.
	d, err := hostDB.AppDigest(ctx, 1, "web/demo.softxs.ch/hydro")
	if err != nil || d.SHA256 != ns[1].Copies[0].Digest {
		t.Fatalf("computed %+v %v, listed %s", d, err, ns[1].Copies[0].Digest)
	}
}

func TestFindErrors(t *testing.T) {
	ctx := context.Background()
	inv, hostDB, bk := setup(t)
	_, err := Find(ctx, Options{Inventory: inv, App: "nope", HostDB: hostDB})
	if !errors.Is(err, ErrUnknownApp) || !strings.Contains(err.Error(), "/etc/v2backup/inventory.toml") || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown app: %v", err)
	}
	for _, at := range []string{"28.11.2026", "2026-11-28T05:00:00", "2026-13-01"} {
		_, err = Find(ctx, Options{Inventory: inv, App: "hydro", At: at, HostDB: hostDB})
		if !errors.Is(err, ErrBadAt) || !strings.Contains(err.Error(), at) || !strings.Contains(err.Error(), "must be a day") {
			t.Fatalf("--at %s: %v", at, err)
		}
	}
	_, err = Find(ctx, Options{Inventory: inv, App: "hydro", At: "2026-11-27", HostDB: hostDB, Own: bk, Location: time.UTC})
	if !errors.Is(err, ErrNoCopy) || !strings.Contains(err.Error(), "2026-11-27") {
		t.Fatalf("no copy: %v", err)
	}
	// No catalog at all and no --at: nothing, without error.
	if ns, err := Find(ctx, Options{Inventory: inv, App: "hydro"}); err != nil || len(ns) != 0 {
		t.Fatalf("nothing known: %+v %v", ns, err)
	}
}
