// Command catalog measures the catalog's write paths on this machine:
// UpsertFiles of many file records in batches, snapshot manifests, and the
// Recorder hashing small files. It prints rates and peak memory.
//
//	go run ./bench/catalog [-records 1000000] [-batch 10000] [-manifest 200000] [-hashfiles 20000]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
)

func main() {
	records := flag.Int("records", 1_000_000, "file records to upsert")
	batch := flag.Int("batch", 10_000, "records per UpsertFiles call")
	manifest := flag.Int("manifest", 200_000, "manifest entries per snapshot (two snapshots are written)")
	hashFiles := flag.Int("hashfiles", 20_000, "small files for the recorder to hash (0 = skip)")
	dir := flag.String("dir", "", "directory for the database and files (default: a new temp dir, removed after)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the upsert phase here")
	flag.Parse()

	if *dir == "" {
		d, err := os.MkdirTemp("", "bench-catalog-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	ctx := context.Background()
	db, err := catalog.Open(filepath.Join(*dir, "catalog.db"))
	if err != nil {
		log.Fatal(err)
	}

	// 1. Live file records.
	sha := strings.Repeat("ab", 32)
	mtime := time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)
	recs := make([]catalog.FileRecord, 0, *batch)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
	}
	// Only UpsertFiles is timed; making the records (Sprintf) is not the
	// catalog's work, but the total is printed too.
	var inUpsert time.Duration
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < *records; i += *batch {
		recs = recs[:0]
		for j := i; j < min(i+*batch, *records); j++ {
			recs = append(recs, catalog.FileRecord{
				Path:   fmt.Sprintf("web/demo.softxs.ch/app%02d/var/files/%04d/%08d.pdf", j%50, (j/1000)%10000, j),
				App:    fmt.Sprintf("app%02d", j%50),
				Size:   int64(j),
				MTime:  mtime,
				SHA256: sha,
			})
		}
		t := time.Now()
		if err := db.UpsertFiles(ctx, recs); err != nil {
			log.Fatal(err)
		}
		inUpsert += time.Since(t)
	}
	el, cpu := time.Since(start), cpuTime()-cpu0
	pprof.StopCPUProfile()
	fmt.Printf("upsert files:  %d records (batches of %d) in %v of UpsertFiles = %.0f records/s\n",
		*records, *batch, inUpsert.Round(time.Millisecond), float64(*records)/inUpsert.Seconds())
	fmt.Printf("               with making the records: %v = %.0f records/s; process CPU %v = %.0f records per CPU-second\n",
		el.Round(time.Millisecond), float64(*records)/el.Seconds(), cpu.Round(time.Millisecond), float64(*records)/cpu.Seconds())

	// 2. Snapshot manifests: the first inserts new paths, the second reuses them.
	for n, name := range []string{"2026-11-27T050000", "2026-11-28T050000"} {
		start = time.Now()
		b, err := db.BeginSnapshot(ctx, tiers.Local, "zg-3.softxs.ch", name, mtime)
		if err != nil {
			log.Fatal(err)
		}
		for j := 0; j < *manifest; j++ {
			e := catalog.ManifestEntry{
				Path:   fmt.Sprintf("web/demo.softxs.ch/app%02d/var/files/%04d/%08d.pdf", j%50, (j/1000)%10000, j),
				App:    fmt.Sprintf("app%02d", j%50),
				Size:   int64(j),
				MTime:  mtime,
				SHA256: sha,
			}
			if err := b.Add(ctx, e); err != nil {
				log.Fatal(err)
			}
		}
		if _, err := b.Commit(ctx); err != nil {
			log.Fatal(err)
		}
		el := time.Since(start)
		fmt.Printf("snapshot %d:    %d manifest entries in %v = %.0f entries/s\n",
			n+1, *manifest, el.Round(time.Millisecond), float64(*manifest)/el.Seconds())
	}
	snaps, err := db.ListSnapshots(ctx, tiers.Local, "zg-3.softxs.ch")
	if err != nil {
		log.Fatal(err)
	}
	start = time.Now()
	d, err := db.DiffSnapshots(ctx, snaps[0].ID, snaps[1].ID, "")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("diff:          %d entries each, %d changed, in %v\n", *manifest, len(d.Changed), time.Since(start).Round(time.Millisecond))

	// 3. Recorder hashing small files.
	if *hashFiles > 0 {
		root := filepath.Join(*dir, "local")
		data := make([]byte, 4096)
		for i := 0; i < *hashFiles; i++ {
			p := filepath.Join(root, "web", "demo.softxs.ch", "hydro", fmt.Sprintf("d%03d", i%100), fmt.Sprintf("f%06d", i))
			if i < 100 {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					log.Fatal(err)
				}
			}
			data[0], data[1] = byte(i), byte(i>>8)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				log.Fatal(err)
			}
		}
		rec, err := catalog.NewRecorder(db, root, catalog.RecorderOptions{QueueSize: *hashFiles})
		if err != nil {
			log.Fatal(err)
		}
		names := make([]string, *hashFiles)
		for i := range names {
			names[i] = fmt.Sprintf("web/demo.softxs.ch/hydro/d%03d/f%06d", i%100, i)
		}
		start = time.Now()
		for _, n := range names {
			rec.Written("hydro", n)
		}
		if err := rec.Flush(ctx); err != nil {
			log.Fatal(err)
		}
		el := time.Since(start)
		fmt.Printf("recorder:      %d files of 4 KiB hashed and recorded in %v = %.0f files/s (dropped %d)\n",
			*hashFiles, el.Round(time.Millisecond), float64(*hashFiles)/el.Seconds(), rec.Dropped())
		// The hot path: events on files already queued coalesce; this is
		// what a FUSE release costs the daemon.
		const events = 1_000_000
		start = time.Now()
		for i := range events {
			rec.Written("hydro", names[i%len(names)])
		}
		hot := time.Since(start)
		if err := rec.Flush(ctx); err != nil {
			log.Fatal(err)
		}
		if err := rec.Close(ctx); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("recorder:      Written() on the hot path: %.0f ns per event (%d events over %d paths, workers busy)\n",
			float64(hot.Nanoseconds())/events, events, len(names))
	}

	if err := db.Close(); err != nil {
		log.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st, _ := os.Stat(filepath.Join(*dir, "catalog.db"))
	var size int64
	if st != nil {
		size = st.Size()
	}
	fmt.Printf("memory:        Go heap in use %.1f MiB, Go total from OS %.1f MiB, VmHWM %s\n",
		float64(ms.HeapInuse)/(1<<20), float64(ms.Sys)/(1<<20), vmHWM())
	fmt.Printf("database:      %.1f MiB\n", float64(size)/(1<<20))
}

// vmHWM is the process's peak resident set size, from /proc/self/status.
func vmHWM() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// cpuTime is the user+system CPU time of the process so far: on a shared
// machine, records per CPU-second say more than records per second.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
