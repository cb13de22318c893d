package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// readyMarker is created in every contender's backing work directory before
// it is mounted; seeing it through the mount proves the mount serves that
// directory (not an empty mount point).
const readyMarker = ".bench-ready"

const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 20 * time.Second
)

// contender is one way of reaching a directory on the measured disk: native
// (no FUSE) or a FUSE daemon serving its own fresh backing directory.
type contender struct {
	name string
	// work is where the workloads write, as they see it (through the mount).
	work string
	// backingWork is the same directory on the backing filesystem, used to
	// check that what a workload wrote really landed on disk.
	backingWork string
	mnt         string   // mount point ("" for native)
	argv        []string // daemon command line (nil for native)
	// sigtermFirst: the daemon's documented shutdown is SIGTERM (it unmounts
	// and flushes itself); the others are unmounted from outside.
	sigtermFirst bool
	// readyWord: the daemon prints a line starting with it on stdout once
	// mounted (mountcmd: "ready passthrough=BOOL"); readyLine keeps it.
	readyWord string
	readyLine string
	logPath   string
	// catalogPath: the daemon's catalog database ("": it has none);
	// catalogPrefix: the workloads' directory in it (VM/relpath).
	catalogPath, catalogPrefix string
	// catalogRows, catalogHashed: its file rows below catalogPrefix after
	// the daemon exited, and how many have a hash.
	catalogRows, catalogHashed int

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	log     *slog.Logger

	// readyTimeout and stopTimeout override the defaults when positive.
	readyTimeout, stopTimeout time.Duration

	// Memory of the daemon read just before it was stopped, in KiB.
	peakRSSKiB, lastRSSKiB int64
}

func (c *contender) isFUSE() bool { return c.argv != nil }

// pid returns the daemon's process id, or 0 when there is none.
func (c *contender) pid() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// start launches the daemon and waits until the mount serves the backing
// work directory. On error the daemon has been stopped again.
func (c *contender) start(ctx context.Context) error {
	if !c.isFUSE() {
		return nil
	}
	logf, err := os.Create(c.logPath)
	if err != nil {
		return fmt.Errorf("%s: daemon log: %w", c.name, err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group: a Ctrl-C in the terminal reaches only the harness,
	// which then unmounts every contender in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.log.Debug("starting daemon", "contender", c.name, "argv", c.argv)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start %s: %w", c.name, c.argv[0], err)
	}
	c.cmd = cmd
	c.done = make(chan struct{})
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	timeout := readyTimeout
	if c.readyTimeout > 0 {
		timeout = c.readyTimeout
	}
	if err := c.waitReady(ctx, timeout); err != nil {
		return errors.Join(err, c.stop())
	}
	return nil
}

// waitReady polls until the mount point is in /proc/self/mountinfo and the
// ready marker is visible through it.
func (c *contender) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return fmt.Errorf("%s: daemon exited before its mount was ready (%v); log %s: %s",
				c.name, c.waitErr, c.logPath, tail(c.logPath))
		default:
		}
		mounted, err := isMounted(c.mnt)
		if err != nil {
			return err
		}
		if mounted {
			if _, err := os.Stat(filepath.Join(c.work, readyMarker)); err == nil {
				if c.readyWord == "" {
					return nil
				}
				if c.readyLine = findLine(c.logPath, c.readyWord); c.readyLine != "" {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not ready after %v (mounted=%v, %s not visible); log %s: %s",
				c.name, c.mnt, timeout, mounted, filepath.Join(c.work, readyMarker), c.logPath, tail(c.logPath))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// stop records the daemon's memory, unmounts and waits for the daemon to
// exit, escalating from a clean unmount to a lazy one and from SIGTERM to
// SIGKILL. It returns an error if the mount is still there at the end.
func (c *contender) stop() error {
	if c.cmd == nil {
		return nil
	}
	if st, err := readProcStatus(c.pid()); err == nil {
		c.peakRSSKiB, c.lastRSSKiB = st.hwmKiB, st.rssKiB
	}
	wait := stopTimeout
	if c.stopTimeout > 0 {
		wait = c.stopTimeout
	}
	var errs []error
	if c.sigtermFirst {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		if !c.waitExit(wait) {
			errs = append(errs, fmt.Errorf("%s: daemon ignored SIGTERM for %v", c.name, wait))
		}
	}
	if mounted, _ := isMounted(c.mnt); mounted {
		if out, err := exec.Command("fusermount3", "-u", c.mnt).CombinedOutput(); err != nil {
			c.log.Warn("fusermount3 -u failed, unmounting lazily", "mnt", c.mnt, "err", err, "out", strings.TrimSpace(string(out)))
			if out, err := exec.Command("umount", "-l", c.mnt).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s: umount -l %s: %v: %s", c.name, c.mnt, err, bytes.TrimSpace(out)))
			}
		}
	}
	if !c.waitExit(wait) {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		if !c.waitExit(wait) {
			_ = c.cmd.Process.Kill()
			<-c.done
			errs = append(errs, fmt.Errorf("%s: daemon pid %d killed: it did not exit after its unmount", c.name, c.pid()))
		}
	}
	if mounted, err := isMounted(c.mnt); err != nil || mounted {
		errs = append(errs, fmt.Errorf("%s: %s still mounted after stop (%v)", c.name, c.mnt, err))
	}
	c.cmd = nil
	return errors.Join(errs...)
}

func (c *contender) waitExit(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// findLine returns the first line of file starting with word, or "".
func findLine(path, word string) string {
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, word) {
			return line
		}
	}
	return ""
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return string(b)
}

// isMounted reports whether path is a mount point in /proc/self/mountinfo.
func isMounted(path string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	return mountinfoHas(f, path)
}

// mountinfoHas reports whether the mountinfo text r lists mount point path.
func mountinfoHas(r io.Reader, path string) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			return false, fmt.Errorf("mountinfo line %d: %d fields, want at least 5: %q", n, len(fields), sc.Text())
		}
		if unescapeMountinfo(fields[4]) == path {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space…).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

type procStatus struct {
	rssKiB, hwmKiB int64
}

// readProcStatus reads VmRSS and VmHWM (peak RSS) of a process.
func readProcStatus(pid int) (procStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, err
	}
	return parseProcStatus(b)
}

func parseProcStatus(b []byte) (procStatus, error) {
	var st procStatus
	var haveRSS, haveHWM bool
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return st, fmt.Errorf("/proc status: %s: unexpected value %q", key, val)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return st, fmt.Errorf("/proc status: %s: %w", key, err)
		}
		if key == "VmRSS" {
			st.rssKiB, haveRSS = n, true
		} else {
			st.hwmKiB, haveHWM = n, true
		}
	}
	if !haveRSS || !haveHWM {
		return st, errors.New("/proc status: no VmRSS/VmHWM (kernel thread or zombie?)")
	}
	return st, nil
}

// cpuTicks returns utime+stime of a process, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatTicks(b)
}

func parseStatTicks(b []byte) (int64, error) {
	// comm (field 2) may hold spaces and parentheses: fields restart after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat: no ')' in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after comm, want at least 13", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc stat: utime/stime: %w", err)
	}
	return u + s, nil
}

// settle waits until none of the daemons has used CPU for quiet, and
// returns how long after the call the last one was still busy: work the
// daemon did off the request path (v2backup hashes closed files) after the
// timed command had returned. Polling stops at limit.
func settle(ctx context.Context, pids []int, quiet, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	last := int64(-1)
	lastChange := start
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		var total int64
		for _, pid := range pids {
			t, err := cpuTicks(pid)
			if err != nil {
				return 0, fmt.Errorf("settle: pid %d: %w", pid, err)
			}
			total += t
		}
		now := time.Now()
		if total != last {
			if last >= 0 {
				lastChange = now
			}
			last = total
		}
		if now.Sub(lastChange) >= quiet {
			return lastChange.Sub(start), nil
		}
		if now.Sub(start) >= limit {
			return limit, fmt.Errorf("settle: daemons still busy after %v", limit)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
}
