package integration

import (
	"fmt"
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

// twoVMs is a host with two VMs, two apps on one of them, and one app with no VM.
const twoVMs = `
[site]
name = "test"
partition = "{root}/v01/backup"

[[server]]
name = "zg-3.softxs.ch"
host_mount = "{root}/mnt/_host"
remote_view = "{root}/view"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"
mount = "{root}/mnt/web"

[[vm]]
name = "intern"
server = "zg-3.softxs.ch"
mount = "{root}/mnt/intern"

[[app]]
name = "hydro"
server = "zg-3.softxs.ch"
vm = "web"
path = "/home/v2/rails/demo.softxs.ch/hydro"
relpath = "demo.softxs.ch/hydro"
type = "files"

[[app]]
name = "www"
server = "zg-3.softxs.ch"
vm = "web"
path = "/home/v2/rails/www.softxs.ch"
relpath = "www.softxs.ch"
type = "files"

[[app]]
name = "tracking"
server = "zg-3.softxs.ch"
vm = "intern"
path = "/home/v2/rails/intern.softxs.ch/tracking"
relpath = "intern.softxs.ch/tracking"
type = "files"

[[app]]
name = "cardenillo"
server = "zg-3.softxs.ch"
path = "/home/cardenillo/html/prod/var"
relpath = "cardenillo.softxs.ch"
type = "drawmgt"
`

// The heart of the product: cp -a and rsync -a of a real tree through the
// mount land in the local tier identical to the source, and the catalog
// matches the disk file for file.
func TestCopyTreesThroughMount(t *testing.T) {
	e := newEnv(t)
	e.writeInventory(twoVMs)
	e.startDaemon()
	src := makeSourceTree(t, e.root, "")
	want := snapshotTree(t, src)

	app := e.path("mnt/web/demo.softxs.ch/hydro")
	backing := filepath.Join(e.partition, "local/web/demo.softxs.ch/hydro")
	sh(t, e.root, fmt.Sprintf("cp -a %s %s/cp", src, app))
	sh(t, e.root, fmt.Sprintf("rsync -aX %s/ %s/rsync/", src, app))
	sh(t, e.root, fmt.Sprintf("mkdir %[2]s/tar && tar --xattrs -C %[1]s -cf - . | tar --xattrs --xattrs-include='*' -C %[2]s/tar -xpf -", src, app))

	for _, dir := range []string{"cp", "rsync", "tar"} {
		var ignore []string
		if dir == "tar" {
			ignore = append(ignore, ignoreDirMtime)
		}
		compareTrees(t, dir+" through the mount", want, snapshotTree(t, filepath.Join(app, dir)), ignore...)
		compareTrees(t, dir+" in the backing dir", want, snapshotTree(t, filepath.Join(backing, dir)), ignore...)
	}
	// The tools agree with us: find and sha256sum through the mount.
	n := len(lines(sh(t, app, "find rsync -type f")))
	if n < 10000 {
		t.Errorf("find through the mount saw %d files, want the Go tree's >= 10000", n)
	}
	sh(t, app, "cd rsync && find . -type f -print0 | xargs -0 sha256sum > /tmp/v2bi-sums-$$ && cd "+filepath.Join(backing, "rsync")+" && sha256sum --quiet -c /tmp/v2bi-sums-$$; rm -f /tmp/v2bi-sums-$$")

	// The catalog matches the backing tree, sizes and hashes included.
	e.expectCatalogMatchesDisk()
}

// expectCatalogMatchesDisk waits for the catalog to settle and then runs
// `v2backup verify --live`, which re-hashes every live file and compares.
func (e *env) expectCatalogMatchesDisk() {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, errOut, code := e.v2backup("verify", "--live")
		if code == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("catalog does not match the disk (exit %d):\n%s\n%s", code, out, errOut)
		}
		time.Sleep(250 * time.Millisecond) // polling the catalog writer, not waiting for readiness
	}
}

// Several processes writing at once, into several apps and VMs.
func TestConcurrentWriters(t *testing.T) {
	e := newEnv(t)
	e.writeInventory(twoVMs)
	e.startDaemon()
	targets := []string{"mnt/web/demo.softxs.ch/hydro", "mnt/web/www.softxs.ch", "mnt/intern/intern.softxs.ch/tracking", "mnt/_host/cardenillo.softxs.ch"}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			dir := filepath.Join(e.path(targets[i%len(targets)]), fmt.Sprintf("w%d", i))
			script := fmt.Sprintf(`mkdir -p %[1]s && for j in $(seq 1 200); do head -c $((j*37)) /dev/urandom > %[1]s/f$j; done
				dd if=/dev/urandom of=%[1]s/big bs=1M count=8 conv=fsync status=none
				cat %[1]s/f* >> %[1]s/all`, dir)
			if out, err := exec.Command("bash", "-euc", script).CombinedOutput(); err != nil {
				errs <- fmt.Errorf("writer %d: %v: %s", i, err, out)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := 0; i < 8; i++ {
		rel := strings.TrimPrefix(targets[i%len(targets)], "mnt/")
		through := snapshotTree(t, filepath.Join(e.path("mnt"), rel, fmt.Sprintf("w%d", i)))
		vm, relpath, _ := strings.Cut(rel, "/")
		backing := snapshotTree(t, filepath.Join(e.partition, "local", vm, relpath, fmt.Sprintf("w%d", i)))
		compareTrees(t, "writer "+fmt.Sprint(i), through, backing)
		if len(backing) != 202 {
			t.Errorf("writer %d: %d files in the backing dir, want 202", i, len(backing))
		}
	}
	e.expectCatalogMatchesDisk()
}

// Every way out of a VM's tree is refused, and nothing lands outside.
func TestEscapes(t *testing.T) {
	e := newEnv(t)
	e.writeInventory(twoVMs)
	e.startDaemon()
	web, intern := e.path("mnt/web"), e.path("mnt/intern")
	app := filepath.Join(web, "demo.softxs.ch/hydro")
	sh(t, app, "mkdir -p sub && echo data > sub/file")
	w := func(p string) func() error { return func() error { return os.WriteFile(p, []byte("x"), 0o644) } }
	refused := map[string]func() error{
		"create at the root":              w(web + "/evil"),
		"mkdir at the root":               func() error { return os.Mkdir(web+"/evil", 0o755) },
		"create in a synthetic dir":       w(web + "/demo.softxs.ch/evil"),
		"create a sibling app dir":        func() error { return os.Mkdir(web+"/demo.softxs.ch/other", 0o755) },
		"absolute symlink out":            func() error { return os.Symlink("/etc/passwd", app+"/abs") },
		"relative symlink out":            func() error { return os.Symlink("../../../etc/passwd", app+"/rel") },
		"relative symlink to sibling app": func() error { return os.Symlink("../../www.softxs.ch", app+"/sib") },
		"symlink climbing from a subdir":  func() error { return os.Symlink("../../x", app+"/sub/up") },
		// Leaving the app's directory and coming back in depends on the
		// app directory's own name: a restore elsewhere would break it.
		"symlink out and back in":      func() error { return os.Symlink("../hydro/sub", app+"/out-and-in") },
		"hard link":                    func() error { return os.Link(app+"/sub/file", app+"/hard") },
		"hard link across apps":        func() error { return os.Link(app+"/sub/file", web+"/www.softxs.ch/hard") },
		"rename across apps":           func() error { return os.Rename(app+"/sub", web+"/www.softxs.ch/sub") },
		"rename out of the tree":       func() error { return os.Rename(app+"/sub/file", e.root+"/stolen") },
		"rename into a synthetic dir":  func() error { return os.Rename(app+"/sub/file", web+"/demo.softxs.ch/file") },
		"rename an app dir":            func() error { return os.Rename(app, web+"/demo.softxs.ch/hydro2") },
		"rename across VMs":            func() error { return os.Rename(app+"/sub/file", intern+"/intern.softxs.ch/tracking/file") },
		"block device":                 func() error { return unix.Mknod(app+"/dev", unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))) },
		"character device":             func() error { return unix.Mknod(app+"/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) },
		"FIFO":                         func() error { return unix.Mkfifo(app+"/fifo", 0o644) },
		"socket node":                  func() error { return unix.Mknod(app+"/sock", unix.S_IFSOCK|0o644, 0) },
		"write into another VM's tree": w(intern + "/demo.softxs.ch/hydro/x"),
		"remove an app dir":            func() error { return os.Remove(web + "/www.softxs.ch") },
		"remove a synthetic dir":       func() error { return os.Remove(web + "/demo.softxs.ch") },
	}
	for name, try := range refused {
		if err := try(); err == nil {
			t.Errorf("%s: succeeded, want it refused", name)
		}
	}
	// Nothing landed outside, the app's own data is intact.
	for _, p := range []string{e.root + "/stolen",
		filepath.Join(e.partition, "local/web/evil"), filepath.Join(e.partition, "local/web/demo.softxs.ch/evil")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists after the escapes", p)
		}
	}
	if got := sh(t, app, "cat sub/file"); got != "data\n" {
		t.Errorf("sub/file = %q after the escapes", got)
	}
	// A VM sees only its own applications.
	if got := strings.Join(lines(sh(t, web, "ls -A")), " "); got != ".history demo.softxs.ch www.softxs.ch" {
		t.Errorf("web's root lists %q", got)
	}
	if got := strings.Join(lines(sh(t, intern, "find . -mindepth 1 -path ./.history -prune -o -print | sort")), " "); got != "./intern.softxs.ch ./intern.softxs.ch/tracking" {
		t.Errorf("intern sees %q", got)
	}
	if _, err := os.Stat(filepath.Join(intern, "demo.softxs.ch")); err == nil {
		t.Error("intern's mount shows web's demo.softxs.ch")
	}
	// Symlinks inside the tree are stored as symlinks, never followed.
	sh(t, app, "ln -s sub/file inside && ln -s sub inside-dir")
	if l, err := os.Readlink(filepath.Join(e.partition, "local/web/demo.softxs.ch/hydro/inside")); err != nil || l != "sub/file" {
		t.Errorf("inside symlink stored as %q, %v", l, err)
	}
	// A symlink planted in the backing tree (by root on the host) is shown
	// as the symlink it is: resolving it is the reader's kernel's business
	// (inside a VM, /etc is the VM's own).
	backing := filepath.Join(e.partition, "local/web/demo.softxs.ch/hydro")
	if err := os.Symlink("/etc", filepath.Join(backing, "planted")); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(app, "planted")); err != nil || l != "/etc" {
		t.Errorf("planted symlink through the mount: %q, %v", l, err)
	}
	// The daemon itself never follows one: a directory the kernel knows
	// (cached entry) swapped for a symlink to /etc behind its back; a
	// create in it reaches the daemon, which must not land in /etc.
	sh(t, app, "mkdir swapped && touch swapped/before")
	if err := os.RemoveAll(filepath.Join(backing, "swapped")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(backing, "swapped")); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(filepath.Join(app, "swapped/v2bi-owned"), nil, 0o644)
	if _, serr := os.Lstat("/etc/v2bi-owned"); serr == nil {
		os.Remove("/etc/v2bi-owned")
		t.Errorf("the daemon created a file in /etc through a swapped directory (write error: %v)", err)
	}
}

// SIGTERM during an rsync: the daemon unmounts cleanly, nothing written is
// corrupted, and a rerun after restart completes the copy.
func TestSIGTERMDuringRsync(t *testing.T) {
	e := newEnv(t)
	e.writeInventory(twoVMs)
	d := e.startDaemon()
	src := makeSourceTree(t, e.root, "runtime")
	app := e.path("mnt/web/demo.softxs.ch/hydro")
	rsync := exec.Command("rsync", "-aX", src+"/", app+"/copy/")
	if err := rsync.Start(); err != nil {
		t.Fatal(err)
	}
	waitForFiles(t, filepath.Join(e.partition, "local/web/demo.softxs.ch/hydro/copy"), 300)
	if err := d.stop(t); err != nil {
		t.Errorf("daemon exit after SIGTERM: %v\n%s", err, d.log.String())
	}
	rsync.Wait() // fails: the mount went away under it
	if left := e.mounts(); len(left) != 0 {
		t.Fatalf("mounts left after SIGTERM: %v", left)
	}
	e.startDaemon()
	// --delete: the interrupted rsync's temporary file stays behind.
	// --modify-window=-1, as v2backup's own rsync calls: by default rsync
	// compares times to the whole second, so a directory or symlink the
	// first run created in the second the source was written in (extra/
	// and its symlinks here) looks up to date and keeps its creation time.
	sh(t, e.root, fmt.Sprintf("rsync -aX --delete --modify-window=-1 %s/ %s/copy/", src, app))
	want := snapshotTree(t, src)
	compareTrees(t, "rsync after restart", want, snapshotTree(t, app+"/copy"))
	// What the mount shows is what is stored.
	compareTrees(t, "backing store after restart", want, snapshotTree(t, filepath.Join(e.partition, "local/web/demo.softxs.ch/hydro/copy")))
	e.expectCatalogMatchesDisk()
}

// SIGKILL leaves a stale mount ("transport endpoint is not connected");
// the next start detaches it and mounts again on the same mount point.
func TestSIGKILLRestart(t *testing.T) {
	e := newEnv(t)
	e.writeInventory(twoVMs)
	d := e.startDaemon()
	app := e.path("mnt/web/demo.softxs.ch/hydro")
	sh(t, app, "echo before > f")
	d.kill()
	if _, err := os.Stat(app); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Logf("after SIGKILL, stat gives %v (expected ENOTCONN)", err)
	}
	e.startDaemon()
	if got := sh(t, app, "cat f"); got != "before\n" {
		t.Errorf("after restart f = %q", got)
	}
	sh(t, app, "echo after > g")
	e.expectCatalogMatchesDisk()
}

// SIGHUP: a new VM is mounted, a removed one unmounted, a moved application
// rerouted; a broken inventory leaves the running one in place.
func TestSIGHUPReload(t *testing.T) {
	e := newEnv(t)
	e.writeInventory(twoVMs)
	d := e.startDaemon()
	hup := func() {
		t.Helper()
		d.cmd.Process.Signal(syscall.SIGHUP)
		if err := d.waitFor("READY=1", 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Broken inventory: everything stays.
	good, _ := os.ReadFile(e.inventory)
	os.WriteFile(e.inventory, append(good, []byte("\n[[app]]\nname = \"bad\"\nbogus = 1\n")...), 0o644)
	hup()
	d.waitLog(t, "reload failed; keeping the running inventory")
	sh(t, e.path("mnt/web/www.softxs.ch"), "echo ok > f")

	// Move www from web to intern, drop nothing, add a VM "wiki".
	moved := strings.Replace(string(good), "vm = \"web\"\npath = \"/home/v2/rails/www.softxs.ch\"", "vm = \"intern\"\npath = \"/home/v2/rails/www.softxs.ch\"", 1)
	moved += "\n[[vm]]\nname = \"wiki\"\nserver = \"zg-3.softxs.ch\"\nmount = \"{root}/mnt/wiki\"\n\n[[app]]\nname = \"wiki\"\nserver = \"zg-3.softxs.ch\"\nvm = \"wiki\"\npath = \"/srv/wiki\"\nrelpath = \"wiki.softxs.ch\"\ntype = \"moinmoin\"\n"
	e.writeInventory(moved)
	hup()
	if _, err := os.Stat(e.path("mnt/web/www.softxs.ch")); err == nil {
		t.Error("www still visible in web after the move")
	}
	sh(t, e.path("mnt/intern/www.softxs.ch"), "echo moved > g")
	if _, err := os.Stat(filepath.Join(e.partition, "local/intern/www.softxs.ch/g")); err != nil {
		t.Errorf("write after move not routed to intern's tier: %v", err)
	}
	sh(t, e.path("mnt/wiki/wiki.softxs.ch"), "echo wiki > h")
	// Remove the wiki VM again: unmounted.
	e.writeInventory(string(good))
	hup()
	for _, mp := range ourMounts() {
		if mp == e.path("mnt/wiki") {
			t.Error("wiki still mounted after it left the inventory")
		}
	}
}

// waitForFiles polls until dir holds at least n entries (a test waiting on
// a background copy, with a deadline).
func waitForFiles(t *testing.T, dir string, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		count := 0
		filepath.WalkDir(dir, func(string, os.DirEntry, error) error { count++; return nil })
		if count >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never reached %d entries", dir, n)
}
