package report

import (
	"context"
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
[site.expect]
warn_age = "30h"

[[server]]
name = "zg-3.softxs.ch"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"

[[app]]
name = "hydro"
description = "Hydro <Rails>"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "demo.softxs.ch/hydro"
type = "rails"

[[app]]
name = "wiki"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "wiki.softxs.ch"
type = "moinmoin"

[[app]]
name = "mail"
server = "zg-3.softxs.ch"
relpath = "mail.softxs.ch"
type = "maildir"

[[app]]
name = "cvs"
server = "zg-3.softxs.ch"
relpath = "cvs.softxs.ch"
type = "cvs"
[app.expect]
warn_age = "2h"
`

var night0 = time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)

func setup(t *testing.T) (*inventory.Inventory, *catalog.DB) {
	t.Helper()
	inv, err := inventory.Parse("test.toml", []byte(testInventory))
	if err != nil {
		t.Fatal(err)
	}
	db, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return inv, db
}

func snapshot(t *testing.T, db *catalog.DB, at time.Time, ents []catalog.ManifestEntry, carried ...string) {
	t.Helper()
	ctx := context.Background()
	b, err := db.BeginSnapshot(ctx, tiers.Local, "zg-3.softxs.ch", tiers.SnapshotName(at), at)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Add(ctx, ents...); err != nil {
		t.Fatal(err)
	}
	for _, a := range carried {
		if a == "" {
			continue
		}
		if err := b.SetApp(a, catalog.AppCarried); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, db *catalog.DB, app string, start, end time.Time, st catalog.RunStatus, msg string) {
	t.Helper()
	ctx := context.Background()
	id, err := db.StartRun(ctx, app, "backup", start)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.FinishRun(ctx, id, end, st, 3, 300, msg); err != nil {
		t.Fatal(err)
	}
}

func TestBuild(t *testing.T) {
	ctx := context.Background()
	inv, db := setup(t)
	sha := strings.Repeat("a", 64)
	// Two nights: hydro by job runs, wiki by snapshots only (plain rsync),
	// wiki carried (not complete) on the second night.
	for i := range 2 {
		at := night0.AddDate(0, 0, i)
		snapshot(t, db, at, []catalog.ManifestEntry{
			{Path: "web/demo.softxs.ch/hydro/db.sql.gz", Size: int64(100 * (i + 1)), MTime: at, SHA256: sha, App: "hydro"},
			{Path: "web/wiki.softxs.ch/page", Size: 7, MTime: night0, SHA256: sha, App: "wiki"},
		}, map[int]string{1: "wiki"}[i])
	}
	run(t, db, "hydro", night0.Add(-2*time.Hour), night0.Add(-time.Hour), catalog.RunOK, "")
	run(t, db, "hydro", night0.Add(22*time.Hour), night0.Add(23*time.Hour), catalog.RunOK, "")
	// mail failed after its last (and only) success.
	run(t, db, "mail", night0.Add(-3*time.Hour), night0.Add(-2*time.Hour), catalog.RunOK, "")
	run(t, db, "mail", night0.Add(21*time.Hour), night0.Add(21*time.Hour+time.Minute), catalog.RunFailed, "rsync: disk full")
	if err := db.UpsertFiles(ctx, []catalog.FileRecord{
		{Path: "web/demo.softxs.ch/hydro/db.sql.gz", App: "hydro", Size: 200, MTime: night0},
		{Path: "web/demo.softxs.ch/hydro/x", App: "hydro", Size: 50, MTime: night0},
	}); err != nil {
		t.Fatal(err)
	}

	now := night0.Add(30 * time.Hour) // 2026-11-28 11:00
	r, err := Build(ctx, Options{Inventory: inv, Server: "zg-3.softxs.ch", DB: db, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	apps := map[string]App{}
	for _, a := range r.Apps {
		apps[a.Name] = a
	}
	if len(r.Apps) != 4 {
		t.Fatalf("%d apps, want 4", len(r.Apps))
	}
	h := apps["hydro"]
	// The second snapshot (05:00 on the 28th) is after the run's end (04:00).
	if want := night0.AddDate(0, 0, 1); !h.LastSuccess.Equal(want) || h.State != OK || h.Age != 6*time.Hour || h.AgeSeconds != 6*3600 {
		t.Errorf("hydro: last success %v state %s age %v (%d s), want %v ok 6h", h.LastSuccess, h.State, h.Age, h.AgeSeconds, want)
	}
	if h.Files != 2 || h.Bytes != 250 || h.LastRun == nil || h.LastRun.Status != catalog.RunOK || h.Description != "Hydro <Rails>" {
		t.Errorf("hydro: files %d bytes %d last run %+v", h.Files, h.Bytes, h.LastRun)
	}
	if len(h.Trend) != 2 || h.Trend[0].Bytes != 100 || h.Trend[1].Bytes != 200 || h.Trend[1].State != catalog.AppComplete {
		t.Errorf("hydro trend %+v", h.Trend)
	}
	w := apps["wiki"]
	// The carried night does not count as a success.
	if !w.LastSuccess.Equal(night0) || w.State != OK || len(w.Trend) != 2 || w.Trend[1].State != catalog.AppCarried || w.LastRun != nil {
		t.Errorf("wiki: %+v", w)
	}
	if m := apps["mail"]; m.State != Failed || m.Error != "rsync: disk full" {
		t.Errorf("mail: state %s error %q, want failed with the run's error", m.State, m.Error)
	}
	if c := apps["cvs"]; c.State != Never || !c.LastSuccess.IsZero() || c.Age != 0 {
		t.Errorf("cvs: %+v", c)
	}
	if r.Snapshots.Count != 2 || r.Snapshots.Latest != "2026-11-28T050000" || r.Snapshots.Files != 2 {
		t.Errorf("snapshots %+v", r.Snapshots)
	}

	// Stale: past the site's 30h warn age for hydro; cvs's own 2h does not
	// matter while it has never succeeded.
	r, err = Build(ctx, Options{Inventory: inv, Server: "zg-3.softxs.ch", DB: db, Now: night0.AddDate(0, 0, 1).Add(31 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range r.Apps {
		if a.Name == "hydro" && a.State != Stale {
			t.Errorf("hydro after 31h: %s, want stale", a.State)
		}
	}

	// Nights bounds the trend to the newest ones.
	r, err = Build(ctx, Options{Inventory: inv, Server: "zg-3.softxs.ch", DB: db, Now: now, Nights: 1})
	if err != nil {
		t.Fatal(err)
	}
	var tr []Night
	for _, a := range r.Apps {
		if a.Name == "hydro" {
			tr = a.Trend
		}
	}
	if len(tr) != 1 || tr[0].Snapshot != "2026-11-28T050000" {
		t.Errorf("hydro's trend with Nights 1: %+v", tr)
	}
}

func TestBuildPullsAndDrives(t *testing.T) {
	ctx := context.Background()
	inv, db := setup(t)
	own, err := catalog.Open(filepath.Join(t.TempDir(), "own.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { own.Close() })
	for i, res := range []catalog.RunStatus{catalog.RunOK, catalog.RunFailed} {
		start := night0.Add(time.Duration(i+1) * time.Hour)
		if _, err := own.RecordPull(ctx, catalog.Pull{BackupServer: "odin.softxs.ch", HostServer: "zg-3.softxs.ch",
			Start: start, End: start.Add(time.Minute), Result: res}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := own.SeenMedium(ctx, "usb-1", "1234-abcd", night0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := own.RecordCopy(ctx, catalog.Copy{MediaID: m.ID, Server: "zg-3.softxs.ch", Tier: tiers.Local,
			Snapshot: tiers.SnapshotName(night0.AddDate(0, 0, i)), At: night0.AddDate(0, 0, i).Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := own.SeenMedium(ctx, "usb-2", "5678-ef01", night0); err != nil {
		t.Fatal(err)
	}
	r, err := Build(ctx, Options{Inventory: inv, Server: "zg-3.softxs.ch", DB: db, Own: own, Now: night0.AddDate(0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Pulls) != 2 || r.Pulls[0].Result != catalog.RunFailed {
		t.Errorf("pulls %+v, want 2 newest first", r.Pulls)
	}
	if len(r.Drives) != 2 || r.Drives[0].Copy == nil || r.Drives[0].Copy.Snapshot != "2026-11-28T050000" || r.Drives[1].Copy != nil {
		t.Errorf("drives %+v", r.Drives)
	}

	// No host catalog (never pulled): every app Never with the reason, and
	// the pulls still come from the own catalog.
	r, err = Build(ctx, Options{Inventory: inv, Server: "zg-3.softxs.ch", Own: own, Missing: "no catalog shipped yet"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Apps) != 4 || r.Apps[0].State != Never || r.Apps[0].Error != "no catalog shipped yet" || r.Missing == "" || len(r.Pulls) != 2 {
		t.Errorf("report without a host catalog: %+v", r)
	}
}

func TestBuildErrors(t *testing.T) {
	ctx := context.Background()
	inv, db := setup(t)
	if _, err := Build(ctx, Options{Server: "zg-3.softxs.ch", DB: db}); err == nil || !strings.Contains(err.Error(), "zg-3.softxs.ch") {
		t.Errorf("no inventory: %v", err)
	}
	if _, err := Build(ctx, Options{Inventory: inv, Server: "zg-3.softxs.ch"}); err == nil {
		t.Error("no catalog at all: no error")
	}
	db.Close()
	if _, err := Build(ctx, Options{Inventory: inv, Server: "zg-3.softxs.ch", DB: db}); err == nil {
		t.Error("closed catalog: no error")
	}
}

func TestRoundAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                  "0m",
		59 * time.Minute:              "59m",
		3*time.Hour + 5*time.Minute:   "3h05m",
		47*time.Hour + 59*time.Minute: "47h59m",
		52 * time.Hour:                "2d4h",
	} {
		if got := RoundAge(d); got != want {
			t.Errorf("RoundAge(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1.0K", 3 << 20: "3.0M", 5 << 30: "5.0G"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
