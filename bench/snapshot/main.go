// Command snapshot benchmarks tiers/snapshot against rsnapshot's ways of
// making a hard-link tree: `cp -al` and `rsync -a --link-dest`.
//
// It builds a tree of -files files, takes a first snapshot that hashes
// everything, then runs every method -runs times in rotated order (cold:
// page cache dropped first; warm: not), and finally changes 1% of the
// files and snapshots again. Our snapshot always includes its manifest,
// with hashes looked up in a map of the first snapshot's, as the catalog
// provides them in production. It prints the median time per method,
// files per second and the ratio to `cp -al`.
//
//	go run ./bench/snapshot -files 100000 -runs 3
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/softxs/v2backup/tiers/snapshot"
)

type known struct {
	size, mtime int64
	sha         string
}

type bench struct {
	base, src, snapdir string
	nfiles             int
	hashes             map[string]known
	seq                int
	workers            int
	canDrop            bool
}

func main() {
	files := flag.Int("files", 100000, "files in the tree")
	perDir := flag.Int("per-dir", 50, "files per directory")
	size := flag.Int("size", 4096, "mean file size in bytes")
	runs := flag.Int("runs", 3, "runs per method (the median is reported)")
	dir := flag.String("dir", "/var/tmp", "where to build the tree (not tmpfs: the disk is the point)")
	workers := flag.Int("workers", 0, "snapshot.Options.Workers (0: default)")
	keep := flag.Bool("keep", false, "keep the tree afterwards")
	flag.Parse()
	if err := run(*files, *perDir, *size, *runs, *dir, *workers, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench/snapshot:", err)
		os.Exit(1)
	}
}

func run(files, perDir, size, runs int, dir string, workers int, keep bool) error {
	base, err := os.MkdirTemp(dir, "v2backup-bench-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(base)
	}
	b := &bench{base: base, src: filepath.Join(base, "local"), snapdir: filepath.Join(base, "snapshots"), nfiles: files, workers: workers}
	b.canDrop = dropCaches() == nil
	fmt.Printf("tree: %d files, %d per directory, mean %d bytes, in %s\n", files, perDir, size, base)
	t0 := time.Now()
	paths, err := makeTree(b.src, files, perDir, size)
	if err != nil {
		return err
	}
	fmt.Printf("tree built in %.1fs\n", time.Since(t0).Seconds())
	if !b.canDrop {
		fmt.Println("cannot drop the page cache (not root?): cold runs skipped")
	}

	// First snapshot: every file read and hashed.
	d, res, err := b.ours(false, true)
	if err != nil {
		return err
	}
	fmt.Printf("first snapshot (all %d files hashed, %.0f MB): %.2fs, %.0f files/s\n\n",
		res.Hashed, float64(res.HashedBytes)/1e6, d.Seconds(), float64(files)/d.Seconds())
	first := res.Path

	methods := []method{
		{"v2backup snapshot, warm", func() (time.Duration, error) {
			d, res, err := b.ours(false, false)
			if err == nil {
				fmt.Printf("  warm: %.2fs, of which syncfs %.2fs\n", d.Seconds(), res.Synced.Seconds())
			}
			return d, err
		}, false},
		{"cp -al, warm", func() (time.Duration, error) { return b.cmd(false, "cp", "-al", b.src, b.next("cp")) }, false},
		{"rsync --link-dest, warm", func() (time.Duration, error) {
			return b.cmd(false, "rsync", "-a", "--link-dest="+first, b.src+"/", b.next("rsync")+"/")
		}, false},
	}
	if b.canDrop {
		methods = append(methods,
			method{"v2backup snapshot, cold", func() (time.Duration, error) { d, _, err := b.ours(true, false); return d, err }, true},
			method{"cp -al, cold", func() (time.Duration, error) { return b.cmd(true, "cp", "-al", b.src, b.next("cp")) }, true},
		)
	}
	times := make([][]time.Duration, len(methods))
	for r := range runs {
		for i := range methods {
			k := (i + r) % len(methods)
			d, err := methods[k].fn()
			if err != nil {
				return fmt.Errorf("%s: %w", methods[k].name, err)
			}
			times[k] = append(times[k], d)
			if err := b.clean(first); err != nil {
				return err
			}
		}
	}

	// 1% of the files changed, written as new files the way rsync does (and
	// the mount's copy-on-write leaves the snapshot's inode alone).
	rng := rand.New(rand.NewPCG(2, 3))
	for _, i := range rng.Perm(len(paths))[:len(paths)/100] {
		p := paths[i]
		if err := os.WriteFile(p+".tmp", randBytes(rng, size), 0o644); err != nil {
			return err
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return err
		}
	}
	changed := method{"v2backup snapshot, 1% changed, warm", func() (time.Duration, error) {
		d, res, err := b.ours(false, false)
		if err == nil {
			fmt.Printf("  1%% changed: %.2fs, of which syncfs %.2fs\n", d.Seconds(), res.Synced.Seconds())
		}
		if err == nil && res.Hashed != int64(len(paths)/100) {
			err = fmt.Errorf("hashed %d files, want %d", res.Hashed, len(paths)/100)
		}
		return d, err
	}, false}
	methods = append(methods, changed)
	times = append(times, nil)
	for range runs {
		d, err := changed.fn()
		if err != nil {
			return fmt.Errorf("%s: %w", changed.name, err)
		}
		times[len(times)-1] = append(times[len(times)-1], d)
		if err := b.clean(first); err != nil {
			return err
		}
	}

	ref := map[bool]time.Duration{}
	for i, m := range methods {
		if strings.HasPrefix(m.name, "cp -al") {
			ref[m.cold] = median(times[i])
		}
	}
	fmt.Printf("%-38s %9s %11s %12s  runs\n", "method (median)", "seconds", "files/s", "vs cp -al")
	for i, m := range methods {
		med := median(times[i])
		ratio := ""
		if r, ok := ref[m.cold]; ok {
			ratio = fmt.Sprintf("%.2fx", r.Seconds()/med.Seconds())
		}
		var all []string
		for _, d := range times[i] {
			all = append(all, fmt.Sprintf("%.2f", d.Seconds()))
		}
		fmt.Printf("%-38s %9.2f %11.0f %12s  %s\n", m.name, med.Seconds(), float64(files)/med.Seconds(), ratio, strings.Join(all, " "))
	}
	fmt.Println("(vs cp -al: how many times faster than cp -al in the same cache state; >1 is faster)")
	return nil
}

type method struct {
	name string
	fn   func() (time.Duration, error)
	cold bool
}

func (b *bench) next(prefix string) string {
	b.seq++
	return filepath.Join(b.base, fmt.Sprintf("%s-%d", prefix, b.seq))
}

// ours takes a snapshot with its manifest; with record, it fills the hash
// map (the first snapshot), otherwise it looks hashes up there.
func (b *bench) ours(cold, record bool) (time.Duration, *snapshot.Result, error) {
	if cold {
		if err := dropCaches(); err != nil {
			return 0, nil, err
		}
	}
	b.seq++
	name := snapshot.Name(time.Date(2026, 1, 1, 0, 0, 0, 0, time.Local).Add(time.Duration(b.seq) * time.Minute))
	manifest := make([]snapshot.Entry, 0, b.nfiles)
	opts := snapshot.Options{
		Source: b.src, SnapDir: b.snapdir, Name: name, Workers: b.workers,
		Emit: func(es []snapshot.Entry) error { manifest = append(manifest, es...); return nil },
	}
	if !record {
		opts.Hash = func(rel string, size, mtime int64) (string, bool) {
			k, ok := b.hashes[rel]
			if ok && k.size == size && k.mtime == mtime {
				return k.sha, true
			}
			return "", false
		}
	}
	t := time.Now()
	res, err := snapshot.Create(context.Background(), opts)
	d := time.Since(t)
	if err != nil {
		return 0, nil, err
	}
	if len(manifest) != b.nfiles {
		return 0, nil, fmt.Errorf("manifest has %d entries, want %d", len(manifest), b.nfiles)
	}
	if record {
		b.hashes = make(map[string]known, len(manifest))
		for _, e := range manifest {
			b.hashes[e.Path] = known{e.Size, e.MTime.UnixNano(), e.SHA256}
		}
	}
	return d, res, nil
}

func (b *bench) cmd(cold bool, name string, args ...string) (time.Duration, error) {
	if cold {
		if err := dropCaches(); err != nil {
			return 0, err
		}
	}
	c := exec.Command(name, args...)
	c.Stderr = os.Stderr
	t := time.Now()
	err := c.Run()
	return time.Since(t), err
}

// clean removes every tree but the source and the first snapshot, and
// syncs, so that no run pays for the previous one's writeback.
func (b *bench) clean(first string) error {
	des, err := os.ReadDir(b.base)
	if err != nil {
		return err
	}
	for _, de := range des {
		if de.Name() != "local" && de.Name() != "snapshots" {
			if err := os.RemoveAll(filepath.Join(b.base, de.Name())); err != nil {
				return err
			}
		}
	}
	snaps, err := os.ReadDir(b.snapdir)
	if err != nil {
		return err
	}
	for _, de := range snaps {
		if p := filepath.Join(b.snapdir, de.Name()); p != first {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	return exec.Command("sync").Run()
}

func dropCaches() error {
	if err := exec.Command("sync").Run(); err != nil {
		return err
	}
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

// makeTree writes files files laid out like a tier: vm/host/app/dNNN/fNNN.
func makeTree(src string, files, perDir, size int) ([]string, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	paths := make([]string, 0, files)
	for i := range files {
		d := i / perDir
		dir := filepath.Join(src, fmt.Sprintf("vm%d", d%4), fmt.Sprintf("app%d.example.ch", d%40), "data", fmt.Sprintf("d%05d", d))
		if i%perDir == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
		}
		p := filepath.Join(dir, fmt.Sprintf("f%06d", i))
		if err := os.WriteFile(p, randBytes(rng, size), 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, exec.Command("sync").Run()
}

func randBytes(rng *rand.Rand, mean int) []byte {
	b := make([]byte, rng.IntN(2*mean+1))
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
