package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunEndToEnd runs the whole harness, small, against native and two
// real FUSE daemons: go-fuse's loopback and v2backup's own mountcmd (built
// from ./fusefs/internal/mountcmd, which checks the flags the harness passes
// it). Nothing may stay mounted and the temp dir must be gone.
func TestRunEndToEnd(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "out.json")
	cfg, err := parseFlags([]string{"-dir", dir, "-contenders", "native,v2backup,loopback", "-seq-mib", "4",
		"-src", makeTree(t, 150), "-tree-files", "100", "-rounds", "2", "-rss-files", "300", "-json", jsonPath}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := run(context.Background(), cfg, &out, testLogger()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rsync -a 100 files", "find (warm) 100 files", "best peer (loopback", "300 written through one v2backup mount", `v2backup said: "ready`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Workloads) != len(allWorkloads) || rep.SourceTree.Files != 100 || rep.SmallFiles.Files != 300 {
		t.Errorf("JSON: %s", b)
	}
	for _, w := range rep.Workloads {
		for _, r := range w.Results {
			if len(r.Samples) != 2 || r.MedianSeconds <= 0 {
				t.Errorf("%s/%s: samples %+v", w.Name, r.Contender, r.Samples)
			}
		}
	}
	for _, d := range rep.Daemons {
		if d.PeakRSSKiB <= 0 {
			t.Errorf("%s: no peak RSS", d.Contender)
		}
		// The live rsync'd and cp'd files, the small files and the
		// sequential file are in the catalog, hashed.
		if d.Contender == nameV2backup && (d.CatalogFiles != 2*100+300+1 || d.CatalogHashed != d.CatalogFiles) {
			t.Errorf("v2backup catalog: %d files, %d hashed, want %d both", d.CatalogFiles, d.CatalogHashed, 2*100+300+1)
		}
	}
	for _, w := range rep.Workloads {
		if w.Name != wlRsync {
			continue
		}
		for _, r := range w.Results {
			if r.Contender == nameV2backup && (r.MedianCatalogSeconds <= 0 || len(r.Samples) != 2 || r.Samples[0].CatalogSeconds <= 0) {
				t.Errorf("v2backup rsync: no catalog lag measured: %+v", r)
			}
		}
	}
	left, err := filepath.Glob(filepath.Join(dir, "v2backup-bench-*"))
	if err != nil || len(left) != 0 {
		t.Errorf("bench directory left behind: %v %v", left, err)
	}
}

// cancelOn is a slog handler that cancels a context when a given message
// is logged: a Ctrl-C at a chosen point of the run.
type cancelOn struct {
	slog.Handler
	msg    string
	cancel context.CancelFunc
}

func (h cancelOn) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.cancel()
	}
	return h.Handler.Handle(ctx, r)
}

// TestRunCancelled: a run cancelled (Ctrl-C) while its mounts are up still
// unmounts everything and removes its directory.
func TestRunCancelled(t *testing.T) {
	requireFUSE(t)
	for _, at := range []string{"building", "timed"} {
		dir := t.TempDir()
		cfg, err := parseFlags([]string{"-dir", dir, "-contenders", "native,v2backup,loopback", "-seq-mib", "2",
			"-src", makeTree(t, 20), "-rounds", "1"}, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		log := slog.New(cancelOn{Handler: slog.NewTextHandler(io.Discard, nil), msg: at, cancel: cancel})
		err = run(ctx, cfg, new(strings.Builder), log)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "context canceled") {
			t.Errorf("run cancelled at %q: %v", at, err)
		}
		left, _ := filepath.Glob(filepath.Join(dir, "v2backup-bench-*"))
		if len(left) != 0 {
			t.Errorf("run cancelled at %q left its directory behind: %v", at, left)
		}
	}
}

func TestRunSetupErrors(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	cfg, err := parseFlags([]string{"-dir", filepath.Join(t.TempDir(), "missing"), "-contenders", "native"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, cfg, new(strings.Builder), testLogger()); err == nil || !strings.Contains(err.Error(), "-dir: ") {
		t.Errorf("missing -dir: %v", err)
	}

	cfg.dir = t.TempDir()
	cfg.src = filepath.Join(cfg.dir, "nope")
	if err := run(ctx, cfg, new(strings.Builder), testLogger()); err == nil || !strings.Contains(err.Error(), "-src: ") {
		t.Errorf("missing -src: %v", err)
	}

	// A v2backup mount that cannot start fails the run, naming it.
	cfg, err = parseFlags([]string{"-dir", t.TempDir(), "-contenders", "native,v2backup", "-src", makeTree(t, 5), "-mountcmd", "/bin/false"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, cfg, new(strings.Builder), testLogger()); err == nil || !strings.Contains(err.Error(), "v2backup: daemon exited before its mount was ready") {
		t.Errorf("broken mountcmd: %v", err)
	}

	t.Setenv("PATH", t.TempDir())
	cfg, _ = parseFlags(nil, os.Stderr)
	err = run(ctx, cfg, new(strings.Builder), testLogger())
	if err == nil || !strings.Contains(err.Error(), "missing programs: dd, rsync, cp, find, du, go, fusermount3, umount, bindfs, mergerfs") {
		t.Errorf("empty PATH: %v", err)
	}
}

func TestBuildBinariesOutsideModule(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("GOFLAGS", "")
	t.Setenv("GO111MODULE", "")
	_, err := buildBinaries(context.Background(), config{contenders: []string{nameLoopback}}, t.TempDir(), testLogger())
	if err == nil || !strings.Contains(err.Error(), "not inside the v2backup module") {
		t.Errorf("outside the module: %v", err)
	}
}

func TestNewContenderUnknown(t *testing.T) {
	if _, err := newContender(config{}, "zfs", t.TempDir(), binaries{}, testLogger()); err == nil || !strings.Contains(err.Error(), `unknown contender "zfs"`) {
		t.Errorf("newContender(zfs): %v", err)
	}
}

func TestGoBuildFailure(t *testing.T) {
	err := goBuild(context.Background(), ".", filepath.Join(t.TempDir(), "x"), "./no/such/package")
	if err == nil || !strings.Contains(err.Error(), "go build ./no/such/package") || !strings.Contains(err.Error(), "no/such/package") {
		t.Errorf("goBuild: %v", err)
	}
}
