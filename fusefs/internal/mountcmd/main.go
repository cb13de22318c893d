// Command mountcmd mounts one VM filesystem in its own process, for tests
// and benchmarks that run real tools (cp, rsync, tar) against a mount: a
// process serving a FUSE mount must not fork programs that use it.
//
//	mountcmd -mountpoint DIR -local-root DIR -vm NAME -app hydro=demo.softxs.ch/hydro ...
//
// It prints "ready passthrough=BOOL" on stdout once mounted, serves until
// SIGTERM or SIGINT, then unmounts and exits 0. Exit status 1: bad flags
// or mount failure; 2: unmount failure.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/softxs/v2backup/fusefs"
)

type appFlags []fusefs.App

func (a *appFlags) String() string { return fmt.Sprint(*a) }

func (a *appFlags) Set(s string) error {
	name, rel, ok := strings.Cut(s, "=")
	if !ok || name == "" || rel == "" {
		return fmt.Errorf("want name=relpath, got %q", s)
	}
	*a = append(*a, fusefs.App{Name: name, Relpath: rel})
	return nil
}

// eventLog is a Recorder writing one tab-separated line per event.
type eventLog struct {
	mu sync.Mutex
	w  *bufio.Writer
	f  *os.File
}

func (e *eventLog) line(fields ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.w.WriteString(strings.Join(fields, "\t") + "\n")
}

func (e *eventLog) Written(app, path string)     { e.line("written", app, path) }
func (e *eventLog) Removed(app, path string)     { e.line("removed", app, path) }
func (e *eventLog) Renamed(app, from, to string) { e.line("renamed", app, from, to) }

func (e *eventLog) close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.w.Flush(); err != nil {
		return err
	}
	return e.f.Close()
}

func main() {
	var apps appFlags
	mountpoint := flag.String("mountpoint", "", "where to mount")
	localRoot := flag.String("local-root", "", "{partition}/local")
	vm := flag.String("vm", "", "VM name")
	debug := flag.Bool("debug", false, "trace the FUSE protocol")
	noPT := flag.Bool("no-passthrough", false, "serve all data through the daemon")
	ttl := flag.Duration("ttl", 0, "kernel cache timeout (0: default)")
	events := flag.String("events", "", "append Recorder events to this file")
	verbose := flag.Bool("v", false, "log at debug level")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the daemon to this file")
	flag.Var(&apps, "app", "application as name=relpath (repeatable)")
	flag.Parse()
	if *mountpoint == "" || *localRoot == "" || *vm == "" {
		fmt.Fprintln(os.Stderr, "mountcmd: -mountpoint, -local-root and -vm are required")
		os.Exit(1)
	}
	level := slog.LevelInfo
	if *verbose || *debug {
		level = slog.LevelDebug
	}
	lg := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg := fusefs.Config{VM: *vm, LocalRoot: *localRoot, Apps: apps, Logger: lg, Debug: *debug,
		CacheTTL: *ttl, NoPassthrough: *noPT}
	var ev *eventLog
	if *events != "" {
		f, err := os.OpenFile(*events, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mountcmd:", err)
			os.Exit(1)
		}
		ev = &eventLog{w: bufio.NewWriter(f), f: f}
		cfg.Recorder = ev
	}
	if err := fusefs.RecoverStale(*mountpoint); err != nil {
		fmt.Fprintln(os.Stderr, "mountcmd:", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	m, err := fusefs.MountVM(*mountpoint, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mountcmd:", err)
		os.Exit(1)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mountcmd: cpuprofile:", err)
			m.Unmount()
			os.Exit(1)
		}
		defer f.Close()
	}
	fmt.Printf("ready passthrough=%v\n", m.Passthrough())
	s := <-sigs
	lg.Info("mountcmd: unmounting", "signal", s.String())
	if *cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	start := time.Now()
	status := 0
	if err := m.Unmount(); err != nil {
		fmt.Fprintln(os.Stderr, "mountcmd:", err)
		status = 2
	}
	if ev != nil {
		if err := ev.close(); err != nil {
			fmt.Fprintln(os.Stderr, "mountcmd: events:", err)
			status = 2
		}
	}
	lg.Info("mountcmd: done", "took", time.Since(start))
	os.Exit(status)
}
