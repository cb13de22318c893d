package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/tiers"
)

var (
	shaA = strings.Repeat("a", 64)
	shaB = strings.Repeat("b", 64)
	shaC = strings.Repeat("c", 64)
)

func TestApplications(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	apps := []Application{
		{Name: "hydro", Server: "zg-3.softxs.ch", VM: "web", Relpath: "demo.softxs.ch/hydro", Type: "rails", Description: "d", Status: "production"},
		{Name: "wiki", Server: "zg-3.softxs.ch", VM: "wiki", Relpath: "wiki.softxs.ch", Type: "moinmoin", UpdatedAt: t0},
	}
	if err := db.UpsertApplications(ctx, apps); err != nil {
		t.Fatal(err)
	}
	apps[0].VM = "intern" // moved to another VM: a one-line edit
	if err := db.UpsertApplications(ctx, apps[:1]); err != nil {
		t.Fatal(err)
	}
	got, err := db.Applications(ctx)
	if err != nil || len(got) != 2 || got[0].VM != "intern" || got[1].Name != "wiki" || !got[1].UpdatedAt.Equal(t0) || got[0].UpdatedAt.IsZero() {
		t.Fatalf("%+v, %v", got, err)
	}
	err = db.UpsertApplications(ctx, []Application{{Name: "x", Server: "s", VM: "v", Type: "files"}})
	wantErr(t, err, `"x"`, "empty relpath")
}

func TestRuns(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	id1, err := db.StartRun(ctx, "hydro", "backup", t0)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := db.GetRun(ctx, id1); err != nil || r.Status != RunRunning || !r.End.IsZero() || !r.Start.Equal(t0) {
		t.Fatalf("%+v %v", r, err)
	}
	if _, ok, err := db.LastSuccess(ctx, "hydro", "backup"); ok || err != nil {
		t.Fatalf("success before any finished run: %v %v", ok, err)
	}
	if err := db.FinishRun(ctx, id1, t0.Add(time.Minute), RunOK, 10, 1000, ""); err != nil {
		t.Fatal(err)
	}
	id2, _ := db.StartRun(ctx, "hydro", "backup", t0.Add(24*time.Hour))
	if err := db.FinishRun(ctx, id2, t0.Add(25*time.Hour), RunFailed, 0, 0, "pg_dump: connection refused"); err != nil {
		t.Fatal(err)
	}
	id3, _ := db.StartRun(ctx, "wiki", "backup", t0.Add(2*time.Hour))
	if err := db.FinishRun(ctx, id3, t0.Add(3*time.Hour), RunOK, 5, 50, ""); err != nil {
		t.Fatal(err)
	}
	id4, _ := db.StartRun(ctx, "wiki", "restore", t0.Add(4*time.Hour))
	if err := db.FinishRun(ctx, id4, t0.Add(5*time.Hour), RunOK, 5, 50, ""); err != nil {
		t.Fatal(err)
	}
	last, ok, err := db.LastSuccess(ctx, "hydro", "backup")
	if err != nil || !ok || last.ID != id1 || last.Files != 10 || !last.End.Equal(t0.Add(time.Minute)) {
		t.Fatalf("%+v %v %v", last, ok, err)
	}
	all, err := db.LastSuccesses(ctx, "backup")
	if err != nil || len(all) != 2 || all["hydro"].ID != id1 || all["wiki"].ID != id3 {
		t.Fatalf("%+v %v", all, err)
	}
	runs, err := db.Runs(ctx, "", "backup", 2)
	if err != nil || len(runs) != 2 || runs[0].ID != id2 || runs[0].Error != "pg_dump: connection refused" || runs[1].ID != id3 {
		t.Fatalf("%+v %v", runs, err)
	}

	wantErr(t, db.FinishRun(ctx, id1, t0, RunOK, 0, 0, ""), fmt.Sprint(id1), "already finished (ok)")
	err = db.FinishRun(ctx, 999, t0, RunOK, 0, 0, "")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("finish unknown run: %v", err)
	}
	wantErr(t, db.FinishRun(ctx, id1, t0, RunRunning, 0, 0, ""), `"running"`, "must be ok, failed or partial")
	wantErr(t, db.FinishRun(ctx, id1, time.Time{}, RunOK, 0, 0, ""), "zero end time")
	wantErr(t, db.FinishRun(ctx, id1, t0, RunOK, -1, 0, ""), "negative")
	_, err = db.StartRun(ctx, "hydro", "", t0)
	wantErr(t, err, "empty kind")
	_, err = db.StartRun(ctx, "hydro", "backup", time.Time{})
	wantErr(t, err, "zero start time")
	if _, err := db.GetRun(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get unknown run: %v", err)
	}
}

func TestFiles(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	recs := []FileRecord{
		{Path: "web/demo.softxs.ch/hydro/db/x.sql.gz", App: "hydro", Size: 10, MTime: t0, SHA256: shaA, UpdatedAt: t0},
		{Path: "web/demo.softxs.ch/hydro/var/a", App: "hydro", Size: 20, MTime: t0, UpdatedAt: t0},
		{Path: "web/demo.softxs.ch/hydro/var/b/c", App: "hydro", Size: 30, MTime: t0, SHA256: shaB, UpdatedAt: t0},
		{Path: "web/demo.softxs.ch/hydro/varx", App: "hydro", Size: 40, MTime: t0, SHA256: shaC, UpdatedAt: t0},
		{Path: "wiki/wiki.softxs.ch/data", App: "wiki", Size: 50, MTime: t0, SHA256: shaC, UpdatedAt: t0},
	}
	if err := db.UpsertFiles(ctx, recs); err != nil {
		t.Fatal(err)
	}
	f, ok, err := db.LookupFile(ctx, recs[0].Path)
	if err != nil || !ok || f.SHA256 != shaA || f.Size != 10 || !f.MTime.Equal(t0) || !f.HashedAt.Equal(t0) || f.App != "hydro" {
		t.Fatalf("%+v %v %v", f, ok, err)
	}
	if sha, ok, err := db.FileHash(ctx, recs[0].Path, 10, t0); err != nil || !ok || sha != shaA {
		t.Fatalf("FileHash %q %v %v", sha, ok, err)
	}
	for _, c := range []struct {
		p    string
		size int64
		mt   time.Time
	}{{recs[0].Path, 11, t0}, {recs[0].Path, 10, t0.Add(1)}, {recs[1].Path, 20, t0}, {"nope", 1, t0}} {
		if sha, ok, err := db.FileHash(ctx, c.p, c.size, c.mt); err != nil || ok {
			t.Errorf("FileHash(%s, %d, %v) = %q %v %v, want no hash", c.p, c.size, c.mt, sha, ok, err)
		}
	}

	// An older observation does not overwrite a newer one.
	if err := db.UpsertFiles(ctx, []FileRecord{{Path: recs[0].Path, App: "hydro", Size: 99, MTime: t0, UpdatedAt: t0.Add(-time.Second)}}); err != nil {
		t.Fatal(err)
	}
	if f, _, _ := db.LookupFile(ctx, recs[0].Path); f.Size != 10 {
		t.Fatalf("stale record applied: %+v", f)
	}
	// Nor does a stale deletion.
	if err := db.UpsertFiles(ctx, []FileRecord{{Path: recs[0].Path, Deleted: true, UpdatedAt: t0.Add(-time.Second)}}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.LookupFile(ctx, recs[0].Path); !ok {
		t.Fatal("stale deletion applied")
	}
	// A newer one does.
	if err := db.UpsertFiles(ctx, []FileRecord{
		{Path: recs[0].Path, App: "hydro", Size: 11, MTime: t0.Add(time.Second), SHA256: shaB, UpdatedAt: t0.Add(time.Second), HashedAt: t0.Add(2 * time.Second)},
		{Path: "wiki/wiki.softxs.ch/data", Deleted: true, UpdatedAt: t0.Add(time.Second)},
	}); err != nil {
		t.Fatal(err)
	}
	if f, _, _ := db.LookupFile(ctx, recs[0].Path); f.Size != 11 || f.SHA256 != shaB || !f.HashedAt.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("update not applied: %+v", f)
	}
	if _, ok, _ := db.LookupFile(ctx, "wiki/wiki.softxs.ch/data"); ok {
		t.Fatal("deletion not applied")
	}

	var walked []string
	if err := db.WalkFiles(ctx, "web/demo.softxs.ch/hydro/var", func(f FileRecord) error { walked = append(walked, f.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(walked, ",") != "web/demo.softxs.ch/hydro/var/a,web/demo.softxs.ch/hydro/var/b/c" {
		t.Fatalf("walk of var: %v (varx is not below var)", walked)
	}
	stop := errors.New("stop")
	if err := db.WalkFiles(ctx, "", func(FileRecord) error { return stop }); err != stop {
		t.Fatalf("walk error: %v", err)
	}
	tot, err := db.FileTotals(ctx)
	if err != nil || len(tot) != 1 || tot[0] != (FileTotal{App: "hydro", Files: 4, Bytes: 11 + 20 + 30 + 40, Unhashed: 1}) {
		t.Fatalf("totals %+v %v", tot, err)
	}

	// Rename a directory: rows move with their hashes, and replace the target.
	if err := db.UpsertFiles(ctx, []FileRecord{{Path: "web/demo.softxs.ch/hydro/new/old", App: "hydro", Size: 1, MTime: t0}}); err != nil {
		t.Fatal(err)
	}
	if err := db.RenamePath(ctx, "web/demo.softxs.ch/hydro/var", "web/demo.softxs.ch/hydro/new", ""); err != nil {
		t.Fatal(err)
	}
	walked = nil
	db.WalkFiles(ctx, "", func(f FileRecord) error {
		walked = append(walked, f.Path+"="+f.SHA256[:min(1, len(f.SHA256))])
		return nil
	})
	if got := strings.Join(walked, ","); got != "web/demo.softxs.ch/hydro/db/x.sql.gz=b,web/demo.softxs.ch/hydro/new/a=,web/demo.softxs.ch/hydro/new/b/c=b,web/demo.softxs.ch/hydro/varx=c" {
		t.Fatalf("after rename: %s", got)
	}
	// Rename a file, re-attributing it.
	if err := db.RenamePath(ctx, "web/demo.softxs.ch/hydro/varx", "web/demo.softxs.ch/hydro/vary", "other"); err != nil {
		t.Fatal(err)
	}
	if f, ok, _ := db.LookupFile(ctx, "web/demo.softxs.ch/hydro/vary"); !ok || f.App != "other" || f.SHA256 != shaC {
		t.Fatalf("renamed file: %+v %v", f, ok)
	}
	if err := db.RenamePath(ctx, "a", "a", ""); err != nil {
		t.Fatal(err)
	}
	// Remove a directory prefix: not its siblings with a longer name.
	if err := db.UpsertFiles(ctx, []FileRecord{{Path: "web/demo.softxs.ch/hydro/new.txt", App: "hydro", Size: 1, MTime: t0}}); err != nil {
		t.Fatal(err)
	}
	n, err := db.RemovePath(ctx, "web/demo.softxs.ch/hydro/new")
	if err != nil || n != 2 {
		t.Fatalf("removed %d, %v; want 2", n, err)
	}
	if _, ok, _ := db.LookupFile(ctx, "web/demo.softxs.ch/hydro/new.txt"); !ok {
		t.Fatal("sibling new.txt removed with new/")
	}
	if n, err := db.RemovePath(ctx, "web/demo.softxs.ch/hydro/new.txt"); err != nil || n != 1 {
		t.Fatalf("remove file: %d %v", n, err)
	}

	// Validation.
	for _, c := range []struct {
		r    FileRecord
		want string
	}{
		{FileRecord{Path: ""}, "empty path"},
		{FileRecord{Path: "/abs"}, "relative"},
		{FileRecord{Path: "a/../b"}, "clean path"},
		{FileRecord{Path: "a//b"}, "clean path"},
		{FileRecord{Path: "../b"}, "leave the tier root"},
		{FileRecord{Path: "a\x00b"}, "NUL"},
		{FileRecord{Path: "a", SHA256: "abc"}, "64 hex digits"},
		{FileRecord{Path: "a", SHA256: strings.Repeat("A", 64)}, "lower-case hex"},
		{FileRecord{Path: "a", Size: -1}, "negative size"},
		{FileRecord{Path: "a"}, "zero mtime"},
		{FileRecord{Path: "a", MTime: time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)}, "out of range"},
	} {
		wantErr(t, db.UpsertFiles(ctx, []FileRecord{c.r}), c.want)
	}
	_, err = db.RemovePath(ctx, "/x")
	wantErr(t, err, "removed path", "relative")
	wantErr(t, db.RenamePath(ctx, "a", "", ""), "rename target", "empty")
	wantErr(t, db.RenamePath(ctx, "..", "a", ""), "rename source")
	wantErr(t, db.RenamePath(ctx, "a", "a/b", ""), "inside the source")
	wantErr(t, db.WalkFiles(ctx, "/", nil), "file prefix")
	if err := db.UpsertFiles(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// A batch with an invalid row in the middle is refused whole.
func TestUpsertFilesAtomic(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	recs := make([]FileRecord, 300)
	for i := range recs {
		recs[i] = FileRecord{Path: fmt.Sprintf("web/f%04d", i), App: "a", Size: 1, MTime: t0}
	}
	if err := db.UpsertFiles(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// A failure inside SQLite (not caught by validation): the batch rolls back.
	recs2 := make([]FileRecord, 300)
	for i := range recs2 {
		recs2[i] = FileRecord{Path: fmt.Sprintf("web/g%04d", i), App: "a", Size: 1, MTime: t0}
	}
	if err := db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`CREATE TRIGGER fail_g0200 BEFORE INSERT ON files WHEN NEW.path = 'web/g0200' BEGIN SELECT RAISE(ABORT, 'injected failure'); END`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err := db.UpsertFiles(ctx, recs2)
	wantErr(t, err, "web/g0200", "injected failure")
	n := 0
	db.WalkFiles(ctx, "", func(FileRecord) error { n++; return nil })
	if n != 300 {
		t.Fatalf("%d rows after a failed batch, want the first batch's 300", n)
	}
}

func TestSnapshots(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	const srv = "zg-3.softxs.ch"
	mk := func(name string, entries []ManifestEntry, carried ...string) Snapshot {
		t.Helper()
		b, err := db.BeginSnapshot(ctx, tiers.Local, srv, name, t0)
		if err != nil {
			t.Fatal(err)
		}
		b.batchSz = 2 // exercise several batches
		if err := b.Add(ctx, entries...); err != nil {
			t.Fatal(err)
		}
		for _, a := range carried {
			if err := b.SetApp(a, AppCarried); err != nil {
				t.Fatal(err)
			}
		}
		s, err := b.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	p := func(s string) string { return "web/demo.softxs.ch/hydro/" + s }
	s1 := mk("2026-11-27T050000", []ManifestEntry{
		{Path: p("db/x.sql.gz"), Size: 10, MTime: t0, SHA256: shaA, App: "hydro"},
		{Path: p("var/a"), Size: 20, MTime: t0, SHA256: shaB, App: "hydro"},
		{Path: p("var/gone"), Size: 5, MTime: t0, App: "hydro"},
		{Path: p("var/touched"), Size: 7, MTime: t0, SHA256: shaC, App: "hydro"},
		{Path: "wiki/wiki.softxs.ch/page", Size: 1, MTime: t0, SHA256: shaC, App: "wiki"},
	})
	if s1.State != SnapshotComplete || s1.Files != 5 || s1.Bytes != 43 {
		t.Fatalf("s1 %+v", s1)
	}
	s2 := mk("2026-11-28T050000", []ManifestEntry{
		{Path: p("db/x.sql.gz"), Size: 10, MTime: t0.Add(time.Hour), SHA256: shaB, App: "hydro"}, // content changed
		{Path: p("var/a"), Size: 20, MTime: t0, SHA256: shaB, App: "hydro"},
		{Path: p("var/new"), Size: 3, MTime: t0, SHA256: shaA, App: "hydro"},
		{Path: p("var/touched"), Size: 7, MTime: t0.Add(time.Hour), SHA256: shaC, App: "hydro"}, // same content
		{Path: "wiki/wiki.softxs.ch/page", Size: 1, MTime: t0, SHA256: shaC, App: "wiki"},
	}, "wiki")

	// A building snapshot is listed as such, never the latest.
	b3, err := db.BeginSnapshot(ctx, tiers.Local, srv, "2026-11-29T050000", t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b3.Add(ctx, ManifestEntry{Path: p("db/x.sql.gz"), Size: 1, MTime: t0}); err != nil {
		t.Fatal(err)
	}
	list, err := db.ListSnapshots(ctx, tiers.Local, srv)
	if err != nil || len(list) != 3 || list[2].State != SnapshotBuilding || list[0].ID != s1.ID {
		t.Fatalf("list %+v %v", list, err)
	}
	latest, ok, err := db.LatestSnapshot(ctx, tiers.Local, srv)
	if err != nil || !ok || latest.ID != s2.ID {
		t.Fatalf("latest %+v %v %v", latest, ok, err)
	}
	if _, ok, _ := db.LatestSnapshot(ctx, tiers.Remote, srv); ok {
		t.Fatal("latest remote snapshot exists")
	}
	if err := b3.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b3.Add(ctx, ManifestEntry{Path: "x", MTime: t0}); err == nil {
		t.Fatal("Add after Abort")
	}
	if list, _ := db.ListSnapshots(ctx, tiers.Local, ""); len(list) != 2 {
		t.Fatalf("aborted snapshot listed: %+v", list)
	}
	if got, err := db.SnapshotByName(ctx, tiers.Local, srv, "2026-11-28T050000"); err != nil || got.ID != s2.ID || got.Files != 5 {
		t.Fatalf("by name %+v %v", got, err)
	}
	if _, err := db.SnapshotByName(ctx, tiers.Local, srv, "2026-11-29T050000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("by name of aborted: %v", err)
	}

	d, err := db.DiffSnapshots(ctx, s1.ID, s2.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Added) != 1 || d.Added[0].Path != p("var/new") || len(d.Removed) != 1 || d.Removed[0].Path != p("var/gone") ||
		len(d.Changed) != 1 || d.Changed[0].New.Path != p("db/x.sql.gz") || d.Changed[0].Old.SHA256 != shaA {
		t.Fatalf("diff %+v", d)
	}
	d, err = db.DiffSnapshots(ctx, s1.ID, s2.ID, "wiki")
	if err != nil || len(d.Added)+len(d.Removed)+len(d.Changed) != 0 {
		t.Fatalf("diff of wiki %+v %v", d, err)
	}
	d, err = db.DiffSnapshots(ctx, s2.ID, s1.ID, p("var"))
	if err != nil || len(d.Added) != 1 || d.Added[0].Path != p("var/gone") || len(d.Changed) != 0 {
		t.Fatalf("reverse diff of var %+v %v", d, err)
	}
	if _, err := db.DiffSnapshots(ctx, s1.ID, 999, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("diff with unknown snapshot: %v", err)
	}
	_, err = db.DiffSnapshots(ctx, s1.ID, s2.ID, "/abs")
	wantErr(t, err, "diff prefix")

	h, err := db.PathHistory(ctx, "", "", p("var/gone"))
	if err != nil || len(h) != 1 || h[0].Snapshot.Name != "2026-11-27T050000" || h[0].Entry.Size != 5 || h[0].Entry.SHA256 != "" {
		t.Fatalf("history of gone %+v %v", h, err)
	}
	h, err = db.PathHistory(ctx, tiers.Local, srv, p("db/*.sql.gz"))
	if err != nil || len(h) != 2 || h[0].Entry.SHA256 != shaA || h[1].Entry.SHA256 != shaB || h[1].Snapshot.ID != s2.ID {
		t.Fatalf("history of glob %+v %v", h, err)
	}
	if h, err := db.PathHistory(ctx, tiers.Remote, "", p("db/*")); err != nil || len(h) != 0 {
		t.Fatalf("remote history %+v %v", h, err)
	}
	_, err = db.PathHistory(ctx, "", "", "")
	wantErr(t, err, "empty pattern")

	ah, err := db.AppHistory(ctx, tiers.Local, srv, "")
	if err != nil || len(ah) != 4 {
		t.Fatalf("app history %+v %v", ah, err)
	}
	if ah[0].App != "hydro" || ah[0].Files != 4 || ah[0].Bytes != 42 || ah[0].State != AppComplete ||
		ah[3].App != "wiki" || ah[3].State != AppCarried || ah[3].Snapshot.ID != s2.ID {
		t.Fatalf("app history %+v", ah)
	}
	if ah, err := db.AppHistory(ctx, tiers.Local, "", "wiki"); err != nil || len(ah) != 2 {
		t.Fatalf("wiki history %+v %v", ah, err)
	}

	var entries []ManifestEntry
	if err := db.WalkManifest(ctx, s2.ID, p("var"), func(e ManifestEntry) error { entries = append(entries, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 || entries[0].Path != p("var/a") || !entries[2].MTime.Equal(t0.Add(time.Hour)) {
		t.Fatalf("manifest of var %+v", entries)
	}

	// Delete s1: its manifest goes; paths only it used can be pruned.
	if err := db.DeleteSnapshot(ctx, s1.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteSnapshot(ctx, s1.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if h, _ := db.PathHistory(ctx, "", "", p("var/gone")); len(h) != 0 {
		t.Fatalf("history after delete %+v", h)
	}
	var rows int
	db.r.QueryRow(`SELECT count(*) FROM manifest WHERE snapshot_id = ?`, s1.ID).Scan(&rows)
	if rows != 0 {
		t.Fatalf("%d manifest rows of a deleted snapshot", rows)
	}
	if n, err := db.PrunePaths(ctx); err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want 1 (var/gone: only s1 had it)", n, err)
	}
	if h, err := db.PathHistory(ctx, "", "", p("var/a")); err != nil || len(h) != 1 || h[0].Snapshot.ID != s2.ID {
		t.Fatalf("history of var/a after prune %+v %v", h, err)
	}
}

func TestSnapshotErrors(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	const srv = "zg-3.softxs.ch"
	_, err := db.BeginSnapshot(ctx, "middle", srv, "2026-11-28T050000", t0)
	wantErr(t, err, "tier", "middle")
	_, err = db.BeginSnapshot(ctx, tiers.Local, "Bad_Server", "2026-11-28T050000", t0)
	wantErr(t, err, "server", "Bad_Server")
	_, err = db.BeginSnapshot(ctx, tiers.Local, srv, "2026-11-28 05:00", t0)
	wantErr(t, err, "snapshot", "2026-11-28 05:00")
	b, err := db.BeginSnapshot(ctx, tiers.Local, srv, "2026-11-28T050000", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Snapshot().Created.IsZero() || b.Snapshot().ID == 0 {
		t.Fatalf("%+v", b.Snapshot())
	}
	_, err = db.BeginSnapshot(ctx, tiers.Local, srv, "2026-11-28T050000", t0)
	wantErr(t, err, "local/zg-3.softxs.ch/2026-11-28T050000", "already exists")
	wantErr(t, b.Add(ctx, ManifestEntry{Path: "../x"}), "2026-11-28T050000", "manifest path")
	wantErr(t, b.Add(ctx, ManifestEntry{Path: "x", SHA256: "zz"}), "sha256")
	wantErr(t, b.Add(ctx, ManifestEntry{Path: "x", Size: -2}), "negative size")
	wantErr(t, b.Add(ctx, ManifestEntry{Path: "x"}), "2026-11-28T050000", "zero mtime")
	wantErr(t, b.SetApp("", AppCarried), "empty application")
	wantErr(t, b.SetApp("a", "half"), `"half"`)
	if err := b.Add(ctx, ManifestEntry{Path: "x", MTime: t0}, ManifestEntry{Path: "x", MTime: t0}); err != nil {
		t.Fatal(err) // buffered: the duplicate shows at the write
	}
	_, err = b.Commit(ctx)
	wantErr(t, err, `"x"`, "listed twice")
	// The failed commit left the snapshot building, not complete.
	if _, ok, _ := db.LatestSnapshot(ctx, tiers.Local, srv); ok {
		t.Fatal("a snapshot whose commit failed is complete")
	}
	// A builder whose snapshot was deleted cannot commit.
	b2, _ := db.BeginSnapshot(ctx, tiers.Remote, srv, "2026-11-28T050000", t0)
	if err := db.DeleteSnapshot(ctx, b2.Snapshot().ID); err != nil {
		t.Fatal(err)
	}
	_, err = b2.Commit(ctx)
	wantErr(t, err, "deleted while being built")
	b3, _ := db.BeginSnapshot(ctx, tiers.Remote, srv, "2026-11-29T050000", t0)
	if _, err := b3.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = b3.Commit(ctx)
	wantErr(t, err, "commit after commit")
	if err := b3.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.LatestSnapshot(ctx, tiers.Remote, srv); !ok {
		t.Fatal("Abort after Commit deleted the snapshot")
	}
}

func TestPullsMediaCopies(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	p1 := Pull{BackupServer: "bk.softxs.ch", HostServer: "zg-3.softxs.ch", Snapshot: "2026-11-28T050000",
		Start: t0, End: t0.Add(time.Hour), Files: 10, Bytes: 100, Result: RunOK}
	id, err := db.RecordPull(ctx, p1)
	if err != nil {
		t.Fatal(err)
	}
	p2 := p1
	p2.HostServer, p2.Result, p2.Error, p2.Start, p2.End = "zg-4.softxs.ch", RunFailed, "ssh: connection refused", t0.Add(time.Hour), t0.Add(time.Hour)
	if _, err := db.RecordPull(ctx, p2); err != nil {
		t.Fatal(err)
	}
	ps, err := db.Pulls(ctx, "zg-3.softxs.ch", 0)
	if err != nil || len(ps) != 1 || ps[0].ID != id || ps[0].Files != 10 || !ps[0].End.Equal(t0.Add(time.Hour)) {
		t.Fatalf("%+v %v", ps, err)
	}
	if ps, err := db.Pulls(ctx, "", 1); err != nil || len(ps) != 1 || ps[0].Error != "ssh: connection refused" {
		t.Fatalf("%+v %v", ps, err)
	}
	bad := p1
	bad.Result = "meh"
	_, err = db.RecordPull(ctx, bad)
	wantErr(t, err, `"meh"`)
	bad = p1
	bad.End = t0.Add(-time.Hour)
	_, err = db.RecordPull(ctx, bad)
	wantErr(t, err, "end not before")
	bad = p1
	bad.BackupServer = ""
	_, err = db.RecordPull(ctx, bad)
	wantErr(t, err, "backup server")

	m, err := db.SeenMedium(ctx, "usb-blue", "1111-2222", t0)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := db.SeenMedium(ctx, "usb-blue-2", "1111-2222", t0.Add(48*time.Hour))
	if err != nil || m2.ID != m.ID || !m2.FirstSeen.Equal(t0) || !m2.LastSeen.Equal(t0.Add(48*time.Hour)) || m2.Label != "usb-blue-2" {
		t.Fatalf("%+v %v", m2, err)
	}
	if _, err := db.SeenMedium(ctx, "usb-red", "3333-4444", t0); err != nil {
		t.Fatal(err)
	}
	media, err := db.Media(ctx)
	if err != nil || len(media) != 2 || media[0].FSUUID != "1111-2222" {
		t.Fatalf("%+v %v", media, err)
	}
	_, err = db.SeenMedium(ctx, "x", "", t0)
	wantErr(t, err, "empty filesystem UUID")
	_, err = db.SeenMedium(ctx, "x", "u", time.Time{})
	wantErr(t, err, "zero time")

	c := Copy{MediaID: m.ID, Server: "zg-3.softxs.ch", Tier: tiers.Remote, Snapshot: "2026-11-28T050000", At: t0, Files: 10, Bytes: 100}
	cid, err := db.RecordCopy(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.VerifyCopy(ctx, cid, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	cs, err := db.Copies(ctx, m.ID)
	if err != nil || len(cs) != 1 || !cs[0].VerifiedAt.Equal(t0.Add(time.Hour)) || cs[0].Tier != tiers.Remote {
		t.Fatalf("%+v %v", cs, err)
	}
	c2 := c
	c2.Snapshot, c2.At, c2.VerifiedAt = "2026-11-29T050000", t0.Add(24*time.Hour), t0.Add(25*time.Hour)
	if _, err := db.RecordCopy(ctx, c2); err != nil {
		t.Fatal(err)
	}
	if cs, _ := db.Copies(ctx, 0); len(cs) != 2 || !cs[1].VerifiedAt.Equal(c2.VerifiedAt) || cs[1].Snapshot != c2.Snapshot {
		t.Fatalf("all copies %+v", cs)
	}
	if err := db.VerifyCopy(ctx, 999, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("verify unknown copy: %v", err)
	}
	wantErr(t, db.VerifyCopy(ctx, cid, time.Time{}), "zero time")
	c.MediaID = 999
	_, err = db.RecordCopy(ctx, c)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "medium 999") {
		t.Fatalf("copy onto unknown medium: %v", err)
	}
	c.Tier = "attic"
	_, err = db.RecordCopy(ctx, c)
	wantErr(t, err, "attic")
	c.Tier, c.Snapshot = tiers.Local, ""
	_, err = db.RecordCopy(ctx, c)
	wantErr(t, err, "snapshot")
}

// Prefix queries must follow an index range in order: their cost is the
// size of the subtree, not of the catalog, and they need no sort.
func TestPrefixQueryPlans(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	for _, q := range []string{filesUnderSQL, manifestUnderSQL} {
		rows, err := db.r.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, "a", "a/", "a0", 1)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		p := strings.Join(plan, "; ")
		if strings.Contains(p, "SCAN") || strings.Contains(p, "TEMP B-TREE") || !strings.Contains(p, "SEARCH") {
			t.Errorf("plan of %s:\n%s", q, p)
		}
	}
}

// Siblings that sort between p and p/ are not below p.
func TestPrefixSiblings(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	paths := []string{"web/d", "web/d-old/x", "web/d.bak", "web/d/a", "web/d/b/c", "web/d0", "web/e"}
	var recs []FileRecord
	var entries []ManifestEntry
	for _, p := range paths {
		recs = append(recs, FileRecord{Path: p, App: "a", MTime: t0})
		entries = append(entries, ManifestEntry{Path: p, MTime: t0})
	}
	must(t, db.UpsertFiles(ctx, recs))
	b, err := db.BeginSnapshot(ctx, tiers.Local, "zg-3.softxs.ch", "2026-11-28T050000", t0)
	must(t, err)
	must(t, b.Add(ctx, entries...))
	s, err := b.Commit(ctx)
	must(t, err)
	var got, gotM []string
	must(t, db.WalkFiles(ctx, "web/d", func(f FileRecord) error { got = append(got, f.Path); return nil }))
	must(t, db.WalkManifest(ctx, s.ID, "web/d", func(e ManifestEntry) error { gotM = append(gotM, e.Path); return nil }))
	want := "web/d,web/d/a,web/d/b/c"
	if strings.Join(got, ",") != want || strings.Join(gotM, ",") != want {
		t.Fatalf("files %v, manifest %v; want %s", got, gotM, want)
	}
	n, err := db.RemovePath(ctx, "web/d")
	if err != nil || n != 3 {
		t.Fatalf("removed %d, %v", n, err)
	}
	must(t, db.RenamePath(ctx, "web/d.bak", "web/d", ""))
	got = nil
	must(t, db.WalkFiles(ctx, "", func(f FileRecord) error { got = append(got, f.Path); return nil }))
	if strings.Join(got, ",") != "web/d,web/d-old/x,web/d0,web/e" {
		t.Fatalf("after remove and rename: %v", got)
	}
}

func TestChanged(t *testing.T) {
	base := ManifestEntry{Path: "p", Size: 1, MTime: t0, SHA256: shaA}
	for _, c := range []struct {
		b    ManifestEntry
		want bool
	}{
		{ManifestEntry{Path: "p", Size: 1, MTime: t0, SHA256: shaA}, false},
		{ManifestEntry{Path: "p", Size: 1, MTime: t0.Add(time.Hour), SHA256: shaA}, false}, // touched only
		{ManifestEntry{Path: "p", Size: 1, MTime: t0, SHA256: shaB}, true},
		{ManifestEntry{Path: "p", Size: 2, MTime: t0, SHA256: shaA}, true},
		{ManifestEntry{Path: "p", Size: 1, MTime: t0}, false},                 // hash unknown: mtime decides
		{ManifestEntry{Path: "p", Size: 1, MTime: t0.Add(time.Second)}, true}, // hash unknown: mtime decides
	} {
		if got := changed(base, c.b); got != c.want {
			t.Errorf("changed(%+v, %+v) = %v", base, c.b, got)
		}
	}
}
