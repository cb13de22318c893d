package integration

import (
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// socketVMs: web is exported as a FUSE mount and a vhost-user-fs socket,
// intern only as a socket, and db's socket path is unusable (its parent is
// a regular file).
const socketVMs = `
[site]
partition = "{root}/v01/backup"

[[server]]
name = "zg-3.softxs.ch"
host_mount = "{root}/mnt/_host"
remote_view = "{root}/view"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"
mount = "{root}/mnt/web"
export = "both"
socket = "{root}/run/web.sock"

[[vm]]
name = "intern"
server = "zg-3.softxs.ch"
export = "virtiofs"
socket = "{root}/run/intern.sock"

[[vm]]
name = "db"
server = "zg-3.softxs.ch"
export = "virtiofs"
socket = "{root}/not-a-dir/db.sock"

[[app]]
name = "hydro"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "demo.softxs.ch/hydro"
type = "files"

[[app]]
name = "tracking"
server = "zg-3.softxs.ch"
vm = "intern"
relpath = "intern.softxs.ch/tracking"
type = "files"

[[app]]
name = "pg"
server = "zg-3.softxs.ch"
vm = "db"
relpath = "db.softxs.ch"
type = "files"
`

// The daemon serves vhost-user-fs sockets beside its mounts: a stale socket
// file is replaced, a socket that cannot be created fails its VM only,
// SIGHUP adds and removes sockets, SIGTERM removes them. (The guest side,
// QEMU and a real kernel, is tested in integration/vm.)
func TestVirtiofsSockets(t *testing.T) {
	e := newEnv(t)
	e.writeInventory(socketVMs)
	// A stale socket left by a crash: a socket file nobody listens on.
	os.MkdirAll(e.path("run"), 0o700)
	stale, err := net.Listen("unix", e.path("run/intern.sock"))
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	os.WriteFile(e.path("not-a-dir"), []byte("in the way"), 0o644)

	d := e.startDaemon()
	d.waitLog(t, "virtiofs socket not served; the other VMs go on")
	if !strings.Contains(d.log.String(), "db.sock") {
		t.Errorf("the failing socket's error does not name it:\n%s", d.log.String())
	}
	for _, s := range []string{"run/web.sock", "run/intern.sock"} {
		expectListening(t, e.path(s))
	}
	// web is also mounted on the host, and served.
	sh(t, e.path("mnt/web/demo.softxs.ch/hydro"), "echo through-fuse > f")

	// SIGHUP: intern leaves the inventory, its socket goes; web stays.
	e.writeInventory(strings.Replace(socketVMs, "export = \"virtiofs\"\nsocket = \"{root}/run/intern.sock\"", "export = \"fuse\"\nmount = \"{root}/mnt/intern\"", 1))
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLog(t, "closing virtiofs socket")
	waitGone(t, e.path("run/intern.sock"))
	expectListening(t, e.path("run/web.sock"))
	if _, err := os.Stat(e.path("mnt/intern/intern.softxs.ch/tracking")); err != nil {
		t.Errorf("intern not mounted after SIGHUP made it a FUSE export: %v", err)
	}

	// SIGTERM removes the sockets.
	if err := d.stop(t); err != nil {
		t.Errorf("daemon exit: %v", err)
	}
	if _, err := os.Lstat(e.path("run/web.sock")); err == nil {
		t.Error("web.sock still there after SIGTERM")
	}
}

func expectListening(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, mode %v; want a 0600 socket", path, err, fi)
		return
	}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Errorf("%s does not accept connections: %v", path, err)
		return
	}
	c.Close()
}

func waitGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Lstat(path); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
