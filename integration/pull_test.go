package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/jobs/sshtest"
)

// pullInventory is historyVMs reachable over ssh, with a backup server
// pulling it into its own partition.
func pullInventory(s *sshtest.Server) string {
	inv := strings.Replace(historyVMs, `history_mount = "{root}/history"`, fmt.Sprintf(`ssh = "%s"
ssh_port = %d
remote_view_idle = "1s"`, s.Target(), s.Port), 1)
	return inv + fmt.Sprintf(`
[[backup_server]]
name = "odin.softxs.ch"
partition = "{root}/odin/v01/backup"
pulls = ["zg-3.softxs.ch"]
identity = "%s"
known_hosts = "%s"
`, s.Identity, s.KnownHosts)
}

// waitView waits for the daemon's log to say the remote view shows snap.
func (d *daemon) waitView(t *testing.T, snap string) {
	t.Helper()
	re := regexp.MustCompile(`remote view now shows snapshot.*snapshot=` + regexp.QuoteMeta(snap))
	deadline := time.Now().Add(60 * time.Second)
	for !re.MatchString(d.log.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("the remote view never showed snapshot %s", snap)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// withoutManifests drops the files the remote view adds at its root.
func withoutManifests(m map[string]entry) map[string]entry {
	for _, k := range []string{"SHA256SUMS", "SNAPSHOT.json", "CATALOG.db"} {
		delete(m, k)
	}
	return m
}

// childRsync finds an rsync process below pid by scanning /proc.
func childRsync(pid int) int {
	parent := map[int]int{}
	comm := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[p], comm[p] = pp, s[open+1:close]
	}
	for p, c := range comm {
		if c != "rsync" {
			continue
		}
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				return p
			}
		}
	}
	return 0
}

// Issue 5: a backup server pulls a consistent image while the VMs keep
// writing, verifies it, detects corruption, survives an interrupted pull,
// and copies off site, refusing a drive that fills up.
func TestPull(t *testing.T) {
	s := sshtest.StartT(t)
	e := newEnv(t)
	e.writeInventory(pullInventory(s))
	d := e.startDaemon()
	odin := *e
	odin.server = "odin.softxs.ch"
	hydro := e.path("mnt/web/demo.softxs.ch/hydro")
	tracking := e.path("mnt/intern/intern.softxs.ch/tracking")
	sh(t, hydro, `mkdir -p db var && for i in $(seq 1 100); do head -c $((i*50)) /dev/urandom > var/a$i; done
		echo dump-1 > db/dump.sql && echo log > app.log`)
	sh(t, tracking, `for i in $(seq 1 50); do echo "issue $i" > i$i; done`)
	s1, _ := e.quietSnapshot()
	want := snapshotTree(t, filepath.Join(e.partition, "snapshots/local", s1))
	d.waitView(t, s1)

	// Two writers keep changing both VMs' trees while the pull runs.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, dir := range []string{hydro, tracking} {
		wg.Add(1)
		go func(dir string) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				script := fmt.Sprintf(`echo more-%[1]d >> app.log 2>/dev/null || echo more-%[1]d >> i1; head -c 4096 /dev/urandom > new-%[1]d`, i)
				cmd := exec.Command("bash", "-euc", script)
				cmd.Dir = dir
				if out, err := cmd.CombinedOutput(); err != nil {
					errs <- fmt.Errorf("writer in %s: %v: %s", dir, err, out)
					return
				}
			}
		}(dir)
	}
	out, errOut, code := odin.v2backup("pull")
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if code != 0 {
		t.Fatalf("pull: exit %d\n%s\n%s", code, out, errOut)
	}
	copyDir := e.path("odin/v01/backup/remote/zg-3.softxs.ch")
	compareTrees(t, "pulled copy vs snapshot "+s1, want, withoutManifests(snapshotTree(t, copyDir)))
	if _, err := os.Stat(filepath.Join(hydro, "new-0")); err != nil {
		t.Fatalf("the writers wrote nothing during the pull: %v", err)
	}
	if _, err := os.Stat(filepath.Join(copyDir, "web/demo.softxs.ch/hydro/new-0")); err == nil {
		t.Error("the copy holds a file written after the snapshot: it is the live tree, not the snapshot")
	}
	sh(t, copyDir, "sha256sum --quiet -c SHA256SUMS")
	if out, errOut, code := odin.v2backup("verify"); code != 0 {
		t.Errorf("verify on the backup server: exit %d\n%s\n%s", code, out, errOut)
	}

	// One flipped byte in the backup server's latest snapshot.
	victim := "zg-3.softxs.ch/web/demo.softxs.ch/hydro/var/a42"
	p := filepath.Join(e.path("odin/v01/backup/snapshots/remote/latest"), victim)
	orig, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, 7)
	f.WriteAt([]byte{b[0] ^ 0xff}, 7)
	out, errOut, code = odin.v2backup("verify")
	if code != 1 || !strings.Contains(out, victim) {
		t.Errorf("verify after corrupting %s: exit %d, want 1 naming the file\n%s\n%s", victim, code, out, errOut)
	}
	f.WriteAt(b, 7)
	f.Close()
	os.Chtimes(p, orig.ModTime(), orig.ModTime())
	if out, errOut, code := odin.v2backup("verify"); code != 0 {
		t.Errorf("verify after repairing %s: exit %d\n%s\n%s", victim, code, out, errOut)
	}

	// Off site: a directory standing in for a drive.
	usb := e.path("usb")
	os.MkdirAll(usb, 0o755)
	if out, errOut, code := odin.v2backup("offsite", "--to", usb, "--label", "usb-1"); code != 0 {
		t.Fatalf("offsite: exit %d\n%s\n%s", code, out, errOut)
	}
	compareTrees(t, "off-site copy", want, withoutManifests(snapshotTree(t, filepath.Join(usb, "v2backup/zg-3.softxs.ch/local"))))
	sh(t, filepath.Join(usb, "v2backup/zg-3.softxs.ch/local"), "sha256sum --quiet -c SHA256SUMS")
	out, errOut, code = odin.v2backup("offsite", "status")
	if code != 0 || !strings.Contains(out, "usb-1") {
		t.Errorf("offsite status: exit %d, want usb-1\n%s\n%s", code, out, errOut)
	}

	// A drive too small: a clear error, exit 1.
	small := e.path("small")
	os.MkdirAll(small, 0o755)
	if err := unix.Mount("tmpfs", small, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(small, unix.MNT_DETACH) })
	out, errOut, code = odin.v2backup("offsite", "--to", small, "--label", "small-1")
	if code != 1 || !strings.Contains(errOut, "space") || !strings.Contains(errOut, small) {
		t.Errorf("offsite to a full drive: exit %d, want 1 with an error naming the drive and the lack of space\n%s\n%s", code, out, errOut)
	}

	// A new snapshot with a big file; the pull is killed mid-rsync and the
	// last good copy stays.
	sh(t, hydro, "dd if=/dev/urandom of=big.bin bs=1M count=256 status=none")
	s2, _ := e.quietSnapshot()
	d.waitView(t, s2)
	pull := exec.Command(bin, "--config", e.inventory, "--server", "odin.softxs.ch", "pull")
	var pullOut strings.Builder
	pull.Stdout, pull.Stderr = &pullOut, &pullOut
	pull.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := pull.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pull.Process.Kill(); pull.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	rsync := 0
	for rsync == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the pull never started rsync")
		}
		rsync = childRsync(pull.Process.Pid)
		time.Sleep(5 * time.Millisecond)
	}
	syscall.Kill(rsync, syscall.SIGKILL)
	err = pull.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("interrupted pull: %v, want exit 1\n%s", err, pullOut.String())
	}
	compareTrees(t, "copy after an interrupted pull", want, withoutManifests(snapshotTree(t, copyDir)))
	sh(t, copyDir, "sha256sum --quiet -c SHA256SUMS")
	if out, errOut, code := odin.v2backup("verify"); code != 0 {
		t.Errorf("verify after an interrupted pull: exit %d\n%s\n%s", code, out, errOut)
	}
}
