// Command virtiofs measures, inside a real QEMU guest, the daemon's
// virtiofs export (vhost.Serve of fusefs.NewRoot: routing, confinement and
// cataloging into a real catalog, as `v2backup serve` runs it) against
// QEMU's own 9p share (-virtfs) of the same backing directory, in one run:
// a 256 MiB sequential write (dd, then fsync; buffered, then O_DIRECT), an
// rsync -a of a tree of a few thousand files, into the application's
// directory, and reads back (the guest's caches dropped first) with 1 MiB
// then 4 KiB reads. 9p is mounted with its default cache=none, which writes
// straight from the user's pages; the virtiofs export answers opens with
// direct I/O for the same reason (-page-cache measures the guest page
// cache instead, whose copy under TCG costs about as much as writing to
// the guest's tmpfs, printed too).
//
//	go run ./bench/virtiofs [-dir /var/tmp] [-files 3000] [-rounds 2] [-page-cache]
//
// The guest times each step with its own clock (/proc/uptime) and prints
// the figures on the serial console; the host then checks that every
// byte and file landed in the backing directory and prints a table.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/fusefs"
	"github.com/softxs/v2backup/fusefs/vhost"
	"github.com/softxs/v2backup/integration/vm"
)

func main() {
	dir := flag.String("dir", "/var/tmp", "directory on the disk to measure (a fresh subdirectory is used and removed)")
	files := flag.Int("files", 3000, "files in the rsync tree")
	rounds := flag.Int("rounds", 2, "rounds (each runs virtiofs then 9p)")
	writeMiB := flag.Int("write-mib", 256, "size of the sequential write")
	keep := flag.Bool("keep", false, "keep the work directory")
	cpuProfile := flag.String("cpuprofile", "", "write the daemon side's CPU profile (go tool pprof) to this file")
	pageCache := flag.Bool("page-cache", false, "let the guest cache virtiofs file data (vhost.Options.PageCache) instead of the default direct I/O")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/virtiofs: -cpuprofile:", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if err := run(*dir, *files, *rounds, *writeMiB, *keep, *pageCache); err != nil {
		fmt.Fprintln(os.Stderr, "bench/virtiofs:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// treeTar returns a tar of n files (sizes 0 to 16 KiB, mean 4 KiB) in
// directories of 100, and their total size.
func treeTar(n int) ([]byte, int64, error) {
	r := rand.New(rand.NewPCG(1, 2))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	var total int64
	for i := range n {
		if i%100 == 0 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("tree/d%03d/", i/100), Mode: 0o755, ModTime: mtime}); err != nil {
				return nil, 0, err
			}
		}
		size := r.IntN(8<<10) + r.IntN(8<<10)
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("tree/d%03d/f%05d", i/100, i), Mode: 0o644, Size: int64(size), ModTime: mtime}
		if err := tw.WriteHeader(h); err != nil {
			return nil, 0, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, 0, err
		}
		total += int64(size)
	}
	return buf.Bytes(), total, tw.Close()
}

// The VM and application the guest writes into (9p shares the VM's tree
// too, so both land in the same application directory).
const (
	benchVM      = "vm1"
	benchRelpath = "bench.example.ch/app"
	read4kMiB    = 16 // read with 4 KiB reads (a request each without a page cache)
)

func guestScript(rounds, writeMiB int) string {
	return vm.InitPrologue(append(append([]string{}, vm.VirtiofsModules...), vm.NinePModules...)) + `
now() { cut -d' ' -f1 /proc/uptime; }
REL=` + benchRelpath + `
mount -t virtiofs backup /backup || { say ERROR "mount virtiofs"; sleep 1000; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 p9 /p9 || { say ERROR "mount 9p"; sleep 1000; }
mkdir /tmp/in && tar -xf /tree.tar -C /tmp/in || say ERROR "untar"
# The guest's own copy speed: what a buffered write costs before any
# transport (under TCG, a large share of it).
t0=$(now); dd if=/dev/zero of=/tmp/big bs=1M count=` + strconv.Itoa(writeMiB) + ` 2>/dev/null; t1=$(now); rm /tmp/big
say TMPFS "$t0 $t1"
r=1
while [ $r -le ` + strconv.Itoa(rounds) + ` ]; do
	for t in virtiofs 9p; do
		case $t in virtiofs) m=/backup/$REL ;; 9p) m=/p9/$REL ;; esac
		mkdir -p $m/$t-$r
		t0=$(now)
		dd if=/dev/zero of=$m/$t-$r/big bs=1M count=` + strconv.Itoa(writeMiB) + ` conv=fsync 2>/dev/null || say ERROR "dd $t"
		t1=$(now)
		dd if=/dev/zero of=$m/$t-$r/big-direct bs=1M count=` + strconv.Itoa(writeMiB) + ` oflag=direct conv=fsync 2>/dev/null || say ERROR "dd direct $t"
		t2=$(now)
		rsync -a /tmp/in/tree/ $m/$t-$r/tree/ || say ERROR "rsync $t"
		sync
		t3=$(now)
		# Reads, from the host (the guest's caches dropped): 1 MiB reads,
		# then 4 KiB reads, where a page cache would read ahead.
		echo 3 > /proc/sys/vm/drop_caches
		t4=$(now)
		dd if=$m/$t-$r/big-direct of=/dev/null bs=1M 2>/dev/null || say ERROR "dd read $t"
		t5=$(now)
		echo 3 > /proc/sys/vm/drop_caches
		t6=$(now)
		dd if=$m/$t-$r/big of=/dev/null bs=4k count=` + strconv.Itoa(read4kMiB*256) + ` 2>/dev/null || say ERROR "dd read 4k $t"
		t7=$(now)
		say "RESULT_${t}_${r}" "$t0 $t1 $t2 $t3 $t4 $t5 $t6 $t7"
	done
	r=$((r+1))
done
say DONE bench
sleep 1000
`
}

func run(base string, nfiles, rounds, writeMiB int, keep, pageCache bool) error {
	k, err := vm.FindKernel()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(base, "v2backup-bench-virtiofs-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(work)
	}
	// {work}/local/vm1 is the VM's tree, as under a partition.
	localRoot := filepath.Join(work, "local")
	backing := filepath.Join(localRoot, benchVM)
	appDir := filepath.Join(backing, benchRelpath)
	if err := os.MkdirAll(appDir, 0o755); err != nil {
		return err
	}
	tree, treeBytes, err := treeTar(nfiles)
	if err != nil {
		return err
	}
	initrd := filepath.Join(work, "initrd.cpio")
	ir := vm.Initramfs{
		Kernel:   k,
		Modules:  append(append([]string{}, vm.VirtiofsModules...), vm.NinePModules...),
		Binaries: []string{"rsync"},
		Init:     guestScript(rounds, writeMiB),
		Files:    map[string][]byte{"/tree.tar": tree},
	}
	if err := ir.Write(initrd); err != nil {
		return err
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := catalog.Open(filepath.Join(work, "catalog.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	rec, err := catalog.NewRecorder(db, localRoot, catalog.RecorderOptions{})
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rec.Close(ctx)
	}()
	root, err := fusefs.NewRoot(fusefs.Config{
		VM: benchVM, LocalRoot: localRoot,
		Apps:     []fusefs.App{{Name: "app", Relpath: benchRelpath}},
		Recorder: rec, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer root.Close()
	srv, err := vhost.ServeWith(context.Background(), filepath.Join(work, "vm.sock"), root.Node(),
		vhost.Options{FS: root.Options(), PageCache: pageCache}, logger)
	if err != nil {
		return err
	}
	defer srv.Close()

	start := time.Now()
	g, err := vm.Boot(vm.Config{
		Kernel: k, Initrd: initrd, Dir: work,
		VhostSocket: srv.SocketPath(), NinePDir: backing,
		MemoryMiB: 1024,
	})
	if err != nil {
		return err
	}
	defer g.Kill()
	if err := g.WaitFor("V2B DONE=bench", 30*time.Minute); err != nil {
		return err
	}
	wall := time.Since(start)
	log := g.Log()
	g.Kill()
	res := vm.Results(log, "V2B ")
	if e, ok := res["ERROR"]; ok {
		return fmt.Errorf("guest: %s\n%s", e, log)
	}

	fmt.Printf("bench/virtiofs: QEMU %s, 1 vCPU, 1 GiB; guest kernel %s; backing %s; wall %v\n",
		g.Accel, filepath.Base(k.Image), backing, wall.Round(time.Second))
	mode := "direct I/O (default)"
	if pageCache {
		mode = "guest page cache (-page-cache)"
	}
	fmt.Printf("virtiofs file data: %s\n", mode)
	fmt.Printf("rsync tree: %d files, %.1f MiB; sequential write: %d MiB (dd bs=1M conv=fsync)\n",
		nfiles, float64(treeBytes)/(1<<20), writeMiB)
	if f := strings.Fields(res["TMPFS"]); len(f) == 2 {
		t0, _ := strconv.ParseFloat(f[0], 64)
		t1, _ := strconv.ParseFloat(f[1], 64)
		fmt.Printf("guest tmpfs write (no transport): %.2fs, %.0f MiB/s\n", t1-t0, float64(writeMiB)/(t1-t0))
	}
	fmt.Printf("%-9s %5s %8s %6s %8s %6s %8s %7s %7s %6s %8s %6s\n", "transport", "round",
		"write s", "MiB/s", "direct s", "MiB/s", "rsync s", "files/s", "read s", "MiB/s", "read4k s", "MiB/s")
	best := map[string][5]float64{}
	for r := 1; r <= rounds; r++ {
		for _, t := range []string{"virtiofs", "9p"} {
			f := strings.Fields(res[fmt.Sprintf("RESULT_%s_%d", t, r)])
			if len(f) != 8 {
				return fmt.Errorf("guest did not report %s round %d\n%s", t, r, log)
			}
			var ts [8]float64
			for i := range ts {
				ts[i], _ = strconv.ParseFloat(f[i], 64)
			}
			d := [5]float64{ts[1] - ts[0], ts[2] - ts[1], ts[3] - ts[2], ts[5] - ts[4], ts[7] - ts[6]}
			fmt.Printf("%-9s %5d %8.2f %6.0f %8.2f %6.0f %8.2f %7.0f %7.2f %6.0f %8.2f %6.1f\n", t, r,
				d[0], float64(writeMiB)/d[0], d[1], float64(writeMiB)/d[1], d[2], float64(nfiles)/d[2],
				d[3], float64(writeMiB)/d[3], d[4], float64(read4kMiB)/d[4])
			b := best[t]
			for i := range d {
				if b[i] == 0 || d[i] < b[i] {
					b[i] = d[i]
				}
			}
			best[t] = b
			if err := checkLanded(filepath.Join(appDir, fmt.Sprintf("%s-%d", t, r)), int64(writeMiB)<<20, nfiles); err != nil {
				return fmt.Errorf("%s round %d: %w", t, r, err)
			}
		}
	}
	v, p := best["virtiofs"], best["9p"]
	fmt.Printf("best of %d, 9p time / virtiofs time (above 1: virtiofs faster): write %.2fx, direct write %.2fx, rsync %.2fx, read %.2fx, read 4k %.2fx\n",
		rounds, p[0]/v[0], p[1]/v[1], p[2]/v[2], p[3]/v[3], p[4]/v[4])
	for i, name := range []string{"buffered write", "direct write", "rsync"} {
		verdict := "met"
		if v[i] > p[i] {
			verdict = "MISSED"
		}
		fmt.Printf("target (virtiofs at least as fast as 9p), %s: %s\n", name, verdict)
	}
	return nil
}

// checkLanded verifies the backing directory holds what the guest wrote.
func checkLanded(dir string, bigSize int64, nfiles int) error {
	for _, name := range []string{"big", "big-direct"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if fi.Size() != bigSize {
			return fmt.Errorf("%s/%s is %d bytes, want %d", dir, name, fi.Size(), bigSize)
		}
	}
	n := 0
	err := filepath.WalkDir(filepath.Join(dir, "tree"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		return err
	}
	if n != nfiles {
		return fmt.Errorf("%s/tree holds %d files, want %d", dir, n, nfiles)
	}
	return nil
}
