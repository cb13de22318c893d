package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	settleQuiet = 300 * time.Millisecond
	settleLimit = 2 * time.Minute
)

// sample is one timed run of one workload on one contender.
type sample struct {
	Round   int     `json:"round"`
	Seconds float64 `json:"seconds"`
	// SettleSeconds: how long the daemon kept using CPU after the command
	// returned (work off the request path, such as hashing for the catalog).
	SettleSeconds float64 `json:"settle_seconds"`
	// CatalogSeconds (rsync on v2backup): from the command's end until
	// every copied file has a hash in the daemon's catalog.
	CatalogSeconds float64 `json:"catalog_seconds,omitempty"`
}

// catalogLimit bounds the wait for the catalog; the target is 5 s.
const catalogLimit = 5 * time.Minute

// rssResult is the small-files memory check on the v2backup mount.
type rssResult struct {
	Files         int     `json:"files"`
	Seconds       float64 `json:"seconds"`
	SettleSeconds float64 `json:"settle_seconds"`
	RSSBeforeKiB  int64   `json:"rss_before_kib"`
	RSSAfterKiB   int64   `json:"rss_after_kib"`
	PeakRSSKiB    int64   `json:"peak_rss_kib"`
}

// results is everything a run measured.
type results struct {
	cfg        config
	src        treeStats
	workloads  []*workload
	contenders []*contender
	samples    map[string]map[string][]sample // workload -> contender -> per round
	rss        *rssResult
	versions   map[string]string
	started    time.Time
	elapsed    time.Duration
}

// run sets everything up, runs the rounds, tears everything down and prints
// the report. Mounts are always unmounted before it returns.
func run(ctx context.Context, cfg config, out io.Writer, log *slog.Logger) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it mounts filesystems and drops cached pages")
	}
	if err := checkTools(cfg); err != nil {
		return err
	}
	root, err := os.MkdirTemp(cfg.dir, "v2backup-bench-")
	if err != nil {
		return fmt.Errorf("-dir: %w", err)
	}
	log.Info("bench directory", "dir", root)
	res := &results{cfg: cfg, samples: map[string]map[string][]sample{}, started: time.Now()}
	cleanRemove := true
	defer func() {
		// Never remove the tree while something may still be mounted in it.
		if cfg.keep || !cleanRemove {
			log.Info("kept bench directory", "dir", root)
			return
		}
		if rmErr := os.RemoveAll(root); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("removing %s: %w", root, rmErr))
		}
	}()

	bins, err := buildBinaries(ctx, cfg, filepath.Join(root, "bin"), log)
	if err != nil {
		return err
	}
	log.Info("staging source tree", "src", cfg.src, "files", cfg.treeFiles)
	src, err := stageSource(ctx, cfg.src, filepath.Join(root, "src"), cfg.treeFiles)
	if err != nil {
		return err
	}
	res.src = src.stats
	log.Info("source tree", "stats", src.stats.String())
	res.versions = toolVersions(cfg)

	for _, name := range cfg.contenders {
		c, err := newContender(cfg, name, root, bins, log)
		if err != nil {
			return err
		}
		res.contenders = append(res.contenders, c)
	}
	defer func() {
		var errs []error
		for i := len(res.contenders) - 1; i >= 0; i-- {
			errs = append(errs, res.contenders[i].stop())
		}
		if stopErr := errors.Join(errs...); stopErr != nil {
			cleanRemove = false
			err = errors.Join(err, stopErr)
		}
	}()
	for _, c := range res.contenders {
		log.Info("mounting", "contender", c.name, "mnt", c.mnt)
		if err := c.start(ctx); err != nil {
			return err
		}
	}

	res.workloads = buildWorkloads(cfg, src)
	if err := runRounds(ctx, res, log); err != nil {
		return err
	}
	if cfg.rssFiles > 0 {
		if c := res.find(nameV2backup); c != nil {
			if res.rss, err = runRSS(ctx, c, cfg.rssFiles, log); err != nil {
				return err
			}
		}
	}
	var errs []error
	for i := len(res.contenders) - 1; i >= 0; i-- {
		errs = append(errs, res.contenders[i].stop())
	}
	if err := errors.Join(errs...); err != nil {
		cleanRemove = false
		return err
	}
	for _, c := range res.contenders {
		if c.catalogPath == "" {
			continue
		}
		if c.catalogRows, c.catalogHashed, err = catalogCounts(ctx, c.catalogPath, c.catalogPrefix); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		// Only the live trees: earlier rounds' copies were moved aside.
		oldRows, oldHashed, err := catalogCounts(ctx, c.catalogPath, c.catalogPrefix+"/"+oldDir)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		c.catalogRows -= oldRows
		c.catalogHashed -= oldHashed
	}
	res.elapsed = time.Since(res.started)
	rep := buildReport(res)
	rep.print(out)
	if cfg.jsonPath != "" {
		if err := rep.writeJSON(cfg.jsonPath); err != nil {
			return err
		}
		log.Info("wrote JSON results", "file", cfg.jsonPath)
	}
	return nil
}

func (r *results) find(name string) *contender {
	for _, c := range r.contenders {
		if c.name == name {
			return c
		}
	}
	return nil
}

// rotate returns list shifted left by n, so each round starts with a
// different contender and none always runs on a cache its predecessor warmed.
func rotate[T any](list []T, n int) []T {
	if len(list) == 0 {
		return nil
	}
	n %= len(list)
	return append(append([]T(nil), list[n:]...), list[:n]...)
}

func runRounds(ctx context.Context, res *results, log *slog.Logger) error {
	for round := 0; round < res.cfg.rounds; round++ {
		order := rotate(res.contenders, round)
		for _, w := range res.workloads {
			if w.roundSetup != nil {
				if err := w.roundSetup(ctx); err != nil {
					return fmt.Errorf("round %d, %s setup: %w", round+1, w.name, err)
				}
			}
			for _, c := range order {
				s, err := runOne(ctx, w, c, round, log)
				if err != nil {
					return fmt.Errorf("round %d, workload %s, contender %s: %w", round+1, w.name, c.name, err)
				}
				if res.samples[w.name] == nil {
					res.samples[w.name] = map[string][]sample{}
				}
				res.samples[w.name][c.name] = append(res.samples[w.name][c.name], s)
			}
		}
	}
	return nil
}

func runOne(ctx context.Context, w *workload, c *contender, round int, log *slog.Logger) (sample, error) {
	if w.prepare != nil {
		if err := w.prepare(ctx, c); err != nil {
			return sample{}, fmt.Errorf("prepare: %w", err)
		}
	}
	// Dirty pages left by earlier work must not be written back on this
	// command's clock, nor the daemon still be busy with earlier work.
	syscall.Sync()
	if pid := c.pid(); pid != 0 {
		if _, err := settle(ctx, []int{pid}, settleQuiet, settleLimit); err != nil {
			if ctx.Err() != nil {
				return sample{}, err
			}
			// Measure anyway: one restless daemon should not void a long run.
			log.Warn("daemon still busy before a timed command", "contender", c.name, "workload", w.name, "err", err)
		}
	}
	hashWait := w.name == wlRsync && c.catalogPath != ""
	prefix := c.catalogPrefix + "/" + rsyncDir
	if hashWait {
		// The previous round's rows must be gone, or they would count.
		if _, err := waitCatalog(ctx, c.catalogPath, prefix, catalogLimit, "the previous copy's rows to go",
			func(rows, _ int) bool { return rows == 0 }); err != nil {
			return sample{}, err
		}
	}
	if w.cold != nil {
		if err := dropCaches(w.cold(c)); err != nil {
			return sample{}, err
		}
	}
	ex, err := execTimed(ctx, w.argv(c))
	if err != nil {
		return sample{}, err
	}
	s := sample{Round: round + 1, Seconds: ex.elapsed.Seconds()}
	if hashWait {
		want := w.files
		lag, err := waitCatalog(ctx, c.catalogPath, prefix, catalogLimit, fmt.Sprintf("%d hashed files", want),
			func(rows, hashed int) bool { return hashed >= want })
		if err != nil {
			return s, err
		}
		s.CatalogSeconds = lag.Seconds()
	}
	if pid := c.pid(); pid != 0 {
		busy, err := settle(ctx, []int{pid}, settleQuiet, settleLimit)
		if err != nil {
			log.Warn("daemon did not settle", "contender", c.name, "workload", w.name, "err", err)
		}
		s.SettleSeconds = busy.Seconds()
	}
	if err := w.verify(c, ex); err != nil {
		return s, fmt.Errorf("verify: %w", err)
	}
	log.Info("timed", "round", round+1, "workload", w.name, "contender", c.name,
		"seconds", fmt.Sprintf("%.3f", s.Seconds), "settle", fmt.Sprintf("%.3f", s.SettleSeconds))
	return s, nil
}

// runRSS writes n small files through the v2backup mount and reads the
// daemon's resident memory afterwards.
func runRSS(ctx context.Context, c *contender, n int, log *slog.Logger) (*rssResult, error) {
	before, err := readProcStatus(c.pid())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	log.Info("writing small files through one mount", "contender", c.name, "files", n)
	dir := filepath.Join(c.work, "many")
	start := time.Now()
	if err := writeSmallFiles(ctx, dir, n); err != nil {
		return nil, fmt.Errorf("%s: small files: %w", c.name, err)
	}
	r := &rssResult{Files: n, Seconds: time.Since(start).Seconds(), RSSBeforeKiB: before.rssKiB}
	syscall.Sync()
	busy, err := settle(ctx, []int{c.pid()}, settleQuiet, 10*time.Minute)
	if err != nil {
		log.Warn("daemon did not settle after the small files", "contender", c.name, "err", err)
	}
	r.SettleSeconds = busy.Seconds()
	after, err := readProcStatus(c.pid())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	r.RSSAfterKiB, r.PeakRSSKiB = after.rssKiB, after.hwmKiB
	st, err := statTree(filepath.Join(c.backingWork, "many"))
	if err != nil {
		return nil, err
	}
	if st.Files != n {
		return nil, fmt.Errorf("%s: %d small files written, backing %s has %d", c.name, n, filepath.Join(c.backingWork, "many"), st.Files)
	}
	log.Info("small files done", "contender", c.name, "seconds", fmt.Sprintf("%.1f", r.Seconds),
		"rss_mib", r.RSSAfterKiB/1024, "peak_mib", r.PeakRSSKiB/1024)
	return r, nil
}

// checkTools fails early, naming every missing program.
func checkTools(cfg config) error {
	need := []string{"dd", "rsync", "cp", "find", "du", "go", "fusermount3", "umount"}
	for _, c := range cfg.contenders {
		if c == nameBindfs || c == nameMergerfs {
			need = append(need, c)
		}
	}
	var missing []string
	for _, t := range need {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing programs: %s (Debian packages: fuse3 rsync bindfs mergerfs; .ci/install-deps installs them)", strings.Join(missing, ", "))
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("FUSE unavailable: %w", err)
	}
	return nil
}

// binaries are the daemons the harness built.
type binaries struct {
	loopback, mountcmd string
}

// buildBinaries builds go-fuse's example/loopback and v2backup's mount
// command from the module the harness is run in.
func buildBinaries(ctx context.Context, cfg config, dir string, log *slog.Logger) (binaries, error) {
	var b binaries
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return b, err
	}
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return b, fmt.Errorf("go env GOMOD: %w", err)
	}
	modFile := strings.TrimSpace(string(gomod))
	if modFile == "" || modFile == os.DevNull {
		return b, errors.New("not inside the v2backup module: run from its checkout (go run ./bench/fuse)")
	}
	modDir := filepath.Dir(modFile)
	build := func(out, pkg string) error {
		log.Info("building", "package", pkg)
		return goBuild(ctx, modDir, out, pkg)
	}
	for _, c := range cfg.contenders {
		switch c {
		case nameLoopback:
			b.loopback = filepath.Join(dir, "loopback")
			if err := build(b.loopback, "github.com/hanwen/go-fuse/v2/example/loopback"); err != nil {
				return b, err
			}
		case nameV2backup:
			if cfg.mountcmd != "" {
				b.mountcmd = cfg.mountcmd
				continue
			}
			b.mountcmd = filepath.Join(dir, "mountcmd")
			if err := build(b.mountcmd, "./fusefs/internal/mountcmd"); err != nil {
				return b, err
			}
		}
	}
	return b, nil
}

// goBuild builds pkg into out, from the module in modDir.
func goBuild(ctx context.Context, modDir, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = modDir
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s (in %s): %v: %s", pkg, modDir, err, bytes.TrimSpace(o))
	}
	return nil
}

// newContender lays out the contender's own backing directory (and mount
// point) under root and creates the ready marker in its work directory.
func newContender(cfg config, name, root string, bins binaries, log *slog.Logger) (*contender, error) {
	base := filepath.Join(root, name)
	c := &contender{name: name, log: log, logPath: filepath.Join(root, "logs", name+".log"), done: make(chan struct{})}
	backing := filepath.Join(base, "backing")
	c.mnt = filepath.Join(base, "mnt")
	switch name {
	case nameNative:
		c.mnt = ""
		c.work = filepath.Join(backing, cfg.relpath)
		c.backingWork = c.work
	case nameV2backup:
		// The mount serves {local}/{vm}; the app's relpath is the only
		// writable tree in it.
		local := filepath.Join(base, "local")
		c.backingWork = filepath.Join(local, cfg.vm, cfg.relpath)
		c.work = filepath.Join(c.mnt, cfg.relpath)
		c.catalogPath = filepath.Join(root, "logs", name+".catalog.db")
		c.catalogPrefix = cfg.vm + "/" + cfg.relpath
		c.argv = v2backupArgv(bins.mountcmd, c.mnt, local, cfg.vm, cfg.relpath, c.catalogPath)
		c.sigtermFirst = true
		c.readyWord = "ready"
	case nameBindfs:
		c.argv = append(append([]string{"bindfs", "-f"}, cfg.bindfsOpts...), backing, c.mnt)
	case nameMergerfs:
		c.argv = []string{"mergerfs", "-f", "-o", cfg.mergerfsOpts, backing, c.mnt}
	case nameLoopback:
		c.argv = []string{bins.loopback, "-q", c.mnt, backing}
	default:
		return nil, fmt.Errorf("unknown contender %q", name)
	}
	if c.backingWork == "" {
		c.backingWork = filepath.Join(backing, cfg.relpath)
		c.work = filepath.Join(c.mnt, cfg.relpath)
	}
	dirs := []string{c.backingWork, filepath.Dir(c.logPath)}
	if c.mnt != "" {
		dirs = append(dirs, c.mnt)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := os.WriteFile(filepath.Join(c.backingWork, readyMarker), nil, 0o644); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// v2backupArgv is the command line of fusefs/internal/mountcmd: one VM, one
// app whose relpath the workloads write into. mountcmd prints
// "ready passthrough=BOOL" once mounted; the harness still polls the mount
// itself, like every other contender's. -catalog makes it record and hash
// every written file in a real catalog, as the host daemon does.
func v2backupArgv(bin, mnt, local, vm, relpath, catalog string) []string {
	return []string{bin, "-mountpoint", mnt, "-local-root", local, "-vm", vm, "-app", "bench=" + relpath, "-catalog", catalog}
}

// toolVersions records what was measured, for the JSON output.
func toolVersions(cfg config) map[string]string {
	v := map[string]string{}
	first := func(argv ...string) string {
		o, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil && len(o) == 0 {
			return "unknown: " + err.Error()
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(o)), "\n")
		return line
	}
	v["rsync"] = first("rsync", "--version")
	v["coreutils"] = first("cp", "--version")
	v["go"] = first("go", "version")
	v["go-fuse"] = first("go", "list", "-m", "-f", "{{.Version}}", "github.com/hanwen/go-fuse/v2")
	for _, c := range cfg.contenders {
		switch c {
		case nameBindfs:
			v["bindfs"] = first("bindfs", "--version")
		case nameMergerfs:
			v["mergerfs"] = first("mergerfs", "-V")
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		v["kernel"] = strings.TrimSpace(string(b))
	}
	return v
}
