package fusefs

// Tests that run real tools (cp, rsync, tar, dd, sh) against a mount
// served by a separate process, fusefs/internal/mountcmd: a test process
// must not fork programs that use a mount it serves itself.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	mountcmdOnce sync.Once
	mountcmdBin  string
	mountcmdErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if mountcmdBin != "" {
		os.RemoveAll(filepath.Dir(mountcmdBin))
	}
	os.Exit(code)
}

func buildMountcmd(t *testing.T) string {
	t.Helper()
	mountcmdOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mountcmd")
		if err != nil {
			mountcmdErr = err
			return
		}
		bin := filepath.Join(dir, "mountcmd")
		out, err := exec.Command("go", "build", "-o", bin, "./internal/mountcmd").CombinedOutput()
		if err != nil {
			mountcmdErr = fmt.Errorf("go build mountcmd: %v\n%s", err, out)
			return
		}
		mountcmdBin = bin
	})
	if mountcmdErr != nil {
		t.Fatal(mountcmdErr)
	}
	return mountcmdBin
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (installed by .ci/install-deps): %v", tool, err)
		}
	}
}

// daemon is a mountcmd process serving one VM mount.
type daemon struct {
	cmd    *exec.Cmd
	mnt    string
	local  string
	events string
	stderr *bytes.Buffer
	done   chan error
	pt     bool
}

var toolApps = []string{"hydro=demo.softxs.ch/hydro", "www=www.softxs.ch", "track=intern.softxs.ch/tracking"}

func startDaemon(t *testing.T, mnt, local string, extra ...string) *daemon {
	t.Helper()
	bin := buildMountcmd(t)
	d := &daemon{mnt: mnt, local: local, events: filepath.Join(filepath.Dir(local), "events"), stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	args := []string{"-mountpoint", mnt, "-local-root", local, "-vm", "web", "-events", d.events}
	for _, a := range toolApps {
		args = append(args, "-app", a)
	}
	d.cmd = exec.Command(bin, append(args, extra...)...)
	d.cmd.Stderr = &syncWriter{w: d.stderr}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready") {
				ready <- sc.Text()
			}
		}
		close(ready)
	}()
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t, syscall.SIGKILL) })
	select {
	case line, ok := <-ready:
		if !ok {
			t.Fatalf("mountcmd exited before ready: %s", d.stderr)
		}
		d.pt = strings.Contains(line, "passthrough=true")
	case <-time.After(60 * time.Second):
		t.Fatalf("mountcmd not ready after 60s: %s", d.stderr)
	}
	return d
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// stop signals the daemon and waits for it; a daemon that does not exit
// within a minute is killed. The mount is detached in any case.
func (d *daemon) stop(t *testing.T, sig syscall.Signal) error {
	if d.cmd.ProcessState == nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(sig)
	}
	var err error
	select {
	case err = <-d.done:
		d.done <- err
	case <-time.After(time.Minute):
		d.cmd.Process.Kill()
		err = <-d.done
		d.done <- err
		t.Errorf("mountcmd did not exit after %v", sig)
	}
	unix.Unmount(d.mnt, unix.MNT_DETACH)
	return err
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

// makeSource copies a tree and varies its metadata: odd owners, special
// modes, a symlink, xattrs, old mtimes.
func makeSource(t *testing.T, from string) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	run(t, "cp", "-a", from, src)
	i := 0
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		i++
		switch {
		case i%7 == 0:
			if err := os.Lchown(p, 1000+i%50, 2000+i%30); err != nil {
				return err
			}
		case i%11 == 0 && !e.IsDir() && e.Type().IsRegular():
			if err := unix.Chmod(p, 0o2751); err != nil {
				return err
			}
		case i%13 == 0 && e.Type().IsRegular():
			if err := unix.Lsetxattr(p, "user.v2backup.test", []byte(fmt.Sprint(i)), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../go.mod", filepath.Join(src, "cmd", "link-to-gomod")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "sgid"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(filepath.Join(src, "sgid"), 0o2775); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(src, "sgid"), 0, 4242); err != nil {
		t.Fatal(err)
	}
	// Entries changed above get an old mtime: rsync, like cp, leaves a
	// time alone when it is within the same second as the copy's.
	old := unix.NsecToTimespec(time.Date(2020, 3, 4, 5, 6, 7, 8, time.UTC).UnixNano())
	for _, p := range []string{"cmd/link-to-gomod", "sgid", "cmd", "."} {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, p), []unix.Timespec{old, old}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

type entryMeta struct {
	typ         uint32
	mode        uint32
	uid, gid    uint32
	size        int64
	mtime       unix.Timespec
	link, xattr string
	sum         [32]byte
}

func metaOf(p string, withTime bool) (entryMeta, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return entryMeta{}, err
	}
	m := entryMeta{typ: st.Mode & unix.S_IFMT, mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid}
	if withTime {
		m.mtime = st.Mtim
	}
	switch m.typ {
	case unix.S_IFLNK:
		l, err := os.Readlink(p)
		if err != nil {
			return m, err
		}
		m.link = l
	case unix.S_IFREG:
		m.size = st.Size
		b, err := os.ReadFile(p)
		if err != nil {
			return m, err
		}
		m.sum = sha256.Sum256(b)
		x := make([]byte, 256)
		if n, err := unix.Lgetxattr(p, "user.v2backup.test", x); err == nil {
			m.xattr = string(x[:n])
		}
	}
	return m, nil
}

// compareTrees checks that every entry of src exists in each of dsts with
// the same type, mode, owner, size, content, symlink target, test xattr
// and (for files and symlinks; directories too when dirTimes) mtime.
func compareTrees(t *testing.T, src string, dirTimes bool, dsts ...string) {
	t.Helper()
	n := 0
	bad := 0
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		withTime := !e.IsDir() || dirTimes
		want, err := metaOf(p, withTime)
		if err != nil {
			return err
		}
		n++
		for _, d := range dsts {
			got, err := metaOf(filepath.Join(d, rel), withTime)
			if err != nil || got != want {
				bad++
				if bad < 10 {
					t.Errorf("%s in %s:\n got  %+v %v\n want %+v", rel, d, got, err, want)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if bad > 0 {
		t.Errorf("%d of %d entries differ", bad, n)
	}
	t.Logf("compared %d entries", n)
}

func TestToolsCopyTree(t *testing.T) {
	needTools(t, "cp", "rsync", "tar")
	src := makeSource(t, "/usr/local/go/src")
	base := t.TempDir()
	mnt, local := filepath.Join(base, "mnt"), filepath.Join(base, "local")
	os.Mkdir(mnt, 0o755)
	d := startDaemon(t, mnt, local)
	t.Logf("passthrough=%v", d.pt)
	app := filepath.Join(mnt, "demo.softxs.ch/hydro")
	bapp := filepath.Join(local, "web/demo.softxs.ch/hydro")

	start := time.Now()
	run(t, "rsync", "-aX", src+"/", app+"/rsync/")
	t.Logf("rsync -aX: %v", time.Since(start))
	start = time.Now()
	run(t, "cp", "-a", src, app+"/cp")
	t.Logf("cp -a: %v", time.Since(start))
	start = time.Now()
	os.Mkdir(app+"/tar", 0o755)
	run(t, "sh", "-c", fmt.Sprintf("tar -C %s/net -cf - --xattrs . | tar -C %s/tar -xpf - --xattrs --same-owner", src, app))
	t.Logf("tar x: %v", time.Since(start))

	compareTrees(t, src, true, app+"/rsync", bapp+"/rsync", bapp+"/cp")
	compareTrees(t, filepath.Join(src, "net"), true, app+"/tar")

	// A second rsync finds nothing to do: sizes, mtimes, modes and owners
	// all read back the same through the mount.
	out, err := exec.Command("rsync", "-aXi", "--dry-run", src+"/", app+"/rsync/").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("rsync rerun would change: %v\n%.2000s", err, out)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("mountcmd exit: %v\n%s", err, d.stderr)
	}
	// Every regular file cp wrote was reported to the Recorder.
	ev, err := os.ReadFile(d.events)
	if err != nil {
		t.Fatal(err)
	}
	written := map[string]bool{}
	for _, l := range strings.Split(string(ev), "\n") {
		f := strings.Split(l, "\t")
		if len(f) == 3 && f[0] == "written" {
			written[f[2]] = true
		}
	}
	missing := 0
	filepath.WalkDir(bapp+"/cp", func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			rel, _ := filepath.Rel(local, p)
			if !written[rel] {
				missing++
				if missing < 5 {
					t.Errorf("no written event for %s", rel)
				}
			}
		}
		return nil
	})
	if missing > 0 {
		t.Errorf("%d files without a written event", missing)
	}
}

func TestToolsConcurrentWriters(t *testing.T) {
	needTools(t, "cp")
	base := t.TempDir()
	mnt, local := filepath.Join(base, "mnt"), filepath.Join(base, "local")
	os.Mkdir(mnt, 0o755)
	startDaemon(t, mnt, local)
	dirs := []string{"net/http", "go/types", "crypto", "encoding"}
	var wg sync.WaitGroup
	errs := make([]error, len(dirs))
	for i, dir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := filepath.Join(mnt, "www.softxs.ch", fmt.Sprint(i))
			out, err := exec.Command("cp", "-a", filepath.Join("/usr/local/go/src", dir), dst).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("cp %s: %v\n%s", dir, err, out)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		compareTrees(t, filepath.Join("/usr/local/go/src", dirs[i]), true, filepath.Join(local, "web/www.softxs.ch", fmt.Sprint(i)))
	}
}

func TestToolsEscapes(t *testing.T) {
	needTools(t, "sh", "ln", "mkfifo", "mknod", "mv")
	base := t.TempDir()
	mnt, local := filepath.Join(base, "mnt"), filepath.Join(base, "local")
	os.Mkdir(mnt, 0o755)
	startDaemon(t, mnt, local)
	app := filepath.Join(mnt, "demo.softxs.ch/hydro")
	if err := os.WriteFile(app+"/f", []byte("f"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{
		"touch " + mnt + "/x",
		"mkdir " + mnt + "/demo.softxs.ch/y",
		"touch " + app + "/../z",
		"ln -s /etc/passwd " + app + "/l",
		"ln -s ../../www.softxs.ch " + app + "/l",
		"ln " + app + "/f " + app + "/hard",
		"mkfifo " + app + "/fifo",
		"mknod " + app + "/null c 1 3",
		"mv " + app + " " + mnt + "/demo.softxs.ch/moved",
	} {
		if out, err := exec.Command("sh", "-c", c).CombinedOutput(); err == nil {
			t.Errorf("%s succeeded", c)
		} else {
			t.Logf("%s: %s", c, bytes.TrimSpace(out))
		}
	}
	// mv across applications copies and deletes (EXDEV fallback).
	run(t, "mv", app+"/f", filepath.Join(mnt, "www.softxs.ch/f"))
	if _, err := os.Stat(filepath.Join(local, "web/www.softxs.ch/f")); err != nil {
		t.Errorf("mv across apps: %v", err)
	}
	if _, err := os.Stat(filepath.Join(local, "web/demo.softxs.ch/hydro/f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mv across apps left the source: %v", err)
	}
}

// TestToolsCopyOnWrite: in-place changes by real tools through the mount
// never reach a hard link outside it (a snapshot).
func TestToolsCopyOnWrite(t *testing.T) {
	needTools(t, "dd", "sh", "rsync", "chmod", "touch")
	base := t.TempDir()
	mnt, local := filepath.Join(base, "mnt"), filepath.Join(base, "local")
	os.Mkdir(mnt, 0o755)
	startDaemon(t, mnt, local)
	app := filepath.Join(mnt, "demo.softxs.ch/hydro")
	bapp := filepath.Join(local, "web/demo.softxs.ch/hydro")
	snap := filepath.Join(base, "snapshot")
	os.Mkdir(snap, 0o755)
	src := filepath.Join(base, "src")
	os.Mkdir(src, 0o755)
	names := []string{"dd", "append", "rdwr", "chmod", "touch", "rsync"}
	old := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(src, n), []byte("0123456789"), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(filepath.Join(src, n), old, old)
	}
	run(t, "rsync", "-a", src+"/", app+"/")
	for _, n := range names {
		if err := os.Link(filepath.Join(bapp, n), filepath.Join(snap, n)); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string]entryMeta{}
	for _, n := range names {
		m, err := metaOf(filepath.Join(snap, n), true)
		if err != nil {
			t.Fatal(err)
		}
		before[n] = m
	}
	run(t, "dd", "if=/dev/zero", "of="+app+"/dd", "bs=1", "count=2", "seek=3", "conv=notrunc")
	run(t, "sh", "-c", "echo more >> "+app+"/append")
	run(t, "sh", "-c", "printf XY 1<>"+app+"/rdwr") // O_RDWR at offset 0, no truncation
	run(t, "chmod", "600", app+"/chmod")
	run(t, "touch", app+"/touch")
	if err := unix.Chmod(filepath.Join(src, "rsync"), 0o751); err != nil {
		t.Fatal(err)
	}
	run(t, "rsync", "-a", src+"/rsync", app+"/rsync")
	for _, n := range names {
		m, err := metaOf(filepath.Join(snap, n), true)
		if err != nil {
			t.Fatal(err)
		}
		if m != before[n] {
			t.Errorf("snapshot of %s changed: %+v -> %+v", n, before[n], m)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(bapp, n), &st); err != nil || st.Nlink != 1 {
			t.Errorf("live %s still shared: nlink %d %v", n, st.Nlink, err)
		}
	}
	for n, want := range map[string]string{"dd": "012\x00\x0056789", "append": "0123456789more\n", "rdwr": "XY23456789"} {
		if b, _ := os.ReadFile(filepath.Join(bapp, n)); string(b) != want {
			t.Errorf("live %s = %q, want %q", n, b, want)
		}
	}
	for n, want := range map[string]uint32{"chmod": 0o600, "rsync": 0o751} {
		if m, _ := metaOf(filepath.Join(bapp, n), false); m.mode != want || m.sum != before[n].sum {
			t.Errorf("live %s mode %o", n, m.mode)
		}
	}
	if m, _ := metaOf(filepath.Join(bapp, "touch"), true); m.mtime.Sec <= old.Unix() {
		t.Errorf("touch did not change the live mtime")
	}
}

// TestToolsCrashAndRestart: SIGTERM during an rsync, then SIGKILL of the
// daemon: each time the mount point is recovered, the rerun completes and
// the tree is identical to its source.
func TestToolsCrashAndRestart(t *testing.T) {
	needTools(t, "rsync")
	base := t.TempDir()
	mnt, local := filepath.Join(base, "mnt"), filepath.Join(base, "local")
	os.Mkdir(mnt, 0o755)
	src := "/usr/local/go/src/cmd" // ~5,000 entries: long enough to interrupt
	d := startDaemon(t, mnt, local)
	dst := filepath.Join(mnt, "www.softxs.ch/cmd") + "/"
	rs := exec.Command("rsync", "-a", src+"/", dst)
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	rsDone := make(chan error, 1)
	go func() { rsDone <- rs.Wait() }()
	// Wait until rsync has written something, then stop the daemon.
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := os.Stat(filepath.Join(local, "web/www.softxs.ch/cmd/go/go_test.go"))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Logf("mountcmd exit after SIGTERM during rsync: %v", err)
	}
	rsErr := <-rsDone
	t.Logf("rsync after SIGTERM of the daemon: %v", rsErr)
	if err := RecoverStale(mnt); err != nil {
		t.Fatal(err)
	}

	d = startDaemon(t, mnt, local)
	run(t, "rsync", "-a", src+"/", dst)
	compareTrees(t, src, true, filepath.Join(local, "web/www.softxs.ch/cmd"), dst)

	// SIGKILL leaves a stale mount: "transport endpoint is not connected"
	// (ECONNABORTED when the connection was served through io_uring: the
	// rings' teardown aborts it; until that teardown, which the kernel
	// runs asynchronously, a request may fail with ECANCELED).
	d.cmd.Process.Kill()
	<-d.done
	d.done <- nil
	var sfs unix.Statfs_t
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := unix.Statfs(mnt, &sfs)
		if errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED) {
			break
		}
		if !errors.Is(err, unix.ECANCELED) || time.Now().After(deadline) {
			t.Fatalf("statfs after SIGKILL: %v, want ENOTCONN or ECONNABORTED", err)
		}
	}
	if err := RecoverStale(mnt); err != nil {
		t.Fatal(err)
	}
	if err := RecoverStale(mnt); err != nil { // healthy now: no-op
		t.Fatal(err)
	}
	startDaemon(t, mnt, local)
	compareTrees(t, src, true, dst)
}

// TestToolsOwnerOfNewEntries: files, directories and symlinks created
// through the mount belong to the calling user and group, except that a
// set-group-ID directory hands down its group (and its bit to
// directories); a root caller's entries need no chown at all.
func TestToolsOwnerOfNewEntries(t *testing.T) {
	needTools(t, "sh", "touch", "mkdir", "ln")
	base := t.TempDir()
	// The unprivileged caller must reach the mount point.
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mnt, local := filepath.Join(base, "mnt"), filepath.Join(base, "local")
	os.Mkdir(mnt, 0o755)
	startDaemon(t, mnt, local)
	app := filepath.Join(mnt, "demo.softxs.ch/hydro")
	if err := os.Chmod(app, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(app+"/sg", 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(app+"/sg", 0, 4242); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(app+"/sg", 0o2777); err != nil {
		t.Fatal(err)
	}
	script := func(dir string) string {
		return fmt.Sprintf("cd %s && touch f && mkdir d && ln -s f l", dir)
	}
	run(t, "sh", "-c", "mkdir "+app+"/root && "+script(app+"/root")+" && mkdir "+app+"/sg/root && "+script(app+"/sg/root"))
	for _, dir := range []string{app + "/user", app + "/sg/user"} {
		if err := os.Mkdir(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		// Writable for the caller; sg/user keeps the bit sg handed down.
		mode := uint32(0o777)
		if strings.Contains(dir, "/sg/") {
			mode |= syscall.S_ISGID
		}
		if err := unix.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", script(dir))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1234, Gid: 5678}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("as uid 1234: %s: %v\n%s", script(dir), err, out)
		}
	}
	backing := filepath.Join(local, "web/demo.softxs.ch/hydro")
	for _, c := range []struct {
		rel      string
		uid, gid uint32
	}{
		{"root/f", 0, 0}, {"root/d", 0, 0}, {"root/l", 0, 0},
		{"sg/root/f", 0, 4242}, {"sg/root/d", 0, 4242}, {"sg/root/l", 0, 4242},
		{"user/f", 1234, 5678}, {"user/d", 1234, 5678}, {"user/l", 1234, 5678},
		// sg/user itself was made by root in sg: group 4242, handed down.
		{"sg/user/f", 1234, 4242}, {"sg/user/d", 1234, 4242}, {"sg/user/l", 1234, 4242},
	} {
		for _, p := range []string{filepath.Join(app, c.rel), filepath.Join(backing, c.rel)} {
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != c.uid || st.Gid != c.gid {
				t.Errorf("%s: uid %d gid %d, want %d %d", p, st.Uid, st.Gid, c.uid, c.gid)
			}
			if strings.HasSuffix(c.rel, "/d") && strings.HasPrefix(c.rel, "sg/") && st.Mode&syscall.S_ISGID == 0 {
				t.Errorf("%s: mode %o lost the set-group-ID bit of its parent", p, st.Mode)
			}
		}
	}
}
