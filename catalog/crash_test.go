package catalog

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/softxs/v2backup/tiers"
)

const crashEnv = "CATALOG_CRASH_CHILD_DB"

// crashChild runs in the re-executed test binary: it commits a first batch,
// then begins a big one and stops in the middle of its transaction, after
// telling the parent, which kills it.
func crashChild(path string) {
	db, err := Open(path, func(o *options) {
		o.upsertHook = func(i int) {
			if i == 30000 {
				fmt.Println("IN-TX")
				select {} // wait for SIGKILL
			}
		}
	})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	ctx := context.Background()
	// A tiny page cache makes SQLite spill the uncommitted batch into the
	// WAL, so that recovery really has partial frames to ignore.
	if err := db.withWriteConn(ctx, func(c *sql.Conn) error {
		_, err := c.ExecContext(ctx, "PRAGMA cache_size = 50")
		return err
	}); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	first := make([]FileRecord, 100)
	for i := range first {
		first[i] = FileRecord{Path: fmt.Sprintf("web/committed/%04d", i), App: "a", Size: 1, MTime: t0, SHA256: shaA}
	}
	if err := db.UpsertFiles(ctx, first); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	big := make([]FileRecord, 60000)
	for i := range big {
		big[i] = FileRecord{Path: fmt.Sprintf("web/partial/%06d", i), App: "a", Size: int64(i), MTime: t0, SHA256: shaB}
	}
	err = db.UpsertFiles(ctx, big)
	fmt.Println("ERR batch returned", err)
	os.Exit(1)
}

// crashSnapshotChild adds many manifest entries to a snapshot (several
// batches committed) and waits to be killed before Commit.
func crashSnapshotChild(path string) {
	db, err := Open(path)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	ctx := context.Background()
	b, err := db.BeginSnapshot(ctx, tiers.Local, "zg-3.softxs.ch", "2026-11-28T050000", t0)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	for i := range 3 * manifestBatch {
		if err := b.Add(ctx, ManifestEntry{Path: fmt.Sprintf("web/f%06d", i), Size: 1, MTime: t0, App: "a"}); err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
	}
	fmt.Println("ADDED")
	select {}
}

func TestMain(m *testing.M) {
	if p := os.Getenv(crashEnv); p != "" {
		if sp, ok := strings.CutPrefix(p, "snapshot:"); ok {
			crashSnapshotChild(sp)
		}
		crashChild(p)
		return
	}
	os.Exit(m.Run())
}

// killChild re-executes the test binary as a child in mode (see TestMain),
// waits for its line want, and SIGKILLs it.
func killChild(t *testing.T, mode, want string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+mode)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != want {
		t.Fatalf("child said %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v", err)
	}
}

func TestCrashMidBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	killChild(t, path, "IN-TX")
	if st, err := os.Stat(path + "-wal"); err != nil || st.Size() == 0 {
		t.Fatalf("no WAL left by the killed child (%v): the test would prove nothing", err)
	} else {
		t.Logf("WAL left by the killed child: %d bytes", st.Size())
	}

	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	committed, partial := 0, 0
	err = db.WalkFiles(ctx, "", func(f FileRecord) error {
		switch {
		case strings.HasPrefix(f.Path, "web/committed/"):
			committed++
		case strings.HasPrefix(f.Path, "web/partial/"):
			partial++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if committed != 100 || partial != 0 {
		t.Fatalf("after the crash: %d committed rows (want 100), %d rows of the killed batch (want 0)", committed, partial)
	}
	var check string
	if err := db.r.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check: %q %v", check, err)
	}
	// And the catalog is writable again.
	if err := db.UpsertFiles(ctx, []FileRecord{{Path: "web/after", App: "a", MTime: t0}}); err != nil {
		t.Fatal(err)
	}
}

func TestCrashBeforeSnapshotCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	killChild(t, "snapshot:"+path, "ADDED")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if s, ok, err := db.LatestSnapshot(ctx, tiers.Local, "zg-3.softxs.ch"); err != nil || ok {
		t.Fatalf("a complete snapshot after a crash before Commit: %+v %v", s, err)
	}
	list, err := db.ListSnapshots(ctx, tiers.Local, "")
	if err != nil || len(list) != 1 || list[0].State != SnapshotBuilding {
		t.Fatalf("snapshots after the crash: %+v %v", list, err)
	}
	if h, err := db.PathHistory(ctx, "", "", "web/f000001"); err != nil || len(h) != 0 {
		t.Fatalf("history shows a building snapshot: %+v %v", h, err)
	}
	// The leftover can be deleted, and the name reused.
	if err := db.DeleteSnapshot(ctx, list[0].ID); err != nil {
		t.Fatal(err)
	}
	b, err := db.BeginSnapshot(ctx, tiers.Local, "zg-3.softxs.ch", "2026-11-28T050000", t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}
