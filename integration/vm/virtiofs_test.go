package vm

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/fusefs"
	"github.com/softxs/v2backup/fusefs/roview"
	"github.com/softxs/v2backup/fusefs/vhost"
	"github.com/softxs/v2backup/jobs/verify"
	"github.com/softxs/v2backup/tiers"
)

const (
	testVM      = "vm1"
	testApp     = "app"
	testRelpath = "demo.example.ch/app"
)

// srcEntry is one entry of the tree the guest copies in.
type srcEntry struct {
	name   string
	mode   fs.FileMode // permission bits, plus ModeDir/ModeSymlink
	data   []byte
	target string
}

var snapName = tiers.SnapshotName(time.Date(2026, 11, 1, 2, 0, 0, 0, time.UTC))

var srcMtime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// sourceTree is a deterministic tree of a few dozen entries: nested
// directories, empty, small and 300 KiB files, odd modes and a symlink.
func sourceTree() []srcEntry {
	r := rand.New(rand.NewPCG(8, 8))
	ents := []srcEntry{{name: "src", mode: fs.ModeDir | 0o755}}
	for d := range 3 {
		dir := fmt.Sprintf("src/d%d", d)
		ents = append(ents, srcEntry{name: dir, mode: fs.ModeDir | 0o750})
		for f := range 8 {
			size := []int{0, 1, 4096, 12345, 300 << 10}[f%5]
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			mode := fs.FileMode(0o644)
			if f == 3 {
				mode = 0o600
			}
			if f == 4 {
				mode = 0o755
			}
			ents = append(ents, srcEntry{name: fmt.Sprintf("%s/f%d.bin", dir, f), mode: mode, data: data})
		}
	}
	ents = append(ents, srcEntry{name: "src/d0/link", mode: fs.ModeSymlink | 0o777, target: "f1.bin"})
	return ents
}

func sourceTar(t *testing.T, ents []srcEntry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Mode: int64(e.mode.Perm()), ModTime: srcMtime, Format: tar.FormatPAX}
		switch {
		case e.mode.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, e.name+"/"
		case e.mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.target
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkCopy compares a copy of the source tree on the host (dst is the
// copy of "src") with the tree itself: types, modes, contents, mtimes,
// symlink targets, and nothing more.
func checkCopy(t *testing.T, dst string, ents []srcEntry) {
	t.Helper()
	want := map[string]srcEntry{}
	for _, e := range ents {
		want[strings.TrimPrefix(strings.TrimPrefix(e.name, "src"), "/")] = e
	}
	seen := 0
	err := filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		if rel == "." {
			rel = ""
		}
		e, ok := want[rel]
		if !ok {
			t.Errorf("%s: not in the source tree", p)
			return nil
		}
		seen++
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Type() != e.mode.Type() {
			t.Errorf("%s: type %v, want %v", p, fi.Mode().Type(), e.mode.Type())
			return nil
		}
		switch {
		case e.mode&fs.ModeSymlink != 0:
			if got, _ := os.Readlink(p); got != e.target {
				t.Errorf("%s: symlink to %q, want %q", p, got, e.target)
			}
			return nil
		case e.mode.IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if sha256.Sum256(data) != sha256.Sum256(e.data) {
				t.Errorf("%s: %d bytes differ from the source's %d", p, len(data), len(e.data))
			}
		}
		if fi.Mode().Perm() != e.mode.Perm() {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), e.mode.Perm())
		}
		// Directory mtimes change as busybox tar fills them in the guest.
		if !fi.IsDir() && !fi.ModTime().Equal(srcMtime) {
			t.Errorf("%s: mtime %v, want %v (cp -a / rsync -a keep it)", p, fi.ModTime(), srcMtime)
		}
		return nil
	})
	if err != nil {
		t.Errorf("walk %s: %v", dst, err)
	}
	if seen != len(want) {
		t.Errorf("%s: %d entries, want %d", dst, seen, len(want))
	}
}

// guestScript runs in four kinds of boot, chosen by v2b.phase:
//   - main: copy the tree in with cp -a and rsync -a, try to write outside
//     the application, read .history, leave a marker and reboot; after the
//     reboot (the marker exists) read the marker back through the
//     re-initialised device.
//   - probe: read the marker, then create a new file every second with a
//     3 s SIGKILL timeout and print each exit code (137: the request hung).
//   - verify: read the marker and one copied file.
//   - daemon: cp -a and rsync -a, a write outside the application and a
//     read of .history, on the share of a real `v2backup serve`.
func guestScript() string {
	return InitPrologue(VirtiofsModules) + `
phase=` + KernelArg("v2b.phase") + `
APP=/backup/` + testRelpath + `
if mount -t virtiofs backup /backup; then say MOUNT ok; else say MOUNT fail; say DONE "$phase"; sleep 1000; fi
case "$phase" in
main)
	if [ -e "$APP/boot1" ]; then
		say REBOOT_READ "$(cat "$APP/boot1")"
		say REBOOT_SHA "$(sha256sum "$APP/rsync/d1/f4.bin" | cut -d' ' -f1)"
		say DONE main
	else
		mkdir /tmp/in && tar -xpf /src.tar -C /tmp/in
		cp -a /tmp/in/src "$APP/cp"; say CP $?
		rsync -a /tmp/in/src/ "$APP/rsync/"; say RSYNC $?
		if (echo x > /backup/outside.txt) 2>/tmp/err; then say OUTSIDE allowed; else say OUTSIDE "denied: $(cat /tmp/err)"; fi
		if mkdir /backup/otherhost.example.ch 2>/tmp/err; then say OUTSIDE_MKDIR allowed; else say OUTSIDE_MKDIR "denied: $(cat /tmp/err)"; fi
		say HISTORY "$(ls /backup/.history | tr '\n' ' ')"
		say HISTORY_READ "$(cat /backup/.history/latest/` + testRelpath + `/hello.txt)"
		# Direct I/O (the export's default): executables and mmap.
		cp /bin/busybox "$APP/busybox" && "$APP/busybox" true; say EXEC $?
		printf abcdefgh > "$APP/mm.bin"
		chmod 755 /mmapprobe
		/mmapprobe "$APP/mm.bin" WXYZ > /tmp/mm 2>&1
		say MMAP_PRIVATE "$(sed -n 's/^private //p' /tmp/mm)"
		say MMAP_SHARED "$(sed -n 's/^shared //p' /tmp/mm)"
		say KERNEL "$(uname -r)"
		echo first-boot > "$APP/boot1"; sync
		say BOOT1 done
		reboot -f
	fi ;;
probe)
	say READ "$(cat "$APP/boot1")"
	i=0; hung=0
	while [ $i -lt 100 ]; do
		# In the background: a request the device never answers cannot
		# be interrupted, not even by SIGKILL.
		( if echo $i 2>/tmp/e$i > "$APP/probe-$i"; then echo 0; else echo "error: $(cat /tmp/e$i)"; fi > /tmp/r$i.tmp; mv /tmp/r$i.tmp /tmp/r$i ) &
		j=0
		while [ ! -e /tmp/r$i ] && [ $j -lt 30 ]; do sleep 0.1; j=$((j+1)); done
		if [ -e /tmp/r$i ]; then say PROBE_$i "$(cat /tmp/r$i)"; else say PROBE_$i hung; hung=$((hung+1)); fi
		[ $hung -ge 3 ] && break
		i=$((i+1))
		sleep 1
	done
	# The way out inside the guest: detach the dead share.
	umount -l /backup; say UMOUNT $?
	say AFTER_UMOUNT "$(ls -A /backup | wc -l)"
	say DONE probe ;;
verify)
	say READ "$(cat "$APP/boot1")"
	say DONE verify ;;
daemon)
	mkdir /tmp/in && tar -xpf /src.tar -C /tmp/in
	cp -a /tmp/in/src "$APP/cp"; say CP $?
	rsync -a /tmp/in/src/ "$APP/rsync/"; say RSYNC $?
	if (echo x > /backup/outside.txt) 2>/tmp/err; then say OUTSIDE allowed; else say OUTSIDE "denied: $(cat /tmp/err)"; fi
	say HISTORY_READ "$(cat /backup/.history/latest/` + testRelpath + `/hello.txt)"
	sync
	say DONE daemon ;;
esac
sleep 1000
`
}

// recorder keeps the catalog events fusefs reports: which files were
// written, following renames.
type recorder struct {
	mu      sync.Mutex
	written map[string]int // "app:path" -> count
}

func (r *recorder) Written(app, path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.written[app+":"+path]++
}
func (r *recorder) Removed(app, path string) {}

// Renamed: rsync writes a temporary file and renames it into place.
func (r *recorder) Renamed(app, from, to string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written[app+":"+from] > 0 {
		r.written[app+":"+to]++
	}
}

// reported tells whether a write of rel (relative to the VM's backing
// directory) was reported for app; recorder paths are relative to
// LocalRoot.
func (r *recorder) reported(app, rel string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.written {
		if strings.HasPrefix(k, app+":") && strings.HasSuffix(k, "/"+rel) {
			return true
		}
	}
	return false
}

// tee sends fusefs's events to the test's counting recorder and to the
// real catalog, as the daemon does.
type tee struct {
	a, b fusefs.Recorder
}

func (t tee) Written(app, p string)        { t.a.Written(app, p); t.b.Written(app, p) }
func (t tee) Removed(app, p string)        { t.a.Removed(app, p); t.b.Removed(app, p) }
func (t tee) Renamed(app, from, to string) { t.a.Renamed(app, from, to); t.b.Renamed(app, from, to) }

// newVMRoot returns the node tree the daemon serves for the VM over
// virtiofs: fusefs (routing, confinement, cataloging, copy-on-write) with
// .history, built without a host mount.
func newVMRoot(t *testing.T, e *testEnv) (gofs.InodeEmbedder, *gofs.Options) {
	root, err := fusefs.NewRoot(fusefs.Config{
		VM:        testVM,
		LocalRoot: filepath.Dir(e.backing),
		Apps:      []fusefs.App{{Name: testApp, Relpath: testRelpath}},
		Recorder:  tee{e.rec, e.catRec},
		Logger:    e.logger,
		Extra: map[string]gofs.InodeEmbedder{
			".history": roview.NewHistory(e.snapDir, testVM, func() []string { return []string{testRelpath} }),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the vhost server's Close, so it runs after it.
	t.Cleanup(root.Close)
	return root.Node(), root.Options()
}

type testEnv struct {
	dir, backing, snapDir, sock, initrd string
	kernel                              Kernel
	ents                                []srcEntry
	logger                              *slog.Logger
	rec                                 *recorder
	db                                  *catalog.DB
	catRec                              *catalog.Recorder
}

func setup(t *testing.T) *testEnv {
	// Never a silent skip: .ci/install-deps provides all of it.
	if _, err := QEMUBinary(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil && os.Getenv("V2BACKUP_QEMU_ACCEL") == "" {
		t.Fatalf("/dev/kvm: %v; set V2BACKUP_QEMU_ACCEL=tcg to run the guest under TCG alone", err)
	}
	k, err := FindKernel()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &testEnv{
		dir:     dir,
		backing: filepath.Join(dir, "local", testVM),
		snapDir: filepath.Join(dir, "snapshots", "local"),
		sock:    filepath.Join(dir, "run", testVM+".sock"),
		initrd:  filepath.Join(dir, "initrd.cpio"),
		kernel:  k,
		ents:    sourceTree(),
		logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		rec:     &recorder{written: map[string]int{}},
	}
	// The real catalog, fed by the same events.
	if err := os.MkdirAll(e.backing, 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := catalog.Open(filepath.Join(dir, "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	e.catRec, err = catalog.NewRecorder(db, filepath.Dir(e.backing), catalog.RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.db = db
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.catRec.Close(ctx)
		db.Close()
	})
	if err := os.MkdirAll(filepath.Join(e.backing, testRelpath), 0o755); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(e.snapDir, snapName, testVM, testRelpath)
	if err := os.MkdirAll(snap, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(snap, "hello.txt"), []byte("from-snapshot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ir := Initramfs{
		Kernel:   k,
		Modules:  VirtiofsModules,
		Binaries: []string{"rsync"},
		Init:     guestScript(),
		Files:    map[string][]byte{"/src.tar": sourceTar(t, e.ents), "/mmapprobe": buildMmapProbe(t, dir)},
	}
	if err := ir.Write(e.initrd); err != nil {
		t.Fatal(err)
	}
	return e
}

// buildMmapProbe builds testdata/mmapprobe as a static binary for the
// guest.
func buildMmapProbe(t *testing.T, dir string) []byte {
	out := filepath.Join(dir, "mmapprobe")
	cmd := exec.Command(goTool(), "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./testdata/mmapprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build testdata/mmapprobe: %v\n%s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// goTool is the go command of the toolchain running the test.
func goTool() string { return filepath.Join(runtime.GOROOT(), "bin", "go") }

// guestMmapShared is what mmapprobe's shared writable mapping of a
// direct-I/O file reports in a guest running kernel release rel: Linux
// 6.6 added FUSE_DIRECT_IO_ALLOW_MMAP, which the export offers; before,
// the mapping fails cleanly with ENODEV.
func guestMmapShared(rel string) string {
	var major, minor int
	fmt.Sscanf(rel, "%d.%d", &major, &minor)
	if major > 6 || major == 6 && minor >= 6 {
		return "ok"
	}
	return "mmap: no such device"
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (e *testEnv) serve(t *testing.T) *vhost.Server {
	root, opts := newVMRoot(t, e)
	srv, err := vhost.Serve(context.Background(), e.sock, root, opts, e.logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func (e *testEnv) boot(t *testing.T, phase string) *Guest {
	g, err := Boot(Config{Kernel: e.kernel, Initrd: e.initrd, Dir: e.dir, VhostSocket: e.sock, Append: "v2b.phase=" + phase})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Kill)
	t.Logf("booted %s guest with %s: serial log %s", phase, g.Accel, g.Serial)
	return g
}

func wantResult(t *testing.T, res map[string]string, key, want string) {
	t.Helper()
	if got, ok := res[key]; !ok {
		t.Errorf("guest did not report %s", key)
	} else if got != want {
		t.Errorf("guest %s = %q, want %q", key, got, want)
	}
}

func fileSHA(t *testing.T, p string) string {
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(data))
}

// TestVirtiofsGuest boots a real guest on the daemon's vhost-user socket:
// it copies a tree in with cp -a and rsync -a, reads .history, reboots and
// finds its data; a second QEMU on the same socket finds it too; then the
// daemon stops under a running guest and a new one serves the next QEMU.
func TestVirtiofsGuest(t *testing.T) {
	e := setup(t)
	srv := e.serve(t)
	app := filepath.Join(e.backing, testRelpath)

	t.Run("copy-and-reboot", func(t *testing.T) {
		g := e.boot(t, "main")
		if err := g.WaitFor("V2B MOUNT=ok", 100*time.Second); err != nil {
			t.Fatal(err)
		}
		conns := srv.Accepted()
		if err := g.WaitFor("V2B DONE=main", 100*time.Second); err != nil {
			t.Fatal(err)
		}
		res := Results(g.Log(), "V2B ")
		g.Kill()
		t.Logf("guest reported %q", res)
		wantResult(t, res, "MOUNT", "ok")
		wantResult(t, res, "CP", "0")
		wantResult(t, res, "RSYNC", "0")
		wantResult(t, res, "HISTORY", snapName+" latest")
		wantResult(t, res, "HISTORY_READ", "from-snapshot")
		wantResult(t, res, "BOOT1", "done")
		wantResult(t, res, "EXEC", "0")
		wantResult(t, res, "MMAP_PRIVATE", "ok abcdefgh")
		shared := guestMmapShared(res["KERNEL"])
		wantResult(t, res, "MMAP_SHARED", shared)
		mm, err := os.ReadFile(filepath.Join(app, "mm.bin"))
		if want := map[bool]string{true: "WXYZefgh", false: "abcdefgh"}[shared == "ok"]; err != nil || string(mm) != want {
			t.Errorf("mm.bin on the host after the guest's shared mapping (%s): %q, %v; want %q", res["MMAP_SHARED"], mm, err, want)
		}
		// The guest rebooted (QEMU reset the device: GET_VRING_BASE) and
		// mounted the share again in the same QEMU.
		wantResult(t, res, "REBOOT_READ", "first-boot")
		wantResult(t, res, "REBOOT_SHA", fileSHA(t, filepath.Join(app, "rsync/d1/f4.bin")))
		if _, bad := res["INSMOD_FAIL"]; bad {
			t.Errorf("guest could not load module %s", res["INSMOD_FAIL"])
		}
		// Confinement: nothing outside the application's relpath.
		if !strings.HasPrefix(res["OUTSIDE"], "denied") || !strings.HasPrefix(res["OUTSIDE_MKDIR"], "denied") {
			t.Errorf("guest wrote outside its application: OUTSIDE=%q OUTSIDE_MKDIR=%q", res["OUTSIDE"], res["OUTSIDE_MKDIR"])
		}
		for _, p := range []string{"outside.txt", "otherhost.example.ch"} {
			if _, err := os.Lstat(filepath.Join(e.backing, p)); !os.IsNotExist(err) {
				t.Errorf("%s in the backing tree: %v", p, err)
			}
		}
		// Cataloging: every file cp and rsync wrote was reported (rsync's
		// as a write of its temporary file, then a rename).
		for _, ent := range e.ents {
			if !ent.mode.IsRegular() {
				continue
			}
			rel := strings.TrimPrefix(ent.name, "src/")
			for _, dir := range []string{"cp", "rsync"} {
				if !e.rec.reported(testApp, testRelpath+"/"+dir+"/"+rel) {
					t.Errorf("write of %s/%s/%s not reported to the catalog", testRelpath, dir, rel)
				}
			}
		}
		checkCopy(t, filepath.Join(app, "cp"), e.ents)
		checkCopy(t, filepath.Join(app, "rsync"), e.ents)
		// The catalog holds every file the guest wrote, with its hash.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.catRec.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		prefix := testVM + "/" + testRelpath
		rep, err := verify.Run(ctx, verify.Options{Root: filepath.Dir(e.backing), Prefix: prefix, Walk: verify.LiveFiles(e.db, prefix)})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || rep.Files < 2 {
			t.Errorf("catalog against the backing tree: %s\n%v", rep.Summary(), rep.Problems)
		}
		if n := srv.Accepted(); n != conns {
			t.Errorf("server accepted %d connections, %d before the guest rebooted: a reboot must keep QEMU's connection", n, conns)
		}
	})
	if t.Failed() {
		return
	}

}

// probes returns the guest's PROBE_i results, by i.
func probes(g *Guest) map[int]string {
	out := map[int]string{}
	for k, v := range Results(g.Log(), "V2B ") {
		var i int
		if _, err := fmt.Sscanf(k, "PROBE_%d", &i); err == nil {
			out[i] = v
		}
	}
	return out
}

// TestVirtiofsLifecycle: a restarted QEMU finds the data on the same
// socket; when the daemon stops under a running guest, the guest's
// requests hang, uninterruptibly, and do not come back when a new daemon
// listens (QEMU 7.2 does not reconnect vhost-user-fs); umount -l in the
// guest detaches the dead share; the next QEMU, on the new daemon, finds
// everything.
func TestVirtiofsLifecycle(t *testing.T) {
	e := setup(t)
	app := filepath.Join(e.backing, testRelpath)
	if err := os.WriteFile(filepath.Join(app, "boot1"), []byte("first-boot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := e.serve(t)

	// First QEMU: killed like a crashed hypervisor once it has read.
	g1 := e.boot(t, "verify")
	if err := g1.WaitFor("V2B DONE=verify", 100*time.Second); err != nil {
		t.Fatal(err)
	}
	g1.Kill()
	conns := srv.Accepted()

	// Second QEMU on the same socket, the daemon still running.
	g := e.boot(t, "probe")
	if err := g.WaitFor("V2B PROBE_0=", 100*time.Second); err != nil {
		t.Fatal(err)
	}
	res := Results(g.Log(), "V2B ")
	wantResult(t, res, "READ", "first-boot")
	wantResult(t, res, "PROBE_0", "0")
	if n := srv.Accepted(); n <= conns {
		t.Errorf("server accepted %d connections, %d before the second QEMU", n, conns)
	}
	if _, err := os.Stat(filepath.Join(app, "probe-0")); err != nil {
		t.Errorf("the guest's write before the daemon stopped: %v", err)
	}

	// The daemon stops (SIGTERM) under the running guest.
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(e.sock); !os.IsNotExist(err) {
		t.Errorf("socket after Close: %v, want it removed", err)
	}
	stopped := len(probes(g)) - 1
	if err := g.WaitFor("=hung", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	// A new daemon on the same socket, while the guest keeps probing.
	srv2 := e.serve(t)
	if err := g.WaitFor("V2B DONE=probe", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	res = Results(g.Log(), "V2B ")
	ps := probes(g)
	for i := stopped + 1; i < len(ps); i++ {
		// One probe may have completed across Close; after the first
		// hung one, none may.
		if ps[i] != "hung" && (i > stopped+1 || ps[i] != "0") {
			t.Errorf("probe %d after the daemon stopped: %q, want hung (see the vhost package comment)", i, ps[i])
		}
	}
	if n := srv2.Accepted(); n != 0 {
		t.Errorf("the running QEMU reconnected to the new daemon (%d connections): update the vhost package comment", n)
	}
	wantResult(t, res, "UMOUNT", "0")
	wantResult(t, res, "AFTER_UMOUNT", "0")
	g.Kill()

	// The next QEMU, on the new daemon, finds the data.
	g3 := e.boot(t, "verify")
	if err := g3.WaitFor("V2B DONE=verify", 100*time.Second); err != nil {
		t.Fatal(err)
	}
	wantResult(t, Results(g3.Log(), "V2B "), "READ", "first-boot")
	if n := srv2.Accepted(); n == 0 {
		t.Errorf("new daemon accepted no connection from the third QEMU")
	}
}
