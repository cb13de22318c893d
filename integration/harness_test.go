// Package integration tests v2backup end to end: the real binary, real FUSE
// mounts, real rsync/cp/tar, in temporary directories. Each test starts its
// own daemon and cleans up every mount and process, even when it fails.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bin is the v2backup binary built once by TestMain.
var bin string

// mountPrefix marks every mount point these tests make, so TestMain can
// sweep leftovers before and detect leaks after.
const mountPrefix = "/tmp/v2bi-"

func TestMain(m *testing.M) {
	if os.Getuid() != 0 {
		fmt.Println("integration tests need root (FUSE mounts with allow_other, chown)")
		os.Exit(1)
	}
	sweepMounts()
	dir, err := os.MkdirTemp("", "v2bi-bin-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "v2backup")
	build := exec.Command("go", "build", "-race", "-o", bin, "../cmd/v2backup")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("building v2backup:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if left := leftMounts(); len(left) > 0 {
		fmt.Println("FAIL: mounts left behind:", left)
		for _, mp := range left {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
		code = 1
	}
	os.Exit(code)
}

// ourMounts lists mount points under mountPrefix from /proc/self/mountinfo.
func ourMounts() []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], mountPrefix) {
			out = append(out, f[4])
		}
	}
	return out
}

// sweepMounts detaches mounts left by an earlier, crashed run: those whose
// daemon is gone. Live ones may belong to a run going on beside this one.
func sweepMounts() {
	for _, mp := range ourMounts() {
		var st unix.Statfs_t
		if err := unix.Statfs(mp, &st); errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED) {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
}

// roots are the directories this process's tests made: only mounts under
// them are this run's to check and clean.
var (
	rootsMu sync.Mutex
	roots   []string
)

// leftMounts lists mounts under this run's roots.
func leftMounts() []string {
	rootsMu.Lock()
	defer rootsMu.Unlock()
	var out []string
	for _, mp := range ourMounts() {
		for _, r := range roots {
			if strings.HasPrefix(mp, r+"/") {
				out = append(out, mp)
			}
		}
	}
	return out
}

// env is one test's world: a partition, mount points and an inventory.
type env struct {
	t         *testing.T
	root      string // everything lives under here
	partition string
	inventory string
	server    string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	root, err := os.MkdirTemp("/tmp", "v2bi-")
	if err != nil {
		t.Fatal(err)
	}
	rootsMu.Lock()
	roots = append(roots, root)
	rootsMu.Unlock()
	e := &env{t: t, root: root, partition: filepath.Join(root, "v01", "backup"), server: "zg-3.softxs.ch"}
	t.Cleanup(func() {
		for _, mp := range e.mounts() {
			t.Errorf("mount left behind: %s", mp)
			unix.Unmount(mp, unix.MNT_DETACH)
		}
		os.RemoveAll(root)
	})
	return e
}

// mounts lists the mounts under the env's root.
func (e *env) mounts() []string {
	var out []string
	for _, mp := range ourMounts() {
		if strings.HasPrefix(mp, e.root+"/") {
			out = append(out, mp)
		}
	}
	return out
}

// path is a path under the env's root.
func (e *env) path(elem ...string) string { return filepath.Join(append([]string{e.root}, elem...)...) }

// writeInventory writes the inventory; {root} in body stands for the env root.
func (e *env) writeInventory(body string) {
	e.t.Helper()
	e.inventory = e.path("v2backup.toml")
	text := strings.ReplaceAll(body, "{root}", e.root)
	if err := os.WriteFile(e.inventory, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// v2backup runs the binary to completion and returns its output and exit code.
func (e *env) v2backup(args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--config", e.inventory, "--server", e.server}, args...)...)
	var o, er bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &er
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running v2backup %v: %v", args, err)
	}
	return o.String(), er.String(), code
}

// daemon is a running `v2backup serve`.
type daemon struct {
	cmd    *exec.Cmd
	notify *net.UnixConn
	log    *logBuffer
	done   chan error
}

// startDaemon starts `v2backup serve` and waits for its READY=1.
func (e *env) startDaemon() *daemon {
	e.t.Helper()
	sock := e.path(fmt.Sprintf("notify-%d.sock", time.Now().UnixNano()))
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		e.t.Fatal(err)
	}
	d := &daemon{notify: conn, log: &logBuffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(bin, "--config", e.inventory, "--server", e.server, "serve")
	d.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	e.t.Cleanup(func() {
		d.stop(e.t)
		conn.Close()
		if e.t.Failed() {
			e.t.Logf("daemon log:\n%s", d.log.String())
		}
	})
	if err := d.waitFor("READY=1", 60*time.Second); err != nil {
		e.t.Fatalf("daemon not ready: %v\nlog:\n%s", err, d.log.String())
	}
	return d
}

// waitFor reads notify messages until one equals state.
func (d *daemon) waitFor(state string, timeout time.Duration) error {
	buf := make([]byte, 4096)
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("daemon exited: %v", err)
		default:
		}
		d.notify.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := d.notify.Read(buf)
		if err == nil {
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line == state {
					return nil
				}
			}
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s within %v", state, timeout)
		}
	}
}

// waitLog polls the daemon's log for a line containing substr: the log and
// the notify socket are separate channels, so READY=1 may arrive first.
func (d *daemon) waitLog(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.log.String(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("daemon never logged %q", substr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits; SIGKILL after 60 s.
func (d *daemon) stop(t *testing.T) error {
	if d.cmd.ProcessState != nil {
		return nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(60 * time.Second):
		t.Errorf("daemon did not stop within 60 s of SIGTERM; killing it")
		d.cmd.Process.Kill()
		err := <-d.done
		d.done <- err
		return err
	}
}

// kill sends SIGKILL and waits: a crash.
func (d *daemon) kill() {
	d.cmd.Process.Kill()
	err := <-d.done
	d.done <- err
}

// logBuffer collects the daemon's output; safe to read while it runs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// sh runs a shell command line (outside any daemon process) and fails the
// test with its output on error.
func sh(t *testing.T, dir, script string) string {
	t.Helper()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}
