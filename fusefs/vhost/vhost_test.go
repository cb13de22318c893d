package vhost

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
)

func loopback(t *testing.T) fs.InodeEmbedder {
	t.Helper()
	root, err := fs.NewLoopbackRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func serve(t *testing.T, path string) *Server {
	t.Helper()
	s, err := Serve(context.Background(), path, loopback(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

func TestServeCreatesPrivateSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "v2backup")
	path := filepath.Join(dir, "vm1.sock")
	s := serve(t, path)

	if s.SocketPath() != path {
		t.Errorf("SocketPath = %q, want %q", s.SocketPath(), path)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v, want 0700", di.Mode().Perm())
	}
	leftovers, _ := filepath.Glob(path + ".*")
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket after Close: %v, want it removed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // what a crashed daemon leaves behind

	s := serve(t, path)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the new socket: %v", err)
	}
	c.Close()
	waitFor(t, "the connection to be accepted", func() bool { return s.Accepted() == 1 })
}

func TestLiveSocketIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	_, err = Serve(context.Background(), path, loopback(t), nil, nil)
	wantErr(t, err, path, "another process is listening")
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the other process's socket: %v", err)
	}
}

func TestNonSocketInTheWay(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Serve(context.Background(), file, loopback(t), nil, nil)
	wantErr(t, err, file, "regular file", "not a socket")
	if data, _ := os.ReadFile(file); string(data) != "keep me" {
		t.Errorf("file in the way was changed: %q", data)
	}

	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	_, err = Serve(context.Background(), link, loopback(t), nil, nil)
	wantErr(t, err, link, "symlink")

	sub := filepath.Join(dir, "dir.sock")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Serve(context.Background(), sub, loopback(t), nil, nil)
	wantErr(t, err, sub, "directory")
}

func TestSocketCannotBeCreated(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "plain")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Serve(context.Background(), filepath.Join(notDir, "vm1.sock"), loopback(t), nil, nil)
	wantErr(t, err, notDir, "socket directory")

	long := filepath.Join(dir, strings.Repeat("x", 120), "vm1.sock")
	_, err = Serve(context.Background(), long, loopback(t), nil, nil)
	wantErr(t, err, "at most 107")

	_, err = Serve(context.Background(), "", loopback(t), nil, nil)
	wantErr(t, err, "empty socket path")

	_, err = Serve(context.Background(), filepath.Join(dir, "vm1.sock"), nil, nil, nil)
	wantErr(t, err, "vm1.sock", "nil root")
}

func TestCloseLeavesAReplacedSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.sock")
	s := serve(t, path)
	// A newer daemon took the path over.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed the newer daemon's socket: %v", err)
	}
}

func TestCancelledContextCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.sock")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := Serve(ctx, path, loopback(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the socket to go", func() bool {
		_, err := os.Lstat(path)
		return os.IsNotExist(err)
	})
	if err := s.Close(); err != nil {
		t.Errorf("Close after the context closed it: %v", err)
	}
}

func TestContextCancelCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.sock")
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Serve(ctx, path, loopback(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cancel()
	waitFor(t, "the socket to go", func() bool {
		_, err := os.Lstat(path)
		return os.IsNotExist(err)
	})
}

// vhost-user message: header (request, flags, size) and payload.
const (
	reqGetFeatures  = 1
	reqGetVringBase = 11
	reqSetVringNum  = 8
	flagsVersion1   = 0x1
	flagNeedReply   = 0x8
	flagReply       = 0x4
)

func send(t *testing.T, c net.Conn, req, flags uint32, payload []byte) {
	t.Helper()
	msg := binary.LittleEndian.AppendUint32(nil, req)
	msg = binary.LittleEndian.AppendUint32(msg, flags)
	msg = binary.LittleEndian.AppendUint32(msg, uint32(len(payload)))
	if _, err := c.Write(append(msg, payload...)); err != nil {
		t.Fatalf("send request %d: %v", req, err)
	}
}

func recv(t *testing.T, c net.Conn, req uint32) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	hdr := make([]byte, 12)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("reply to request %d: %v", req, err)
	}
	if got := binary.LittleEndian.Uint32(hdr); got != req {
		t.Fatalf("reply to request %d names request %d", req, got)
	}
	if binary.LittleEndian.Uint32(hdr[4:])&flagReply == 0 {
		t.Errorf("reply to request %d lacks the reply flag", req)
	}
	payload := make([]byte, binary.LittleEndian.Uint32(hdr[8:]))
	if _, err := io.ReadFull(c, payload); err != nil {
		t.Fatalf("reply payload to request %d: %v", req, err)
	}
	return payload
}

func vringState(index, num uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, index), num)
}

// TestFrontendReconnects speaks vhost-user as QEMU does: features, the
// vring base a reset asks for, errors on bad requests; then a second
// frontend connects after the first hangs up, and Close drops a connected
// one.
func TestFrontendReconnects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.sock")
	s := serve(t, path)

	for round := 1; round <= 2; round++ {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		send(t, c, reqGetFeatures, flagsVersion1, nil)
		feat := binary.LittleEndian.Uint64(recv(t, c, reqGetFeatures))
		if feat&(1<<32) == 0 {
			t.Errorf("features %#x lack VIRTIO_F_VERSION_1", feat)
		}

		// What QEMU asks when the guest resets: go-fuse's copy never replied.
		send(t, c, reqGetVringBase, flagsVersion1, vringState(1, 0))
		st := recv(t, c, reqGetVringBase)
		if len(st) != 8 || binary.LittleEndian.Uint32(st) != 1 || binary.LittleEndian.Uint32(st[4:]) != 0 {
			t.Errorf("GET_VRING_BASE reply %v, want vring 1 at 0", st)
		}

		// A bad request is an error for the request, not the daemon.
		send(t, c, reqSetVringNum, flagsVersion1|flagNeedReply, vringState(7, 256))
		if ack := recv(t, c, reqSetVringNum); binary.LittleEndian.Uint64(ack) == 0 {
			t.Errorf("SET_VRING_NUM on vring 7 acknowledged as success")
		}
		send(t, c, reqSetVringNum, flagsVersion1|flagNeedReply, vringState(0, 100))
		if ack := recv(t, c, reqSetVringNum); binary.LittleEndian.Uint64(ack) == 0 {
			t.Errorf("SET_VRING_NUM of size 100 acknowledged as success")
		}
		send(t, c, 40, flagsVersion1|flagNeedReply, make([]byte, 8)) // GET_STATUS: not supported
		if ack := recv(t, c, 40); binary.LittleEndian.Uint64(ack) == 0 {
			t.Errorf("unsupported request acknowledged as success")
		}

		if n := s.Accepted(); n != round {
			t.Errorf("Accepted = %d after %d frontends", n, round)
		}
		if round == 1 {
			c.Close()
			waitFor(t, "the first connection to end", func() bool { return !s.Connected() })
			continue
		}
		if !s.Connected() {
			t.Errorf("Connected = false with a frontend connected")
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("frontend read after Close: %v, want EOF", err)
		}
		c.Close()
	}
}

// A frontend that sends file descriptors where none belong loses its
// connection; the next one is served.
func TestBadFrontendIsDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.sock")
	s := serve(t, path)
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	hdr := binary.LittleEndian.AppendUint32(nil, reqGetFeatures)
	hdr = binary.LittleEndian.AppendUint32(hdr, flagsVersion1)
	hdr = binary.LittleEndian.AppendUint32(hdr, 0)
	if _, _, err := c.WriteMsgUnix(hdr, syscall.UnixRights(int(r.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Read(make([]byte, 12)); err != io.EOF {
		t.Errorf("read after a bad message: %v, want EOF (connection dropped)", err)
	}
	waitFor(t, "the bad connection to end", func() bool { return !s.Connected() })

	c2, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	send(t, c2, reqGetFeatures, flagsVersion1, nil)
	recv(t, c2, reqGetFeatures)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
