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
// is served by a separate process (internal/viewcmd), never by this one.
//
//	go run ./bench/remoteview [-files 10000] [-ssh localhost | -sshd]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/pull"
	"github.com/softxs/v2backup/tiers"
)

func main() {
	files := flag.Int("files", 10000, "number of files in the tree")
	sshHost := flag.String("ssh", "", "pull over ssh from this host (e.g. localhost); empty: local rsync")
	sshd := flag.Bool("sshd", false, "start a private sshd on 127.0.0.1 and pull over ssh through it; also time jobs/pull")
	rounds := flag.Int("rounds", 3, "repetitions of each measurement; the best is reported")
	flag.Parse()
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
	os.Mkdir(mnt, 0o755)
	cmd := exec.Command(bin, "-mode", "remote", "-mount", mnt, "-snapdir", snapDir,
		"-server", "bench.softxs.ch", "-idle", "200ms", "-poll", "50ms")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		syscall.Unmount(mnt, syscall.MNT_DETACH)
	}()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		return fmt.Errorf("viewcmd: %q, %v", line, err)
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
	best := func(name, from string, prepare func(dst string) error) (time.Duration, error) {
		var b time.Duration
		for i := range rounds {
			dst := filepath.Join(work, fmt.Sprintf("%s-%d", name, i))
			if err := prepare(dst); err != nil {
				return 0, err
			}
			d, err := rsyncOnce(from, dst)
			if err != nil {
				return 0, err
			}
			if b == 0 || d < b {
				b = d
			}
		}
		return b, nil
	}
	fresh := func(dst string) error { os.RemoveAll(dst); return os.MkdirAll(dst, 0o755) }

	// warm both sources once, as a daily pull would find them
	for _, from := range []string{src(filepath.Join(snapDir, first)), src(mnt)} {
		if _, err := rsyncOnce(from, filepath.Join(work, "warm")); err != nil {
			return err
		}
		os.RemoveAll(filepath.Join(work, "warm"))
	}
	direct1, err := best("direct", src(filepath.Join(snapDir, first)), fresh)
	if err != nil {
		return err
	}
	view1, err := best("view", src(mnt), fresh)
	if err != nil {
		return err
	}

	// v2backup's whole pull through the view, each round into a fresh
	// backup partition (its own catalog).
	var breakdown []string
	pullBest := func(name string, at time.Time, seed string) (time.Duration, error) {
		var b time.Duration
		var bestRep *pull.Report
		for i := range rounds {
			part := filepath.Join(work, fmt.Sprintf("%s-%d", name, i))
			os.RemoveAll(part)
			if seed != "" {
				if out, err := exec.Command("cp", "-a", seed, part).CombinedOutput(); err != nil {
					return 0, fmt.Errorf("cp -a: %v: %s", err, out)
				}
			}
			d, rep, err := fullPull(part, mnt, srv, at)
			if err != nil {
				return 0, err
			}
			if b == 0 || d < b {
				b, bestRep = d, rep
			}
		}
		r := bestRep.Results[0]
		breakdown = append(breakdown, fmt.Sprintf("%s: rsync %v, verify %v (%d of %d files read), switch %v, remote snapshot %v", name,
			r.Took[pull.StepRsync].Round(time.Millisecond), r.Took[pull.StepVerify].Round(time.Millisecond), r.Hashed, r.Files,
			r.Took[pull.StepSwitch].Round(time.Millisecond), bestRep.SnapshotTook.Round(time.Millisecond)))
		return b, nil
	}
	var pull1 time.Duration
	if sshd {
		if pull1, err = pullBest("pull", time.Date(2026, 11, 28, 6, 0, 0, 0, time.Local), ""); err != nil {
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
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(filepath.Join(mnt, "SNAPSHOT.json"))
		if strings.Contains(string(b), second) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the view did not move to %s", second)
		}
		time.Sleep(300 * time.Millisecond) // let the view go idle
	}
	// second pull: into a copy of the first pull's result
	seed := func(base string) func(string) error {
		return func(dst string) error {
			os.RemoveAll(dst)
			out, err := exec.Command("cp", "-a", base, dst).CombinedOutput()
			if err != nil {
				return fmt.Errorf("cp -a: %v: %s", err, out)
			}
			return nil
		}
	}
	direct2, err := best("direct2", src(filepath.Join(snapDir, second)), seed(filepath.Join(work, "direct-0")))
	if err != nil {
		return err
	}
	view2, err := best("view2", src(mnt), seed(filepath.Join(work, "view-0")))
	if err != nil {
		return err
	}
	var pull2 time.Duration
	if sshd {
		if pull2, err = pullBest("pull2", time.Date(2026, 11, 29, 6, 0, 0, 0, time.Local), filepath.Join(work, "pull-0")); err != nil {
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
	fmt.Printf("%d files, %s, best of %d\n", nfiles, how, rounds)
	fmt.Printf("first pull:   direct %v  view %v  ratio %.2fx\n", direct1.Round(time.Millisecond), view1.Round(time.Millisecond), float64(view1)/float64(direct1))
	fmt.Printf("1%% changed:   direct %v  view %v  ratio %.2fx\n", direct2.Round(time.Millisecond), view2.Round(time.Millisecond), float64(view2)/float64(direct2))
	if sshd {
		fmt.Printf("v2backup pull (rsync + verify every file + switch + remote snapshot):\n")
		fmt.Printf("first pull:   %v  ratio to direct rsync %.2fx\n", pull1.Round(time.Millisecond), float64(pull1)/float64(direct1))
		fmt.Printf("1%% changed:   %v  ratio to direct rsync %.2fx\n", pull2.Round(time.Millisecond), float64(pull2)/float64(direct2))
		for _, b := range breakdown {
			fmt.Println("  " + b)
		}
	}
	return nil
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
