package vm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/verify"
)

// daemonInventory: one server, one VM exported over virtiofs only, one
// application. {root} is the test's directory.
const daemonInventory = `
[site]
partition = "{root}/v01/backup"

[[server]]
name = "host1.example.ch"
host_mount = "{root}/mnt/_host"
remote_view = "{root}/view"

[[vm]]
name = "` + testVM + `"
server = "host1.example.ch"
export = "virtiofs"
socket = "{root}/run/` + testVM + `.sock"

[[app]]
name = "` + testApp + `"
server = "host1.example.ch"
vm = "` + testVM + `"
relpath = "` + testRelpath + `"
type = "files"
`

// syncBuffer collects a process's output; safe to read while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestServeDaemonGuest: the real `v2backup serve` creates the VM's socket
// from the inventory (export = "virtiofs"), QEMU connects to it, and the
// guest copies a tree in with cp -a and rsync -a, is kept inside its
// application and reads .history; after SIGTERM the socket is gone and the
// daemon's catalog holds every file the guest wrote.
func TestServeDaemonGuest(t *testing.T) {
	if _, err := QEMUBinary(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil && os.Getenv("V2BACKUP_QEMU_ACCEL") == "" {
		t.Fatalf("/dev/kvm: %v; set V2BACKUP_QEMU_ACCEL=tcg to run the guest under TCG alone", err)
	}
	k, err := FindKernel()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	part := filepath.Join(dir, "v01", "backup")
	app := filepath.Join(part, "local", testVM, testRelpath)
	sock := filepath.Join(dir, "run", testVM+".sock")
	for _, mp := range []string{"mnt/_host", "view"} {
		// The daemon's own FUSE mounts: detached even if it dies.
		mp := filepath.Join(dir, mp)
		t.Cleanup(func() { unix.Unmount(mp, unix.MNT_DETACH) })
	}
	snap := filepath.Join(part, "snapshots", "local", snapName, testVM, testRelpath)
	if err := os.MkdirAll(snap, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(snap, "hello.txt"), []byte("from-snapshot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(app, 0o755); err != nil {
		t.Fatal(err)
	}
	inv := filepath.Join(dir, "v2backup.toml")
	if err := os.WriteFile(inv, []byte(strings.ReplaceAll(daemonInventory, "{root}", dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	ents := sourceTree()
	initrd := filepath.Join(dir, "initrd.cpio")
	ir := Initramfs{
		Kernel: k, Modules: VirtiofsModules, Binaries: []string{"rsync"},
		Init:  guestScript(),
		Files: map[string][]byte{"/src.tar": sourceTar(t, ents)},
	}
	if err := ir.Write(initrd); err != nil {
		t.Fatal(err)
	}

	bin := filepath.Join(dir, "v2backup")
	build := exec.Command(goTool(), "build", "-race", "-o", bin, "../../cmd/v2backup")
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build v2backup: %v\n%s", err, msg)
	}
	log := &syncBuffer{}
	d := exec.Command(bin, "--config", inv, "--server", "host1.example.ch", "serve")
	d.Stdout, d.Stderr = log, log
	d.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		d.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			d.Process.Kill()
			<-done
			t.Errorf("daemon did not stop within 60 s of SIGTERM; killed")
			return nil
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(log.String(), "virtiofs socket listening") {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("daemon exited before serving %s: %v", sock, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not serve %s within 2 minutes", sock)
		}
	}

	g, err := Boot(Config{Kernel: k, Initrd: initrd, Dir: dir, VhostSocket: sock, Append: "v2b.phase=daemon"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Kill)
	if err := g.WaitFor("V2B DONE=daemon", 200*time.Second); err != nil {
		t.Fatal(err)
	}
	res := Results(g.Log(), "V2B ")
	g.Kill()
	t.Logf("guest (%s) reported %q", g.Accel, res)
	wantResult(t, res, "MOUNT", "ok")
	wantResult(t, res, "CP", "0")
	wantResult(t, res, "RSYNC", "0")
	wantResult(t, res, "HISTORY_READ", "from-snapshot")
	if !strings.HasPrefix(res["OUTSIDE"], "denied") {
		t.Errorf("guest wrote outside its application: OUTSIDE=%q", res["OUTSIDE"])
	}
	if _, err := os.Lstat(filepath.Join(part, "local", testVM, "outside.txt")); !os.IsNotExist(err) {
		t.Errorf("outside.txt in the VM's tree: %v", err)
	}
	checkCopy(t, filepath.Join(app, "cp"), ents)
	checkCopy(t, filepath.Join(app, "rsync"), ents)

	// SIGTERM: the daemon flushes its catalog and removes the socket.
	if err := stop(); err != nil {
		t.Errorf("daemon exit after SIGTERM: %v", err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket after SIGTERM: %v, want it removed", err)
	}
	db, err := catalog.Open(filepath.Join(part, ".v2backup", "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prefix := testVM + "/" + testRelpath
	rep, err := verify.Run(ctx, verify.Options{Root: filepath.Join(part, "local"), Prefix: prefix, Walk: verify.LiveFiles(db, prefix)})
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * countRegular(ents); !rep.OK() || rep.Files < int64(want) {
		t.Errorf("daemon's catalog against the VM's tree (%d files expected): %s\n%v", want, rep.Summary(), rep.Problems)
	}
}

func countRegular(ents []srcEntry) int {
	n := 0
	for _, e := range ents {
		if e.mode.IsRegular() {
			n++
		}
	}
	return n
}
