// Command mountcmd mounts one VM filesystem in its own process, for tests
// and benchmarks that run real tools (cp, rsync, tar) against a mount: a
// process serving a FUSE mount must not fork programs that use it.
//
//	mountcmd -mountpoint DIR -local-root DIR -vm NAME -app hydro=demo.softxs.ch/hydro ...
//
// It prints "ready passthrough=BOOL transport=T" on stdout once mounted, serves until
// SIGTERM or SIGINT, then unmounts and exits 0. Exit status 1: bad flags
// or mount failure; 2: unmount failure.
//
// -catalog FILE records written files in a real catalog (catalog.Open and
// catalog.NewRecorder over -local-root), which the recorder hashes off the
// request path; it is closed (queue drained) after the unmount.
// -stats prints one line per FUSE opcode on stderr at exit:
// "stats OP COUNT SECONDS" (requests answered, time spent in handlers),
// then "stats end"; SIGUSR1 prints the same counters so far.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/fusefs"
	"github.com/softxs/v2backup/fusefs/memlimit"
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
	noURing := flag.Bool("no-uring", false, "serve requests through /dev/fuse even where the kernel offers io_uring")
	ttl := flag.Duration("ttl", 0, "kernel cache timeout (0: default)")
	events := flag.String("events", "", "append Recorder events to this file")
	verbose := flag.Bool("v", false, "log at debug level")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the daemon to this file")
	memprofile := flag.String("memprofile", "", "write a heap profile to this file on SIGTERM, before unmounting")
	catalogPath := flag.String("catalog", "", "record written files (hashed) in this catalog database")
	maxInodes := flag.Int("max-file-inodes", 0, "file inodes the kernel may remember (0: fusefs default, -1: no cap)")
	stats := flag.Bool("stats", false, "print per-opcode request counts and handler time on stderr at exit")
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
	// As serve does: the benchmark reads this process's resident memory.
	memlimit.Keep(context.Background(), memlimit.Default, memlimit.Interval, lg)
	cfg := fusefs.Config{VM: *vm, LocalRoot: *localRoot, Apps: apps, Logger: lg, Debug: *debug,
		CacheTTL: *ttl, NoPassthrough: *noPT, NoURing: *noURing, Stats: *stats, MaxFileInodes: *maxInodes}
	if *events != "" && *catalogPath != "" {
		fmt.Fprintln(os.Stderr, "mountcmd: -events and -catalog are exclusive (one Recorder per mount)")
		os.Exit(1)
	}
	var ev *eventLog
	var db *catalog.DB
	var rec *catalog.Recorder
	if *catalogPath != "" {
		// The recorder opens the local root; the mount would create it.
		err := os.MkdirAll(*localRoot, 0o755)
		if err == nil {
			db, err = catalog.Open(*catalogPath, catalog.WithLogger(lg))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mountcmd:", err)
			os.Exit(1)
		}
		rec, err = catalog.NewRecorder(db, *localRoot, catalog.RecorderOptions{})
		if err != nil {
			db.Close()
			fmt.Fprintln(os.Stderr, "mountcmd:", err)
			os.Exit(1)
		}
		cfg.Recorder = rec
	}
	closeCatalog := func() error {
		if rec == nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		err := rec.Close(ctx)
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		return err
	}
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
		closeCatalog()
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
			closeCatalog()
			os.Exit(1)
		}
		defer f.Close()
	}
	if *stats {
		// SIGUSR1 prints the counters so far (a benchmark marks phases).
		// Caught before "ready": a SIGUSR1 sent right after it must not
		// meet the default action, which kills the process.
		usr := make(chan os.Signal, 1)
		signal.Notify(usr, syscall.SIGUSR1)
		go func() {
			for range usr {
				printStats(m)
			}
		}()
	}
	fmt.Printf("ready passthrough=%v transport=%s\n", m.Passthrough(), m.Transport())
	s := <-sigs
	lg.Info("mountcmd: unmounting", "signal", s.String())
	if *cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	if *memprofile != "" {
		if err := writeHeapProfile(*memprofile); err != nil {
			fmt.Fprintln(os.Stderr, "mountcmd: memprofile:", err)
		}
	}
	start := time.Now()
	status := 0
	if err := m.Unmount(); err != nil {
		fmt.Fprintln(os.Stderr, "mountcmd:", err)
		status = 2
	}
	printStats(m)
	if err := closeCatalog(); err != nil {
		fmt.Fprintln(os.Stderr, "mountcmd: catalog:", err)
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

// writeHeapProfile writes the live heap (after a collection) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printStats writes the mount's request counters on stderr, then "stats end".
func printStats(m *fusefs.Mount) {
	st := m.Stats()
	if st == nil {
		return
	}
	var b strings.Builder
	for _, o := range st {
		fmt.Fprintf(&b, "stats %s %d %.6f\n", o.Op, o.Count, o.Time.Seconds())
	}
	live, pruned := m.FileInodes()
	fmt.Fprintf(&b, "inodes live %d pruned %d\n", live, pruned)
	b.WriteString("stats end\n")
	os.Stderr.WriteString(b.String())
}
