package catalog

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)

func openTest(t *testing.T, opts ...Option) *DB {
	t.Helper()
	// Quiet by default: tests that check logs pass their own logger.
	db, err := Open(filepath.Join(t.TempDir(), "state", "catalog.db"), append([]Option{WithLogger(slogDiscard())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Error(err)
		}
	})
	return db
}

func wantErr(t *testing.T, err error, substr ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error mentioning %q, got nil", substr)
	}
	for _, s := range substr {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not mention %q", err, s)
		}
	}
}

func TestOpenCreatesPrivateDirAndWAL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	db, err := Open(filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("parent dir mode %v, want 0700", st.Mode().Perm())
	}
	ctx := context.Background()
	var mode string
	if err := db.r.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q, %v; want wal", mode, err)
	}
	err = db.withWriteConn(ctx, func(c *sql.Conn) error {
		var fk, sync int
		if err := c.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
			return err
		}
		if err := c.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			return err
		}
		if fk != 1 || sync != 1 {
			t.Errorf("foreign_keys %d synchronous %d, want 1 and 1 (NORMAL)", fk, sync)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := db.UserVersion(ctx); err != nil || v != SchemaVersion {
		t.Errorf("user_version %d, %v; want %d", v, err, SchemaVersion)
	}
	if db.Path() != filepath.Join(dir, "catalog.db") {
		t.Errorf("Path %q", db.Path())
	}
	// The readers are read-only.
	if _, err := db.r.ExecContext(ctx, "DELETE FROM files"); err == nil {
		t.Error("read pool accepted a write")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(dir)
	wantErr(t, err, dir, "not a regular file")
	_, err = Open("")
	wantErr(t, err, "empty database path")
	_, err = Open(filepath.Join(dir, "x.db"), WithMaxBatch(0))
	wantErr(t, err, "invalid options", "max batch 0")
	_, err = Open(filepath.Join(dir, "x.db"), WithReaders(0))
	wantErr(t, err, "readers 0")
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(filepath.Join(file, "x.db"))
	wantErr(t, err, "create directory", file)
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(garbage)
	wantErr(t, err, garbage)
}

func TestOpenOddPath(t *testing.T) {
	// '?', '#' and '%' must survive the URI.
	p := filepath.Join(t.TempDir(), "we?ird #dir %41", "catalog.db")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.UpsertApplications(context.Background(), []Application{{Name: "a", Server: "s", VM: "v", Relpath: "r", Type: "files"}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("database not at %q: %v", p, err)
	}
}

func TestCloseFlushesAndRefuses(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.db")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := db.StartRun(ctx, "app", "backup", t0.Add(time.Duration(i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if _, err := db.StartRun(ctx, "app", "backup", t0); !errors.Is(err, ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
	if _, err := os.Stat(p + "-wal"); !os.IsNotExist(err) {
		t.Errorf("WAL left after Close: %v", err)
	}
	db2, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	runs, err := db2.Runs(ctx, "app", "", 0)
	if err != nil || len(runs) != 50 {
		t.Fatalf("%d runs after reopen, %v; want 50", len(runs), err)
	}
}

func TestSync(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.StartRun(ctx, "a", "backup", t0); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// After a checkpoint the data is in the main file: a copy of it alone
	// (no WAL) holds the run.
	raw, err := os.ReadFile(db.Path())
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(cp, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	db2, err := Open(cp)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if runs, err := db2.Runs(ctx, "a", "", 0); err != nil || len(runs) != 1 {
		t.Fatalf("copy after Sync holds %d runs, %v", len(runs), err)
	}
}

func TestWriteContextCancelled(t *testing.T) {
	db := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.StartRun(ctx, "a", "backup", t0); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if err := db.Sync(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync: got %v, want context.Canceled", err)
	}
}

// A failing request in a group commit is rolled back alone.
func TestBatchIsolation(t *testing.T) {
	db := openTest(t, WithMaxBatch(64))
	ctx := context.Background()
	block := make(chan struct{})
	started := make(chan struct{})
	// Hold the writer so that the next requests queue up and share a batch.
	go db.write(ctx, func(tx *sql.Tx) error { close(started); <-block; return nil })
	<-started
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.write(ctx, func(tx *sql.Tx) error {
				if _, err := tx.Exec(`INSERT INTO meta (key, value) VALUES (?, 'x')`, string(rune('a'+i))); err != nil {
					return err
				}
				if i%2 == 1 {
					return errors.New("boom")
				}
				return nil
			})
		}()
	}
	// Wait until all ten are queued behind the blocked one.
	deadline := time.Now().Add(10 * time.Second)
	for len(db.reqs) < 10 {
		if time.Now().After(deadline) {
			t.Fatal("requests did not queue")
		}
		time.Sleep(time.Millisecond)
	}
	close(block)
	wg.Wait()
	for i, err := range errs {
		if (i%2 == 1) != (err != nil) {
			t.Errorf("request %d: %v", i, err)
		}
		v, _ := db.getMeta(ctx, string(rune('a'+i)))
		if (i%2 == 0) != (v == "x") {
			t.Errorf("request %d: row present %v", i, v == "x")
		}
	}
}

// Readers never wait for the writer: while a write transaction is held
// open, reads still complete and see the last committed state.
func TestReadersDoNotWaitForWriter(t *testing.T) {
	inTx := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	db := openTest(t, WithReaders(4))
	ctx := context.Background()
	if err := db.UpsertFiles(ctx, []FileRecord{{Path: "web/a", App: "a", Size: 1, MTime: t0}}); err != nil {
		t.Fatal(err)
	}
	db.opts.upsertHook = func(i int) {
		once.Do(func() { close(inTx); <-release })
	}
	done := make(chan error, 1)
	go func() {
		done <- db.UpsertFiles(ctx, []FileRecord{{Path: "web/b", App: "a", Size: 2, MTime: t0}, {Path: "web/c", App: "a", Size: 3, MTime: t0}})
	}()
	<-inTx
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				n := 0
				if err := db.WalkFiles(ctx, "", func(FileRecord) error { n++; return nil }); err != nil {
					t.Error(err)
					return
				}
				if n != 1 {
					t.Errorf("reader saw %d rows during the write, want the committed 1", n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	db.opts.upsertHook = nil
	if _, ok, _ := db.LookupFile(ctx, "web/c"); !ok {
		t.Fatal("write not visible after commit")
	}
}

// Many writers and readers at once, under -race.
func TestConcurrentReadWrite(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				recs := []FileRecord{{Path: "web/w" + string(rune('0'+w)) + "/" + time.Duration(i).String(), App: "a", Size: int64(i), MTime: t0}}
				if err := db.UpsertFiles(ctx, recs); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := int64(0)
			for range 50 {
				tot, err := db.FileTotals(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				var n int64
				for _, x := range tot {
					n += x.Files
				}
				if n < last {
					t.Errorf("row count went back from %d to %d", last, n)
				}
				last = n
			}
		}()
	}
	wg.Wait()
	tot, err := db.FileTotals(ctx)
	if err != nil || len(tot) != 1 || tot[0].Files != 200 || tot[0].Unhashed != 200 {
		t.Fatalf("totals %+v, %v; want 200 unhashed files of app a", tot, err)
	}
}

// Every read reports a failure with the database's path.
func TestReadsAfterClose(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	p := db.Path()
	noop := func(any) error { return nil }
	for name, f := range map[string]func() error{
		"Applications":      func() error { _, err := db.Applications(ctx); return err },
		"GetRun":            func() error { _, err := db.GetRun(ctx, 1); return err },
		"LastSuccess":       func() error { _, _, err := db.LastSuccess(ctx, "a", "backup"); return err },
		"LastSuccesses":     func() error { _, err := db.LastSuccesses(ctx, "backup"); return err },
		"Runs":              func() error { _, err := db.Runs(ctx, "", "", 0); return err },
		"LookupFile":        func() error { _, _, err := db.LookupFile(ctx, "a"); return err },
		"FileHash":          func() error { _, _, err := db.FileHash(ctx, "a", 1, t0); return err },
		"WalkFiles":         func() error { return db.WalkFiles(ctx, "", func(f FileRecord) error { return noop(f) }) },
		"FileTotals":        func() error { _, err := db.FileTotals(ctx); return err },
		"ListSnapshots":     func() error { _, err := db.ListSnapshots(ctx, "local", ""); return err },
		"LatestSnapshot":    func() error { _, _, err := db.LatestSnapshot(ctx, "local", "s"); return err },
		"SnapshotByName":    func() error { _, err := db.SnapshotByName(ctx, "local", "s", "n"); return err },
		"WalkManifest":      func() error { return db.WalkManifest(ctx, 1, "", func(e ManifestEntry) error { return noop(e) }) },
		"DiffSnapshots":     func() error { _, err := db.DiffSnapshots(ctx, 1, 2, ""); return err },
		"PathHistory":       func() error { _, err := db.PathHistory(ctx, "", "", "a*"); return err },
		"AppHistory":        func() error { _, err := db.AppHistory(ctx, "local", "", ""); return err },
		"Pulls":             func() error { _, err := db.Pulls(ctx, "", 0); return err },
		"Media":             func() error { _, err := db.Media(ctx); return err },
		"Copies":            func() error { _, err := db.Copies(ctx, 0); return err },
		"UserVersion":       func() error { _, err := db.UserVersion(ctx); return err },
		"Rescan":            func() error { _, err := db.Rescan(ctx, t.TempDir(), RescanOptions{}); return err },
		"RescanRecommended": func() error { _, err := db.RescanRecommended(ctx); return err },
		"NewRecorder":       func() error { _, err := NewRecorder(db, t.TempDir(), RecorderOptions{}); return err },
	} {
		if err := f(); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s on a closed catalog: %v; want an error naming %s", name, err, p)
		}
	}
	for name, f := range map[string]func() error{
		"UpsertApplications": func() error {
			return db.UpsertApplications(ctx, []Application{{Name: "a", Server: "s", VM: "v", Relpath: "r", Type: "t"}})
		},
		"UpsertFiles": func() error { return db.UpsertFiles(ctx, []FileRecord{{Path: "a", MTime: t0}}) },
		"RemovePath":  func() error { _, err := db.RemovePath(ctx, "a"); return err },
		"RenamePath":  func() error { return db.RenamePath(ctx, "a", "b", "") },
		"FinishRun":   func() error { return db.FinishRun(ctx, 1, t0, RunOK, 0, 0, "") },
		"BeginSnapshot": func() error {
			_, err := db.BeginSnapshot(ctx, "local", "zg-3.softxs.ch", "2026-11-28T050000", t0)
			return err
		},
		"DeleteSnapshot": func() error { return db.DeleteSnapshot(ctx, 1) },
		"PrunePaths":     func() error { _, err := db.PrunePaths(ctx); return err },
		"RecordPull": func() error {
			_, err := db.RecordPull(ctx, Pull{BackupServer: "b", HostServer: "h", Start: t0, End: t0, Result: RunOK})
			return err
		},
		"SeenMedium": func() error { _, err := db.SeenMedium(ctx, "l", "u", t0); return err },
		"RecordCopy": func() error {
			_, err := db.RecordCopy(ctx, Copy{MediaID: 1, Server: "s", Tier: "local", Snapshot: "n", At: t0})
			return err
		},
		"VerifyCopy": func() error { return db.VerifyCopy(ctx, 1, t0) },
		"Sync":       func() error { return db.Sync(ctx) },
	} {
		if err := f(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s on a closed catalog: %v; want ErrClosed", name, err)
		}
	}
}

// A failing COMMIT fails every request of the batch.
func TestCommitFailure(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	err := db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec("PRAGMA defer_foreign_keys = ON"); err != nil {
			return err
		}
		// A dangling reference, only checked at COMMIT.
		_, err := tx.Exec(`INSERT INTO copies (media_id, server, tier, snapshot, at_ns) VALUES (999, 's', 'local', 'n', 1)`)
		return err
	})
	wantErr(t, err, db.Path(), "commit", "FOREIGN KEY")
	if cs, err := db.Copies(ctx, 0); err != nil || len(cs) != 0 {
		t.Fatalf("copies after a failed commit: %+v %v", cs, err)
	}
}

// Another process holding the write lock longer than the busy timeout.
func TestBusyTimeout(t *testing.T) {
	a := openTest(t)
	ctx := context.Background()
	b, err := Open(a.Path(), WithBusyTimeout(20*time.Millisecond), WithLogger(slogDiscard()), WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	inTx, release := make(chan struct{}), make(chan struct{})
	go a.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT INTO meta VALUES ('lock', 'held')`); err != nil {
			return err
		}
		close(inTx)
		<-release
		return nil
	})
	<-inTx
	wantErr(t, b.UpsertFiles(ctx, []FileRecord{{Path: "a", MTime: t0}}), b.Path(), "begin", "locked")
	wantErr(t, b.Sync(ctx), b.Path(), "checkpoint")
	close(release)
	// Once the lock is gone, b works, and uses its clock.
	if err := b.UpsertFiles(ctx, []FileRecord{{Path: "a", MTime: t0}}); err != nil {
		t.Fatal(err)
	}
	if f, _, _ := b.LookupFile(ctx, "a"); !f.UpdatedAt.Equal(t0) {
		t.Fatalf("UpdatedAt %v, want the injected clock's %v", f.UpdatedAt, t0)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
