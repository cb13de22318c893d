package fusefs

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func TestPrivBits(t *testing.T) {
	for mode, want := range map[uint32]uint32{
		0o4755: unix.S_ISUID,
		0o2755: unix.S_ISGID,
		0o2745: 0, // set-group-ID without group execute: mandatory locking, kept
		0o6775: unix.S_ISUID | unix.S_ISGID,
		0o0777: 0,
	} {
		if got := privBits(mode); got != want {
			t.Errorf("privBits(%o) = %o, want %o", mode, got, want)
		}
	}
}

// TestKillPrivThroughMount: with FUSE_HANDLE_KILLPRIV_V2 the daemon, not
// the kernel, clears set-ID bits when an unprivileged process writes,
// truncates or fallocates; root keeps them (CAP_FSETID), and the kernel
// no longer asks for security.capability before every write.
func TestKillPrivThroughMount(t *testing.T) {
	needTools(t, "sh", "fallocate", "perl")
	tm := mountT(t, "web", testApps, func(c *Config) { c.Stats = true })
	// uid 1000 must reach the mount through the test's private temp dirs.
	for d := filepath.Dir(tm.mnt); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if tm.m.server.KernelSettings().Flags64()&fuse.CAP_HANDLE_KILLPRIV_V2 == 0 {
		t.Fatal("the kernel did not take FUSE_HANDLE_KILLPRIV_V2")
	}
	dir := tm.p("www.softxs.ch/priv")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	files := map[string]uint32{ // name: mode set by root
		"append": 0o4777, "sgid": 0o2777, "sgidnox": 0o2766, "both": 0o6777,
		"truncate": 0o4777, "fallocate": 0o4777, "root": 0o4777, "readonly": 0o4777,
	}
	for name, mode := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, os.FileMode(mode&0o777)|modeBits(mode)); err != nil {
			t.Fatal(err)
		}
	}
	asUser := func(args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v as uid 1000: %v: %s", args, err, out)
		}
	}
	in := func(name string) string { return filepath.Join(dir, name) }
	for _, name := range []string{"append", "sgid", "sgidnox", "both"} {
		asUser("sh", "-c", "printf more >> "+in(name))
	}
	asUser("fallocate", "-l", "8192", in("fallocate"))
	asUser("sh", "-c", "cat "+in("readonly")+" >/dev/null")
	// truncate(2) by path: a SETATTR with FATTR_KILL_SUIDGID, no open.
	asUser("perl", "-e", "truncate($ARGV[0], 1) or die $!", in("truncate"))
	if err := os.WriteFile(in("root"), []byte("root writes"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{
		"append": 0o777, "sgid": 0o777, "sgidnox": 0o2766, "both": 0o777,
		"truncate": 0o777, "fallocate": 0o777, "root": 0o4777, "readonly": 0o4777,
	}
	for name, w := range want {
		for _, p := range []string{in(name), filepath.Join(tm.bp("www.softxs.ch/priv"), name)} {
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&0o7777 != w {
				t.Errorf("%s: mode %o, want %o", p, st.Mode&0o7777, w)
			}
		}
	}
	if b, err := os.ReadFile(in("append")); err != nil || string(b) != "datamore" {
		t.Errorf("append: %q, %v", b, err)
	}

	// A 4 MiB file written 1 MiB at a time: the kernel asks for
	// security.capability at most once, not before every write.
	before := getxattrs(tm)
	f, err := os.Create(in("big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for range 4 {
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if n := getxattrs(tm) - before; n > 1 {
		t.Errorf("%d GETXATTR requests for 4 writes, want at most 1", n)
	}
}

func modeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	return m
}

func getxattrs(tm *testMount) uint64 {
	for _, s := range tm.m.Stats() {
		if s.Op == "GETXATTR" {
			return s.Count
		}
	}
	return 0
}
