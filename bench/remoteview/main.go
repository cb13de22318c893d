// Command remoteview measures a pull through the remote view
// (fusefs/roview) against the same rsync straight from the backing
// snapshot directory (issue 5 point 5): a first pull of a 10,000-file tree,
// then a second pull after 1% of the files changed.
//
// It runs locally (no ssh) unless -ssh HOST is given, in which case both
// rsyncs go through "ssh HOST" on loopback. With -sshd, the bench starts
// its own OpenSSH server on a spare port of 127.0.0.1 with generated keys
// (jobs/sshtest, through its sshdcmd), so no system sshd or key
// setup is needed; it then also times v2backup's whole pull (jobs/pull:
// rsync through the view into a staging tree, verification of every file
// against SHA256SUMS, atomic switch, snapshot of the remote tier). The view
// is served by a separate process (internal/viewcmd), never by this one,
// freshly mounted for every pull through it; each round runs the two
// rsyncs in both orders, and the medians are reported with the view's
// request counts (see README.md).
//
//	go run ./bench/remoteview [-files 10000] [-rounds 3] [-ssh localhost | -sshd]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/fusefs/roview"
	"github.com/softxs/v2backup/jobs/pull"
	"github.com/softxs/v2backup/tiers"
)

func main() {
	files := flag.Int("files", 10000, "number of files in the tree")
	sshHost := flag.String("ssh", "", "pull over ssh from this host (e.g. localhost); empty: local rsync")
	sshd := flag.Bool("sshd", false, "start a private sshd on 127.0.0.1 and pull over ssh through it; also time jobs/pull")
	rounds := flag.Int("rounds", 3, "rounds of each measurement, each running direct and view in both orders; the median is reported")
	flag.Parse()
	if *rounds < 1 {
		fmt.Fprintf(os.Stderr, "remoteview bench: -rounds %d: want at least 1\n", *rounds)
		os.Exit(2)
	}
	if *sshd && *sshHost != "" {
		fmt.Fprintln(os.Stderr, "remoteview bench: -ssh and -sshd exclude each other")
		os.Exit(2)
	}
	if err := run(*files, *sshHost, *sshd, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "remoteview bench:", err)
		os.Exit(1)
	}
}

// privateSSHD is the JSON line sshdcmd prints (sshtest.Server).
type privateSSHD struct {
	Port       int
	User       string
	Addr       string
	Identity   string
	KnownHosts string
}

// startSSHD builds and starts jobs/sshtest/sshdcmd; stop ends it.
func startSSHD(work string) (srv privateSSHD, stop func(), err error) {
	bin := filepath.Join(work, "sshdcmd")
	if out, err := exec.Command("go", "build", "-o", bin, "./jobs/sshtest/sshdcmd").CombinedOutput(); err != nil {
		return srv, nil, fmt.Errorf("build sshdcmd (run from the module root): %v: %s", err, out)
	}
	dir := filepath.Join(work, "sshd")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return srv, nil, err
	}
	cmd := exec.Command(bin, dir)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return srv, nil, err
	}
	stop = func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	if err := json.NewDecoder(stdout).Decode(&srv); err != nil {
		stop()
		return srv, nil, fmt.Errorf("sshdcmd: %v", err)
	}
	go io.Copy(io.Discard, stdout)
	return srv, stop, nil
}

// view is one viewcmd process serving the remote view at mnt.
type view struct {
	cmd  *exec.Cmd
	mnt  string
	out  *bufio.Reader
	done bool
}

// startView mounts a fresh remote view of snapDir at mnt: nothing of it is
// in the kernel's caches, as on the day a new snapshot is pulled. Its
// manifests are kept in state, so only the first start hashes a snapshot.
func startView(bin, mnt, snapDir, state string) (*view, error) {
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-mode", "remote", "-mount", mnt, "-snapdir", snapDir, "-state", state,
		"-server", "bench.softxs.ch", "-idle", "200ms", "-poll", "50ms")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// Pass on what the view says, except that it shows a snapshot: every
	// round starts a view.
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if !strings.Contains(sc.Text(), "remote view now shows snapshot") {
				fmt.Fprintln(os.Stderr, sc.Text())
			}
		}
	}()
	v := &view{cmd: cmd, mnt: mnt, out: bufio.NewReader(stdout)}
	if line, err := v.out.ReadString('\n'); err != nil || line != "ready\n" {
		v.stop()
		return nil, fmt.Errorf("viewcmd at %s: first line %q, %v", mnt, line, err)
	}
	return v, nil
}

func (v *view) stop() {
	if v.done {
		return
	}
	v.done = true
	v.cmd.Process.Signal(syscall.SIGTERM)
	v.cmd.Wait()
	syscall.Unmount(v.mnt, syscall.MNT_DETACH) // in case it died mounted
}

// cpu is the CPU time the view's process has used so far.
func (v *view) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", v.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// utime and stime are fields 14 and 15, counted after the command
	// name, which may contain spaces but ends with the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", v.cmd.Process.Pid, b)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %v", v.cmd.Process.Pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

// requests asks viewcmd for its request counts (SIGUSR1, one JSON line).
func (v *view) requests() (map[string]uint64, error) {
	if err := v.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return nil, err
	}
	line, err := v.out.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("viewcmd request counts: %v", err)
	}
	var counts []roview.RequestCount
	if err := json.Unmarshal([]byte(line), &counts); err != nil {
		return nil, fmt.Errorf("viewcmd request counts %q: %v", line, err)
	}
	m := map[string]uint64{}
	for _, c := range counts {
		m[c.Op] = c.Count
	}
	return m, nil
}

// round is half a round: the direct rsync and the one through a fresh
// view, back to back in one order; the other half runs them in the other
// order (whichever goes first has been seen to lose up to 2x here).
type round struct {
	direct, view time.Duration
	viewCPU      time.Duration // the view's process, during its pull
	viewFirst    bool
}

func (r round) ratio() float64 { return float64(r.view) / float64(r.direct) }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDuration(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

// report prints the rounds of one measurement: the median times, the
// median and best of the rounds' ratios (each the geometric mean of its
// two orders), then each round's two ratios, direct first and view first.
// The machine is shared, so one round proves little.
func report(name string, rs []round) {
	var ds, vs, cs []time.Duration
	var ratios []float64
	var per []string
	for i, r := range rs {
		ds, vs, cs = append(ds, r.direct), append(vs, r.view), append(cs, r.viewCPU)
		if i%2 == 1 {
			ratios = append(ratios, math.Sqrt(rs[i-1].ratio()*r.ratio()))
			per = append(per, fmt.Sprintf("%.2f/%.2f", rs[i-1].ratio(), r.ratio()))
		}
	}
	fmt.Printf("%s direct %v  view %v  median ratio %.2fx  best %.2fx  rounds %s\n", name,
		medianDuration(ds).Round(time.Millisecond), medianDuration(vs).Round(time.Millisecond),
		median(ratios), slices.Min(ratios), strings.Join(per, " "))
	fmt.Printf("  CPU of the view's process during its pull: median %v\n", medianDuration(cs).Round(10*time.Millisecond))
}

// perFile prints the view's requests of one pull, per opcode and per file.
func perFile(name string, before, after map[string]uint64, files int) {
	var ops []string
	for op, n := range after {
		if n > before[op] {
			ops = append(ops, op)
		}
	}
	slices.Sort(ops)
	var parts []string
	total := uint64(0)
	for _, op := range ops {
		d := after[op] - before[op]
		total += d
		parts = append(parts, fmt.Sprintf("%s %d", op, d))
	}
	fmt.Printf("  requests to the view, %s: %s (%.2f per file)\n", name, strings.Join(parts, ", "), float64(total)/float64(files))
}

func run(nfiles int, sshHost string, sshd bool, rounds int) error {
	work, err := os.MkdirTemp("", "remoteview-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	sshCmd := "ssh -o BatchMode=yes"
	var srv privateSSHD
	if sshd {
		var stop func()
		srv, stop, err = startSSHD(work)
		if err != nil {
			return err
		}
		defer stop()
		sshHost = srv.User + "@" + srv.Addr
		sshCmd = fmt.Sprintf("ssh -p %d -i %s -o IdentitiesOnly=yes -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes",
			srv.Port, srv.Identity, srv.KnownHosts)
	}
	snapDir := filepath.Join(work, "snapshots")
	first := "2026-11-28T050000"
	if err := makeTree(filepath.Join(snapDir, first), nfiles); err != nil {
		return err
	}
	bin := filepath.Join(work, "viewcmd")
	if out, err := exec.Command("go", "build", "-o", bin, "./fusefs/roview/internal/viewcmd").CombinedOutput(); err != nil {
		return fmt.Errorf("build viewcmd (run from the module root): %v: %s", err, out)
	}
	mnt := filepath.Join(work, "view")
	state := filepath.Join(work, "viewstate")
	var cur *view
	defer func() {
		if cur != nil {
			cur.stop()
		}
	}()
	newView := func() (*view, error) {
		if cur != nil {
			cur.stop()
		}
		cur, err = startView(bin, mnt, snapDir, state)
		return cur, err
	}

	src := func(dir string) string {
		if sshHost != "" {
			return sshHost + ":" + dir + "/"
		}
		return dir + "/"
	}
	rsyncOnce := func(from, to string) (time.Duration, error) {
		args := []string{"-a"}
		if sshHost != "" {
			args = append(args, "-e", sshCmd)
		}
		args = append(args, from, to+"/")
		start := time.Now()
		out, err := exec.Command("rsync", args...).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("rsync %q: %v: %s", args, err, out)
		}
		return time.Since(start), nil
	}
	// aside moves a previous copy out of the way instead of deleting it:
	// on ext4 without a journal (this machine's and CI's disk) the inode
	// allocator steps over every inode freed in the last half minute, so
	// a copy made right after deleting 10,000 files ran up to several
	// times slower, whichever side it was (bench/fuse found the same).
	// The temp dir goes at the end.
	graveyard := filepath.Join(work, ".old")
	moved := 0
	aside := func(dir string) error {
		if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err := os.MkdirAll(graveyard, 0o755); err != nil {
			return err
		}
		moved++
		return os.Rename(dir, filepath.Join(graveyard, strconv.Itoa(moved)))
	}
	fresh := func(dst string) error {
		if err := aside(dst); err != nil {
			return err
		}
		return os.MkdirAll(dst, 0o755)
	}
	// measure runs the rounds of one comparison, each against a view
	// start gives (a fresh one, or one prepared otherwise), alternating
	// which of the two goes first. It keeps round 0's copies as
	// name-direct and name-view.
	var lastBefore, lastAfter map[string]uint64
	measure := func(name, direct, snapshot string, prepare func(dst string) error, start func() (*view, error)) ([]round, error) {
		var rs []round
		for i := range 2 * rounds {
			v, err := start()
			if err != nil {
				return nil, err
			}
			if b, err := os.ReadFile(filepath.Join(v.mnt, roview.DescName)); err != nil || !strings.Contains(string(b), snapshot) {
				return nil, fmt.Errorf("the view does not show %s: %s %v", snapshot, b, err)
			}
			r := round{viewFirst: i%2 == 1}
			dDst, vDst := filepath.Join(work, name+"-direct"), filepath.Join(work, name+"-view")
			if i > 0 {
				dDst, vDst = dDst+"-x", vDst+"-x"
			}
			for _, viewTurn := range []bool{r.viewFirst, !r.viewFirst} {
				dst, from := dDst, src(direct)
				if viewTurn {
					dst, from = vDst, src(v.mnt)
				}
				if err := prepare(dst); err != nil {
					return nil, err
				}
				// The previous copy's writeback must not land on this one.
				syscall.Sync()
				var before map[string]uint64
				var cpu0 time.Duration
				if viewTurn {
					if before, err = v.requests(); err != nil {
						return nil, err
					}
					if cpu0, err = v.cpu(); err != nil {
						return nil, err
					}
				}
				d, err := rsyncOnce(from, dst)
				if err != nil {
					return nil, err
				}
				if viewTurn {
					r.view = d
					cpu1, err := v.cpu()
					if err != nil {
						return nil, err
					}
					r.viewCPU = cpu1 - cpu0
					if lastAfter, err = v.requests(); err != nil {
						return nil, err
					}
					lastBefore = before
				} else {
					r.direct = d
				}
			}
			rs = append(rs, r)
		}
		for _, d := range []string{name + "-direct-x", name + "-view-x"} {
			if err := aside(filepath.Join(work, d)); err != nil {
				return nil, err
			}
		}
		return rs, nil
	}

	// Warm both sources' backing files once, as a daily pull finds them
	// (the snapshot was just written); the first view start hashes the
	// snapshot into the state directory.
	v, err := newView()
	if err != nil {
		return err
	}
	for _, from := range []string{src(filepath.Join(snapDir, first)), src(v.mnt)} {
		if _, err := rsyncOnce(from, filepath.Join(work, "warm")); err != nil {
			return err
		}
		if err := aside(filepath.Join(work, "warm")); err != nil {
			return err
		}
	}
	pull1, err := measure("pull1", filepath.Join(snapDir, first), first, fresh, newView)
	if err != nil {
		return err
	}
	before1, after1 := lastBefore, lastAfter

	// v2backup's whole pull through the view start gives (fresh for the
	// first pull, switched for the nightly one), each round into a fresh
	// backup partition (its own catalog).
	var breakdown []string
	fullPulls := func(name string, at time.Time, seed string, start func() (*view, error)) ([]time.Duration, error) {
		var ds []time.Duration
		var reps []*pull.Report
		for i := range rounds {
			if _, err := start(); err != nil {
				return nil, err
			}
			part := filepath.Join(work, name)
			if i > 0 {
				part += "-x"
			}
			if err := aside(part); err != nil {
				return nil, err
			}
			if seed != "" {
				if out, err := exec.Command("cp", "-a", seed, part).CombinedOutput(); err != nil {
					return nil, fmt.Errorf("cp -a: %v: %s", err, out)
				}
			}
			syscall.Sync()
			d, rep, err := fullPull(part, mnt, srv, at)
			if err != nil {
				return nil, err
			}
			ds, reps = append(ds, d), append(reps, rep)
		}
		if err := aside(filepath.Join(work, name+"-x")); err != nil {
			return nil, err
		}
		// the breakdown of the median round
		sorted := slices.Clone(ds)
		slices.Sort(sorted)
		r := reps[slices.Index(ds, sorted[len(sorted)/2])]
		res := r.Results[0]
		breakdown = append(breakdown, fmt.Sprintf("%s (median round): rsync %v, verify %v (%d of %d files read), switch %v, remote snapshot %v", name,
			res.Took[pull.StepRsync].Round(time.Millisecond), res.Took[pull.StepVerify].Round(time.Millisecond), res.Hashed, res.Files,
			res.Took[pull.StepSwitch].Round(time.Millisecond), r.SnapshotTook.Round(time.Millisecond)))
		return ds, nil
	}
	var full1 []time.Duration
	if sshd {
		if full1, err = fullPulls("full1", time.Date(2026, 11, 28, 6, 0, 0, 0, time.Local), "", newView); err != nil {
			return err
		}
	}

	// 1% changed: a new snapshot shares the rest by hard links.
	second := "2026-11-29T050000"
	if out, err := exec.Command("cp", "-al", filepath.Join(snapDir, first), filepath.Join(snapDir, ".building-"+second)).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -al: %v: %s", err, out)
	}
	if err := changeFiles(filepath.Join(snapDir, ".building-"+second), nfiles/100); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(snapDir, ".building-"+second), filepath.Join(snapDir, second)); err != nil {
		return err
	}
	// The running view moves to the new snapshot once idle, as between
	// two daily pulls; later rounds start fresh views on it.
	if err := waitShows(mnt, second); err != nil {
		return err
	}
	// second pull: into a copy of the first pull's result
	seed := func(base string) func(string) error {
		return func(dst string) error {
			if err := aside(dst); err != nil {
				return err
			}
			out, err := exec.Command("cp", "-a", base, dst).CombinedOutput()
			if err != nil {
				return fmt.Errorf("cp -a: %v: %s", err, out)
			}
			return nil
		}
	}
	seedBoth := func(dst string) error {
		if strings.Contains(filepath.Base(dst), "-view") {
			return seed(filepath.Join(work, "pull1-view"))(dst)
		}
		return seed(filepath.Join(work, "pull1-direct"))(dst)
	}
	pull2, err := measure("pull2", filepath.Join(snapDir, second), second, seedBoth, newView)
	if err != nil {
		return err
	}
	before2, after2 := lastBefore, lastAfter

	// The nightly case: the view pulled the previous snapshot, then moved
	// to the new one, keeping what the kernel knows of unchanged paths.
	// Each round hides the new snapshot, starts a view on the old one,
	// pulls it (as the night before did), shows the new one again and
	// waits for the view to switch.
	hidden := filepath.Join(snapDir, ".hidden-"+second)
	switched := func() (*view, error) {
		if err := os.Rename(filepath.Join(snapDir, second), hidden); err != nil {
			return nil, err
		}
		v, err := newView()
		if err == nil {
			_, err = rsyncOnce(src(v.mnt), filepath.Join(work, "night-before"))
		}
		if err == nil {
			err = aside(filepath.Join(work, "night-before"))
		}
		if rerr := os.Rename(hidden, filepath.Join(snapDir, second)); err == nil {
			err = rerr
		}
		if err != nil {
			return nil, err
		}
		return v, waitShows(v.mnt, second)
	}
	pull3, err := measure("pull3", filepath.Join(snapDir, second), second, seedBoth, switched)
	if err != nil {
		return err
	}
	before3, after3 := lastBefore, lastAfter
	var full2 []time.Duration
	if sshd {
		if full2, err = fullPulls("full2", time.Date(2026, 11, 29, 6, 0, 0, 0, time.Local), filepath.Join(work, "full1"), switched); err != nil {
			return err
		}
	}
	how := "local rsync"
	if sshHost != "" {
		how = "rsync over ssh to " + sshHost
	}
	if sshd {
		how += " (private sshd on port " + strconv.Itoa(srv.Port) + ")"
	}
	fmt.Printf("%d files, %s, %d rounds of direct,view + view,direct\n", nfiles, how, rounds)
	report("first pull (fresh view):      ", pull1)
	perFile("first pull, last round", before1, after1, nfiles)
	report("1% changed (fresh view):      ", pull2)
	perFile("1% changed, fresh view, last round", before2, after2, nfiles)
	report("1% changed (view switched):   ", pull3)
	perFile("1% changed, switched view, last round", before3, after3, nfiles)
	if sshd {
		fmt.Printf("v2backup pull (rsync + verify every file + switch + remote snapshot), median of %d:\n", rounds)
		d1 := medianDuration(roundsDirect(pull1))
		d2 := medianDuration(roundsDirect(pull3))
		fmt.Printf("first pull (fresh view):      %v  ratio to the median direct rsync %.2fx\n", medianDuration(full1).Round(time.Millisecond), float64(medianDuration(full1))/float64(d1))
		fmt.Printf("1%% changed (view switched):   %v  ratio to the median direct rsync %.2fx\n", medianDuration(full2).Round(time.Millisecond), float64(medianDuration(full2))/float64(d2))
		for _, b := range breakdown {
			fmt.Println("  " + b)
		}
	}
	return nil
}

// waitShows waits up to a minute for the view at mnt to show snapshot,
// which it moves to once idle.
func waitShows(mnt, snapshot string) error {
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(300 * time.Millisecond) {
		if b, _ := os.ReadFile(filepath.Join(mnt, roview.DescName)); strings.Contains(string(b), snapshot) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the view did not move to %s", snapshot)
		}
	}
}

func roundsDirect(rs []round) []time.Duration {
	var ds []time.Duration
	for _, r := range rs {
		ds = append(ds, r.direct)
	}
	return ds
}

// fullPull runs jobs/pull against the view into partition part.
func fullPull(part, view string, srv privateSSHD, at time.Time) (time.Duration, *pull.Report, error) {
	db, err := catalog.Open(filepath.Join(part, ".v2backup", "catalog.db"))
	if err != nil {
		return 0, nil, err
	}
	defer db.Close()
	start := time.Now()
	rep, err := pull.Run(context.Background(), pull.Options{
		BackupServer: "backup.softxs.ch", Partition: tiers.Partition(part), DB: db,
		Identity: srv.Identity, KnownHosts: srv.KnownHosts,
		Hosts:      []pull.Host{{Server: "bench.softxs.ch", SSH: srv.User + "@" + srv.Addr, Port: srv.Port, View: view}},
		HistoryDir: filepath.Join(part, "history"),
		Now:        func() time.Time { return at },
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	d := time.Since(start)
	if err != nil {
		return 0, nil, err
	}
	if r := rep.Results[0]; r.Files == 0 {
		return 0, nil, fmt.Errorf("pull copied nothing: %+v", r)
	}
	return d, rep, nil
}

// makeTree writes nfiles files of 1-64 KiB (about 32 KiB on average) in
// directories of 100, shaped like vm/host/app/dirN.
func makeTree(root string, nfiles int) error {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 64<<10)
	made := map[string]bool{}
	for i := range nfiles {
		vm := []string{"web", "intern", "wiki"}[i%3]
		dir := filepath.Join(root, vm, "demo.softxs.ch", "app", fmt.Sprintf("d%03d", i/100))
		if !made[dir] {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			made[dir] = true
		}
		n := 1<<10 + r.IntN(63<<10)
		for j := range n {
			buf[j] = byte(r.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), buf[:n], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// changeFiles replaces n files with new content (a new inode, as the
// read-write mount's copy-on-write would).
func changeFiles(root string, n int) error {
	var paths []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	step := max(len(paths)/max(n, 1), 1)
	for i := 0; i < len(paths) && n > 0; i += step {
		p := paths[i]
		os.Remove(p)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("changed %d\n", i)), 0o644); err != nil {
			return err
		}
		n--
	}
	return nil
}
