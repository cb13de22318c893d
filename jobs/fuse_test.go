package jobs

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/softxs/v2backup/jobs/dbtest"
	"github.com/softxs/v2backup/jobs/runfile"
	"github.com/softxs/v2backup/tiers/inventory"
)

// mountVM serves a VM's backup mount from a separate process (the host
// daemon's mount code, fusefs/internal/mountcmd): this test process runs
// rsync and gzip against it, so it must not serve it itself.
func mountVM(t *testing.T, mnt, local string, apps ...string) (events string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mountcmd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/softxs/v2backup/fusefs/internal/mountcmd").CombinedOutput(); err != nil {
		t.Fatalf("building mountcmd: %v\n%s", err, out)
	}
	events = filepath.Join(t.TempDir(), "events")
	args := []string{"-mountpoint", mnt, "-local-root", local, "-vm", "web", "-events", events}
	for _, a := range apps {
		args = append(args, "-app", a)
	}
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			<-done
		}
		exec.Command("umount", "-l", mnt).Run()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready") {
				ready <- true
			}
		}
		close(ready)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("mountcmd exited before it was ready: %s", stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("mountcmd not ready after a minute: %s", stderr.String())
	}
	return events
}

// TestRailsThroughMount runs a Rails job (MariaDB) into a real FUSE mount
// of the host daemon, as inside a VM, and restores from the backing tree.
func TestRailsThroughMount(t *testing.T) {
	needServers(t)
	if os.Geteuid() != 0 {
		t.Fatal("mounting FUSE needs root")
	}
	m := dbtest.MariaDBT(t)
	ctx := context.Background()
	seedMariaDB(t, m, "hydro", "hydro", railsPassword)
	root := t.TempDir()
	local := filepath.Join(root, "partition/local")
	mnt := filepath.Join(root, "backup")
	os.MkdirAll(filepath.Join(local, "web"), 0o755)
	os.MkdirAll(mnt, 0o755)
	events := mountVM(t, mnt, local, "hydro=demo.softxs.ch/hydro")
	path, hdVar := railsApp(t, root, "hydro", mysqlDatabaseYML(m, "hydro", "hydro"))
	app := &inventory.App{Name: "hydro", Type: inventory.TypeRails, Path: path, Relpath: "demo.softxs.ch/hydro"}
	o := Options{Target: mnt, Now: clock(), Getenv: getenvWith("HYDRO_DB_PASSWORD", railsPassword)}
	for i := 0; i < 2; i++ {
		if _, err := Backup(ctx, app, o); err != nil {
			t.Fatal(err)
		}
	}
	backing := filepath.Join(local, "web/demo.softxs.ch/hydro")
	rec := readRun(t, backing)
	if rec.Status != runfile.OK {
		t.Fatalf("run file on the disk: %+v", rec)
	}
	sameTree(t, "backing tree and mount", tree(t, backing, nil), tree(t, filepath.Join(mnt, "demo.softxs.ch/hydro"), nil))
	sameTree(t, "data directory through the mount", tree(t, hdVar, nil), tree(t, filepath.Join(backing, "shared/var"), nil))
	dest := filepath.Join(root, "restored")
	if _, err := Restore(ctx, app, RestoreOptions{Source: backing, Dest: dest, Database: "hydro_copy",
		Getenv: getenvWith("HYDRO_DB_PASSWORD", railsPassword)}); err != nil {
		t.Fatal(err)
	}
	if want, got := dumpMariaDB(t, m, "hydro"), dumpMariaDB(t, m, "hydro_copy"); want != got {
		t.Errorf("restored database differs")
	}
	// The daemon saw the run file written, which is how the host learns
	// of the run.
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(events)
		if strings.Contains(string(b), "demo.softxs.ch/hydro/"+runfile.Name) || strings.Contains(string(b), "\t"+runfile.Name) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event for the run file in %s:\n%s", events, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
