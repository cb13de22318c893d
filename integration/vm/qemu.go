package vm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config describes one guest boot.
type Config struct {
	Kernel Kernel
	Initrd string
	// Dir receives the serial log (serial-N.log, one per boot).
	Dir string
	// VhostSocket attaches a vhost-user-fs-pci device (tag Tag) to the
	// daemon's socket when set.
	VhostSocket string
	Tag         string // default "backup"
	// NinePDir attaches QEMU's own 9p share of that host directory, mount
	// tag "p9", when set.
	NinePDir  string
	MemoryMiB int    // default 512
	CPUs      int    // default 1
	Append    string // extra kernel command line
	// Accel is "kvm" or "tcg"; Boot chooses when empty.
	Accel string
}

// Guest is a running QEMU.
type Guest struct {
	Serial string // path of the serial console log
	Args   []string
	Accel  string // the accelerator it runs with

	cmd    *exec.Cmd
	stderr bytes.Buffer
	exited chan struct{}
	once   sync.Once
}

var bootCount struct {
	sync.Mutex
	n int
}

// QEMUBinary returns qemu-system-x86_64's path or an error that says what
// to install.
func QEMUBinary() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", fmt.Errorf("qemu-system-x86_64 not found: install qemu-system-x86 (.ci/install-deps): %w", err)
	}
	return p, nil
}

// Boot starts the guest like Start. With cfg.Accel empty it takes
// $V2BACKUP_QEMU_ACCEL, else tries KVM and falls back to TCG (-cpu max)
// when KVM cannot boot the guest: on machines like the CI's, /dev/kvm
// exists but QEMU aborts on it (nested virtualisation, "failed to set
// MSR"), or it starts and the guest never prints a line.
func Boot(cfg Config) (*Guest, error) {
	if cfg.Accel == "" {
		cfg.Accel = os.Getenv("V2BACKUP_QEMU_ACCEL")
	}
	if cfg.Accel != "" {
		return Start(cfg)
	}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		cfg.Accel = "kvm"
		g, err := Start(cfg)
		if err != nil {
			return nil, err
		}
		if g.waitOutput(20 * time.Second) {
			return g, nil
		}
		g.Kill()
	}
	cfg.Accel = "tcg"
	return Start(cfg)
}

// waitOutput reports whether the guest printed anything before QEMU
// exited or timeout passed.
func (g *Guest) waitOutput(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if fi, err := os.Stat(g.Serial); err == nil && fi.Size() > 0 {
			return true
		}
		select {
		case <-g.exited:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// Start boots the guest with cfg.Accel. The caller must Kill it (t.Cleanup): QEMU does
// not exit on guest poweroff while a vhost-user-fs device is attached.
func Start(cfg Config) (*Guest, error) {
	qemu, err := QEMUBinary()
	if err != nil {
		return nil, err
	}
	if cfg.Tag == "" {
		cfg.Tag = "backup"
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 512
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	bootCount.Lock()
	bootCount.n++
	n := bootCount.n
	bootCount.Unlock()
	serial := filepath.Join(cfg.Dir, fmt.Sprintf("serial-%d.log", n))
	if err := os.WriteFile(serial, nil, 0o644); err != nil {
		return nil, err
	}

	mem := strconv.Itoa(cfg.MemoryMiB)
	args := []string{
		"-nodefaults", "-display", "none", "-monitor", "none",
		"-machine", "q35", "-smp", strconv.Itoa(cfg.CPUs),
		"-m", mem,
		// vhost-user needs guest RAM in a shareable fd.
		"-object", "memory-backend-memfd,id=mem,size=" + mem + "M,share=on",
		"-numa", "node,memdev=mem",
		"-serial", "file:" + serial,
		"-kernel", cfg.Kernel.Image,
		"-initrd", cfg.Initrd,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 quiet loglevel=4 " + cfg.Append),
	}
	switch cfg.Accel {
	case "kvm":
		args = append(args, "-accel", "kvm", "-cpu", "host")
	case "tcg":
		args = append(args, "-accel", "tcg", "-cpu", "max")
	default:
		return nil, fmt.Errorf("qemu accel %q: want kvm or tcg", cfg.Accel)
	}
	if _, err := os.Stat(cfg.Initrd); err != nil {
		return nil, fmt.Errorf("initrd: %w", err)
	}
	if cfg.VhostSocket != "" {
		args = append(args,
			"-chardev", "socket,id=char0,path="+cfg.VhostSocket,
			"-device", "vhost-user-fs-pci,queue-size=1024,chardev=char0,tag="+cfg.Tag)
	}
	if cfg.NinePDir != "" {
		args = append(args, "-virtfs",
			"local,path="+cfg.NinePDir+",mount_tag=p9,security_model=passthrough,id=p9")
	}

	g := &Guest{Serial: serial, Args: append([]string{qemu}, args...), Accel: cfg.Accel, exited: make(chan struct{})}
	g.cmd = exec.Command(qemu, args...)
	g.cmd.Stderr = &g.stderr
	g.cmd.Stdout = &g.stderr
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", qemu, err)
	}
	go func() {
		g.cmd.Wait()
		close(g.exited)
	}()
	return g, nil
}

// Log returns the serial console output so far.
func (g *Guest) Log() string {
	b, _ := os.ReadFile(g.Serial)
	return string(b)
}

// Exited reports whether QEMU has exited.
func (g *Guest) Exited() bool {
	select {
	case <-g.exited:
		return true
	default:
		return false
	}
}

// WaitFor polls the serial log until it contains marker, QEMU exits, or
// timeout passes; the error then carries the log and QEMU's stderr.
func (g *Guest) WaitFor(marker string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(g.Log(), marker) {
			return nil
		}
		select {
		case <-g.exited:
			if strings.Contains(g.Log(), marker) {
				return nil
			}
			return g.fail(fmt.Errorf("qemu exited (%v) before %q", g.cmd.ProcessState, marker))
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return g.fail(fmt.Errorf("%q not seen within %v", marker, timeout))
		}
	}
}

func (g *Guest) fail(err error) error {
	log := g.Log()
	if len(log) > 6000 {
		log = "...\n" + log[len(log)-6000:]
	}
	return fmt.Errorf("%w\n--- serial console (%s) ---\n%s\n--- qemu stderr ---\n%s\n--- command ---\n%s",
		err, g.Serial, log, g.stderrText(), strings.Join(g.Args, " "))
}

func (g *Guest) stderrText() string {
	select {
	case <-g.exited:
		return g.stderr.String()
	default:
		return "(qemu still running)"
	}
}

// Kill ends QEMU with SIGKILL and waits for it; safe to call twice.
func (g *Guest) Kill() {
	g.once.Do(func() {
		if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return
		}
		<-g.exited
	})
}

// Results returns the "KEY=VALUE" lines the guest printed with prefix
// (e.g. "V2B "), keyed by KEY.
func Results(log, prefix string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(log, "\n") {
		line = strings.TrimRight(line, "\r")
		i := strings.Index(line, prefix)
		if i < 0 {
			continue
		}
		k, v, ok := strings.Cut(line[i+len(prefix):], "=")
		if ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}
