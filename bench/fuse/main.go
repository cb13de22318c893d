// Command fuse benchmarks v2backup's FUSE mount against the native backing
// directory and the passthrough filesystems an administrator would pick
// instead: bindfs, mergerfs and go-fuse's example/loopback. It runs the same
// workloads on each, rotating the order every round, and prints medians and
// ratios to native. See README.md for how to run it and read the output.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

// Contender names, in the order the table prints them.
const (
	nameNative   = "native"
	nameV2backup = "v2backup"
	nameBindfs   = "bindfs"
	nameMergerfs = "mergerfs"
	nameLoopback = "loopback"
)

var allContenders = []string{nameNative, nameV2backup, nameBindfs, nameMergerfs, nameLoopback}

// peers are the tools a user would pick instead of v2backup.
var peers = []string{nameBindfs, nameMergerfs, nameLoopback}

// Workload names, in the order a round runs them. Later ones use what
// earlier ones left behind (seqread reads seqwrite's file; the walks walk
// cp's tree), see workloadDeps.
const (
	wlSeqWrite = "seqwrite"
	wlSeqRead  = "seqread"
	wlRsync    = "rsync"
	wlCp       = "cp"
	wlFind     = "find"
	wlDu       = "du"
)

var allWorkloads = []string{wlSeqWrite, wlSeqRead, wlRsync, wlCp, wlFind, wlDu}

var workloadDeps = map[string]string{wlSeqRead: wlSeqWrite, wlFind: wlCp, wlDu: wlCp}

// defaultMergerfsOpts is mergerfs's own "basic setup" for software that does
// not need mmap (man mergerfs, BASIC SETUP): no double page caching.
const defaultMergerfsOpts = "allow_other,use_ino,cache.files=off,dropcacheonclose=true,category.create=mfs"

type config struct {
	dir          string   // parent of the run's temp dir
	rounds       int      // repetitions of every workload
	seqMiB       int      // size of the sequential file
	src          string   // source tree for rsync and cp
	treeFiles    int      // take only the first N regular files of src (0: all)
	rssFiles     int      // small files written through v2backup for the RSS check (0: off)
	jsonPath     string   // machine-readable results ("" : none)
	contenders   []string // in table order; native always first
	workloads    []string // in run order
	mergerfsOpts string
	bindfsOpts   []string
	mountcmd     string // prebuilt v2backup mount binary ("" : go build it)
	vm           string // VM name the v2backup mount serves
	relpath      string // app relpath: every contender's workloads write under it
	keep         bool   // keep the temp dir after the run
	verbose      bool
}

// parseFlags parses args into a config, applying -quick's sizes to every
// size flag the user did not set explicitly.
func parseFlags(args []string, out io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("bench/fuse", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.dir, "dir", "/var/tmp", "parent `directory` of the run's temp dir (its filesystem is the one measured)")
	fs.IntVar(&cfg.rounds, "rounds", 3, "repetitions of every workload (the contenders' order rotates every round)")
	fs.IntVar(&cfg.seqMiB, "seq-mib", 1024, "size of the sequential write/read file in MiB")
	fs.StringVar(&cfg.src, "src", "/usr/local/go/src", "source `tree` copied by the rsync and cp workloads")
	fs.IntVar(&cfg.treeFiles, "tree-files", 0, "use only the first N regular files of -src (0: all of them)")
	fs.IntVar(&cfg.rssFiles, "rss-files", 100000, "small files written through one v2backup mount before its RSS is read (0: skip)")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write the results as JSON to this `file`")
	contenders := fs.String("contenders", strings.Join(allContenders, ","), "comma-separated contenders (native is required)")
	workloads := fs.String("workloads", strings.Join(allWorkloads, ","), "comma-separated workloads")
	fs.StringVar(&cfg.mergerfsOpts, "mergerfs-opts", defaultMergerfsOpts, "mergerfs -o options")
	bindfsOpts := fs.String("bindfs-opts", "", "extra bindfs arguments, space-separated (default: none, bindfs's defaults)")
	fs.StringVar(&cfg.mountcmd, "mountcmd", "", "prebuilt v2backup mount `binary` (default: go build ./fusefs/internal/mountcmd)")
	fs.StringVar(&cfg.vm, "vm", "bench", "VM name of the v2backup mount")
	fs.StringVar(&cfg.relpath, "relpath", "bench.example.org/app", "app relpath the workloads write into")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the temp dir (backing trees, daemon logs) after the run")
	fs.BoolVar(&cfg.verbose, "v", false, "log every step")
	quick := fs.Bool("quick", false, "quick run: -seq-mib 64 -tree-files 2000 -rounds 1 -rss-files 10000")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: bench/fuse takes flags only", fs.Arg(0))
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["seq-mib"] {
			cfg.seqMiB = 64
		}
		if !set["tree-files"] {
			cfg.treeFiles = 2000
		}
		if !set["rounds"] {
			cfg.rounds = 1
		}
		if !set["rss-files"] {
			cfg.rssFiles = 10000
		}
	}
	if cfg.rounds < 1 {
		return cfg, fmt.Errorf("-rounds %d: must be at least 1", cfg.rounds)
	}
	if cfg.seqMiB < 1 {
		return cfg, fmt.Errorf("-seq-mib %d: must be at least 1", cfg.seqMiB)
	}
	if cfg.treeFiles < 0 {
		return cfg, fmt.Errorf("-tree-files %d: must be 0 (all) or positive", cfg.treeFiles)
	}
	if cfg.rssFiles < 0 {
		return cfg, fmt.Errorf("-rss-files %d: must be 0 (skip) or positive", cfg.rssFiles)
	}
	var err error
	if cfg.contenders, err = parseList("-contenders", *contenders, allContenders); err != nil {
		return cfg, err
	}
	if !slices.Contains(cfg.contenders, nameNative) {
		return cfg, fmt.Errorf("-contenders %q: must include %s, every ratio is to it", *contenders, nameNative)
	}
	if cfg.workloads, err = parseList("-workloads", *workloads, allWorkloads); err != nil {
		return cfg, err
	}
	for _, w := range cfg.workloads {
		if dep, ok := workloadDeps[w]; ok && !slices.Contains(cfg.workloads, dep) {
			return cfg, fmt.Errorf("-workloads %q: %s needs %s (it uses what %s leaves behind)", *workloads, w, dep, dep)
		}
	}
	if cfg.relpath == "" || strings.HasPrefix(cfg.relpath, "/") || slices.Contains(strings.Split(cfg.relpath, "/"), "..") {
		return cfg, fmt.Errorf("-relpath %q: must be a relative path without '..'", cfg.relpath)
	}
	if cfg.vm == "" || strings.Contains(cfg.vm, "/") {
		return cfg, fmt.Errorf("-vm %q: must be a single path segment", cfg.vm)
	}
	cfg.bindfsOpts = strings.Fields(*bindfsOpts)
	return cfg, nil
}

// parseList splits a comma-separated list, checks every item against known
// and returns the items in known's order (so tables and runs are stable
// whatever order the user typed).
func parseList(flagName, value string, known []string) ([]string, error) {
	seen := map[string]bool{}
	for _, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !slices.Contains(known, item) {
			return nil, fmt.Errorf("%s: unknown item %q (known: %s)", flagName, item, strings.Join(known, ","))
		}
		if seen[item] {
			return nil, fmt.Errorf("%s: %q listed twice", flagName, item)
		}
		seen[item] = true
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("%s %q: empty list", flagName, value)
	}
	var out []string
	for _, k := range known {
		if seen[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/fuse:", err)
		os.Exit(2)
	}
	level := slog.LevelInfo
	if cfg.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// Ctrl-C cancels the run; run still unmounts everything before returning.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "bench/fuse:", err)
		os.Exit(1)
	}
}
