package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMountinfoHas(t *testing.T) {
	const info = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
99 22 0:50 / /var/tmp/a\040b rw,nosuid,nodev shared:60 - fuse.loopback /x rw,user_id=0
`
	for path, want := range map[string]bool{"/": true, "/var/tmp/a b": true, "/var/tmp/a": false, "/var/tmp/a\\040b": false} {
		got, err := mountinfoHas(strings.NewReader(info), path)
		if err != nil || got != want {
			t.Errorf("mountinfoHas(%q) = %v, %v; want %v", path, got, err, want)
		}
	}
	if _, err := mountinfoHas(strings.NewReader("1 2 3\n"), "/"); err == nil || !strings.Contains(err.Error(), "mountinfo line 1") {
		t.Errorf("malformed mountinfo: %v", err)
	}
	if got := unescapeMountinfo(`a\011b\\c\0`); got != "a\tb\\\\c\\0" {
		t.Errorf("unescape: %q", got)
	}
	if ok, err := isMounted("/"); !ok || err != nil {
		t.Errorf("isMounted(/) = %v, %v", ok, err)
	}
}

func TestParseProcStatus(t *testing.T) {
	st, err := parseProcStatus([]byte("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"))
	if err != nil || st.rssKiB != 1024 || st.hwmKiB != 2048 {
		t.Errorf("parse: %+v %v", st, err)
	}
	for in, want := range map[string]string{
		"Name:\tkthreadd\n":                    "no VmRSS/VmHWM",
		"VmHWM:\t1 MB\nVmRSS:\t1 kB\n":         `VmHWM: unexpected value`,
		"VmHWM:\tx kB\nVmRSS:\t1 kB\n":         "VmHWM: strconv",
		"VmRSS:\t1 kB\n":                       "no VmRSS/VmHWM",
		"VmHWM:\t99999999999999999999 kB\nVmR": "value out of range",
	} {
		if _, err := parseProcStatus([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseProcStatus(%q) = %v, want %q", in, err, want)
		}
	}
	if st, err := readProcStatus(os.Getpid()); err != nil || st.rssKiB <= 0 || st.hwmKiB < st.rssKiB {
		t.Errorf("own status: %+v %v", st, err)
	}
	if _, err := readProcStatus(-1); err == nil {
		t.Error("readProcStatus(-1) succeeded")
	}
}

func TestParseStatTicks(t *testing.T) {
	line := "123 (a) b (c)) S 1 1 1 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 1 1 1"
	if n, err := parseStatTicks([]byte(line)); err != nil || n != 12 {
		t.Errorf("parseStatTicks = %d, %v; want 12", n, err)
	}
	for in, want := range map[string]string{
		"123 comm S 1":                       "no ')'",
		"1 (x) S 1 2 3":                      "fields after comm",
		"1 (x) S 1 1 1 0 -1 0 0 0 0 0 u 5 0": "utime/stime",
	} {
		if _, err := parseStatTicks([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseStatTicks(%q) = %v, want %q", in, err, want)
		}
	}
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Error(err)
	}
}

// startChild starts a shell script that the test kills at cleanup.
func startChild(t *testing.T, script string) int {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

func TestSettle(t *testing.T) {
	ctx := context.Background()
	// Busy for a while, then idle: settle sees the busy part.
	busy := startChild(t, "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec sleep 600")
	d, err := settle(ctx, []int{busy}, 300*time.Millisecond, time.Minute)
	if err != nil || d <= 0 {
		t.Errorf("busy then idle: %v, %v; want a positive busy time", d, err)
	}
	// Always busy: settle gives up at its limit.
	spin := startChild(t, "while :; do :; done")
	if _, err := settle(ctx, []int{spin}, 300*time.Millisecond, 500*time.Millisecond); err == nil || !strings.Contains(err.Error(), "still busy") {
		t.Errorf("spinning child: %v", err)
	}
	if _, err := settle(ctx, []int{-1}, time.Second, time.Second); err == nil || !strings.Contains(err.Error(), "pid -1") {
		t.Errorf("missing pid: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := settle(cctx, []int{spin}, time.Minute, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestContender(t *testing.T, argv []string) *contender {
	t.Helper()
	dir := t.TempDir()
	c := &contender{name: "test", mnt: filepath.Join(dir, "mnt"), argv: argv, log: testLogger(), logPath: filepath.Join(dir, "log")}
	c.work = c.mnt
	if err := os.Mkdir(c.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func TestContenderDaemonExitsEarly(t *testing.T) {
	c := newTestContender(t, []string{"sh", "-c", "echo broken config >&2; exit 3"})
	err := c.start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exited before its mount was ready") || !strings.Contains(err.Error(), "broken config") {
		t.Errorf("start: %v", err)
	}
	if c.cmd != nil {
		t.Error("daemon not reaped")
	}
}

func TestContenderNeverReady(t *testing.T) {
	c := newTestContender(t, []string{"sleep", "600"})
	c.readyTimeout, c.stopTimeout = 200*time.Millisecond, 200*time.Millisecond
	err := c.start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not ready after 200ms (mounted=false") {
		t.Errorf("start: %v", err)
	}
	// start stopped it, escalating to SIGTERM: sleep is not a mount and
	// does not exit on its own.
	if ws, ok := c.waitErr.(*exec.ExitError); !ok || ws.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("daemon ended with %v, want SIGTERM", c.waitErr)
	}
	if c.cmd != nil {
		t.Error("daemon not reaped")
	}

	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.start(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled start: %v", err)
	}
}

func TestContenderIgnoresSIGTERM(t *testing.T) {
	c := newTestContender(t, []string{"sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"})
	c.readyTimeout, c.stopTimeout = 100*time.Millisecond, 100*time.Millisecond
	c.sigtermFirst = true
	err := c.start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "daemon ignored SIGTERM") || !strings.Contains(err.Error(), "killed") {
		t.Errorf("start: %v", err)
	}
}

func TestContenderStartErrors(t *testing.T) {
	c := newTestContender(t, []string{"/nonexistent/daemon"})
	if err := c.start(context.Background()); err == nil || !strings.Contains(err.Error(), "start /nonexistent/daemon") {
		t.Errorf("missing binary: %v", err)
	}
	c = newTestContender(t, []string{"true"})
	c.logPath = filepath.Join(t.TempDir(), "missing", "log")
	if err := c.start(context.Background()); err == nil || !strings.Contains(err.Error(), "daemon log") {
		t.Errorf("unwritable log: %v", err)
	}
	if !strings.Contains(tail(c.logPath), "unreadable") {
		t.Error("tail of a missing log")
	}
}

// TestContenderLoopback mounts a real FUSE daemon, go-fuse's example/loopback,
// and checks readiness, that the mount serves the backing directory, the
// peak RSS reading and a clean unmount.
func TestContenderLoopback(t *testing.T) {
	requireFUSE(t)
	bin, backing := buildLoopback(t)
	c := newTestContender(t, []string{bin, "-q", "MNT", backing})
	startContender(t, c)
	if err := os.WriteFile(filepath.Join(c.mnt, "through"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(backing, "through")); err != nil || string(b) != "x" {
		t.Errorf("write through the mount: %q %v", b, err)
	}
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
	if c.peakRSSKiB <= 0 || c.lastRSSKiB <= 0 {
		t.Errorf("RSS not recorded: %d %d", c.peakRSSKiB, c.lastRSSKiB)
	}
	if mounted, err := isMounted(c.mnt); mounted || err != nil {
		t.Errorf("still mounted: %v %v", mounted, err)
	}
	if c.waitErr != nil {
		t.Errorf("loopback exited with %v after fusermount3 -u: %s", c.waitErr, tail(c.logPath))
	}
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root to mount FUSE filesystems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("SKIP: no /dev/fuse: %v", err)
	}
}

// buildLoopback builds go-fuse's example/loopback and a backing directory
// holding the ready marker.
func buildLoopback(t *testing.T) (bin, backing string) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), "loopback")
	if err := goBuild(context.Background(), ".", bin, "github.com/hanwen/go-fuse/v2/example/loopback"); err != nil {
		t.Fatal(err)
	}
	backing = t.TempDir()
	if err := os.WriteFile(filepath.Join(backing, readyMarker), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return bin, backing
}

// startContender puts the mount point into the daemon's argv and starts it.
func startContender(t *testing.T, c *contender) {
	t.Helper()
	for i, a := range c.argv {
		if a == "MNT" {
			c.argv[i] = c.mnt
		}
	}
	if err := c.start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestContenderBusyMount: when fusermount3 -u fails because a process still
// uses the mount, stop detaches it lazily (umount -l) and ends the daemon.
func TestContenderBusyMount(t *testing.T) {
	requireFUSE(t)
	bin, backing := buildLoopback(t)
	c := newTestContender(t, []string{bin, "-q", "MNT", backing})
	c.stopTimeout = 500 * time.Millisecond
	var logged strings.Builder
	c.log = slog.New(slog.NewTextHandler(&logged, nil))
	startContender(t, c)
	// A process whose working directory is in the mount keeps it busy.
	user := exec.Command("sleep", "600")
	user.Dir = c.mnt
	if err := user.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = user.Process.Kill()
		_ = user.Wait()
	})
	err := c.stop()
	if mounted, merr := isMounted(c.mnt); mounted || merr != nil {
		t.Errorf("still mounted after stop: %v %v", mounted, merr)
	}
	// The lazily detached mount lives on while sleep uses it, so the daemon
	// may have had to be killed; nothing else may go wrong.
	if err != nil && !strings.Contains(err.Error(), "killed") {
		t.Errorf("stop of a busy mount: %v", err)
	}
	if c.cmd != nil {
		t.Error("daemon not reaped")
	}
	if !strings.Contains(logged.String(), "fusermount3 -u failed, unmounting lazily") {
		t.Errorf("fusermount3 -u did not fail on a busy mount; log:\n%s", logged.String())
	}
}
