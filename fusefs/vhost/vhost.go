// Package vhost serves a go-fuse node tree to a QEMU guest as a
// vhost-user-fs (virtiofs) device: QEMU connects to a unix socket of ours
// and the guest runs `mount -t virtiofs TAG /backup`. It is the second
// transport of the per-VM filesystem, next to the kernel FUSE mount, so that
// no virtiofsd, NFS or 9p server stands between the daemon and the VM.
//
// The vhost-user device is a copy of go-fuse's internal/vhostuser (go-fuse
// does not export it, and its virtiofs.ServeFS calls log.Fatal when it
// cannot listen and cannot be stopped), with the fixes listed in
// internal/vhostuser/README.md.
//
// # What a running VM sees when the daemon stops or restarts
//
// Close (SIGTERM, SIGHUP removal, daemon crash) drops the vhost-user
// connection. QEMU 7.2's vhost-user-fs has no reconnect logic: the device
// stays dead for the life of that QEMU process, even when a new daemon
// listens on the same socket again. In the guest, what its caches answer
// (dentries, attributes, page cache) keeps working; every request that
// needs the device waits forever, uninterruptibly: the process is stuck in
// state D, SIGKILL does not end it, and no error (no EIO) is ever
// returned. `umount -l /backup` detaches the dead share so that new
// processes do not block; the stuck ones stay stuck until the VM stops.
// Data the daemon acknowledged is on the host; writes the guest had not
// sent yet are lost. To get the share back, the VM's QEMU must be
// restarted (shut the VM down and start it; a reboot inside the guest
// keeps the same dead device): the new QEMU connects to the socket, which
// the new daemon listens on, and finds every file written before.
//
// A guest reboot with the daemon running is fine: QEMU stops the device
// (GET_VRING_BASE) and starts it again on the same connection. A QEMU that
// is killed and started again connects again. integration/vm tests all of
// these with a real guest.
package vhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/softxs/v2backup/fusefs/vhost/internal/vhostuser"
)

// DefaultMaxWrite is the largest READ/WRITE request offered to the guest
// when opts.MountOptions.MaxWrite is 0.
const DefaultMaxWrite = 1 << 20

// Server serves one node tree on one vhost-user socket, to one QEMU at a
// time; a QEMU that restarts connects again and finds the same tree.
type Server struct {
	path   string
	logger *slog.Logger
	debug  bool

	ln    *net.UnixListener
	ident fileIdent // the socket inode we created, so Close removes only ours
	ps    *fuse.ProtocolServer

	mu        sync.Mutex
	stopAfter func() bool // detaches the context watcher
	closed    bool
	active    *vhostuser.Server
	accepted  int

	done     chan struct{}
	closeErr error
	once     sync.Once
}

type fileIdent struct{ dev, ino uint64 }

// Options tune the export beyond the node tree's fs.Options.
type Options struct {
	// FS are the node tree's options; nil means go-fuse's defaults.
	// FS.Debug traces the FUSE protocol and the vhost-user messages to the
	// logger. Splice is always disabled; MaxWrite defaults to
	// DefaultMaxWrite.
	FS *fs.Options

	// PageCache lets the guest keep regular files' data in its page cache.
	// By default (false) every OPEN and CREATE is answered with
	// FOPEN_DIRECT_IO, like QEMU's 9p with cache=none: a guest write goes
	// from the writer's buffer straight into the request, with no copy
	// into the guest's page cache. Writes reach us one request per write
	// either way (the export has no writeback cache); what the default
	// gives up is the guest's caching and readahead of file data. A
	// MAP_SHARED mapping (even read-only) then fails with ENODEV in guests
	// before Linux 6.6; from 6.6 on the kernel allows it (we offer
	// FUSE_DIRECT_IO_ALLOW_MMAP). Private mappings (executables,
	// MAP_PRIVATE readers) work everywhere.
	PageCache bool
}

// Serve is ServeWith with only the node tree's options: the default export
// (direct I/O, see Options.PageCache).
func Serve(ctx context.Context, socketPath string, root fs.InodeEmbedder, opts *fs.Options, logger *slog.Logger) (*Server, error) {
	return ServeWith(ctx, socketPath, root, Options{FS: opts}, logger)
}

// ServeWith listens on socketPath and serves root as a vhost-user-fs
// device until Close is called or ctx is done.
//
// The socket's parent directory is created (0700) when missing; the socket
// itself is 0600. A stale socket (nobody accepts on it) is replaced; a live
// one, a non-socket file or a symlink at socketPath is an error, as is any
// failure to create the socket: Serve never exits the process, so a daemon
// serving several VMs loses only this one.
//
// root must not be mounted elsewhere: go-fuse attaches a node tree to one
// server only.
func ServeWith(ctx context.Context, socketPath string, root fs.InodeEmbedder, opts Options, logger *slog.Logger) (*Server, error) {
	if socketPath == "" {
		return nil, errors.New("vhost: empty socket path")
	}
	if root == nil {
		return nil, fmt.Errorf("vhost: socket %s: nil root node", socketPath)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	path, err := filepath.Abs(socketPath)
	if err != nil {
		return nil, fmt.Errorf("vhost: socket %s: %w", socketPath, err)
	}
	// The socket is bound under a temporary name first (see listen).
	if maxLen := len(syscall.RawSockaddrUnix{}.Path) - 1; len(tmpName(path)) > maxLen {
		return nil, fmt.Errorf("vhost: socket %s: path is %d bytes, a unix socket path holds at most %d (%d here, with room for a temporary suffix)",
			path, len(path), maxLen, maxLen-(len(tmpName(path))-len(path)))
	}
	if err := prepareSocketPath(path); err != nil {
		return nil, err
	}
	ln, ident, err := listen(path)
	if err != nil {
		return nil, err
	}

	var o fs.Options
	if opts.FS != nil {
		o = *opts.FS
	}
	mo := o.MountOptions
	mo.DisableSplice = true // there is no pipe between us and the guest
	if mo.MaxWrite == 0 {
		// go-fuse's default (128 KiB) splits a 1 MiB guest write in 8
		// requests; 9p sends up to its msize (512 KB) at once.
		mo.MaxWrite = DefaultMaxWrite
	}
	if !opts.PageCache {
		// Linux 6.6+ then allows shared mmap of direct-I/O files; older
		// guests do not know the flag and ignore it.
		mo.ExtraCapabilities |= fuse.CAP_DIRECT_IO_ALLOW_MMAP
	}
	if mo.Logger == nil {
		level := slog.LevelDebug
		if mo.Debug {
			level = slog.LevelInfo // asked for: shown at the default level
		}
		mo.Logger = slog.NewLogLogger(logger.Handler(), level)
	}
	o.MountOptions = mo
	if o.Logger == nil {
		o.Logger = slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	}
	rawFS := fs.NewNodeFS(root, &o)
	if !opts.PageCache {
		rawFS = directIO{rawFS}
	}

	s := &Server{
		path:   path,
		logger: logger.With("socket", path),
		debug:  mo.Debug,
		ln:     ln,
		ident:  ident,
		ps:     fuse.NewProtocolServer(rawFS, &mo),
		done:   make(chan struct{}),
	}
	go s.acceptLoop()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	s.mu.Lock()
	s.stopAfter = stop
	s.mu.Unlock()
	return s, nil
}

// SocketPath returns the absolute path of the socket.
func (s *Server) SocketPath() string { return s.path }

// Accepted returns how many QEMU connections the server has accepted so
// far, the current one included.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Connected reports whether a QEMU is connected now.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active != nil
}

// Close stops listening, drops the QEMU connection (see the package
// comment for what the guest then sees), waits for the requests in flight
// and removes the socket file if it is still the one Serve created. It is
// safe to call more than once.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		active := s.active
		stop := s.stopAfter
		s.mu.Unlock()
		if stop != nil {
			stop()
		}

		err := s.ln.Close()
		if active != nil {
			// Unblocks the control loop; acceptLoop then tears the device down.
			active.CloseConn()
		}
		<-s.done
		if rmErr := s.removeSocket(); rmErr != nil && err == nil {
			err = rmErr
		}
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
		s.closeErr = err
	})
	return s.closeErr
}

func (s *Server) acceptLoop() {
	defer close(s.done)
	var backoff time.Duration
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: keep the socket, try again later.
			backoff = min(max(2*backoff, 10*time.Millisecond), time.Second)
			s.logger.Error("vhost-user accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.serveConn(conn)
	}
}

// serveConn runs one QEMU connection to its end. Connections are served one
// after the other: a vhost-user device has a single frontend, and a
// restarted QEMU waits in the listen backlog until the old connection's
// requests are done.
func (s *Server) serveConn(conn *net.UnixConn) {
	dev := vhostuser.NewDevice(func(vqe *vhostuser.VirtqElem) int {
		n, _ := s.ps.HandleRequest(vqe.Read, vqe.Write)
		return n
	})
	dev.Logf = func(format string, args ...any) {
		level := slog.LevelDebug // protocol trace
		if strings.HasPrefix(format, "vhost-user:") {
			level = slog.LevelWarn // a request the device could not carry out
		}
		s.logger.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
	dev.Debug = s.debug
	srv := vhostuser.NewServer(conn, dev)
	srv.Debug = s.debug

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.active = srv
	s.accepted++
	n := s.accepted
	s.mu.Unlock()

	s.logger.Info("vhost-user frontend connected", "connection", n)
	err := srv.Serve()
	srv.Close() // waits for the requests in flight, then unmaps guest memory

	s.mu.Lock()
	s.active = nil
	closing := s.closed
	s.mu.Unlock()
	switch {
	case closing:
		s.logger.Info("vhost-user connection closed by shutdown", "connection", n)
	case errors.Is(err, io.EOF):
		s.logger.Info("vhost-user frontend disconnected (QEMU exited or detached the device)", "connection", n)
	default:
		s.logger.Warn("vhost-user connection dropped", "connection", n, "err", err)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) removeSocket() error {
	fi, err := os.Lstat(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vhost: socket %s: %w", s.path, err)
	}
	if identOf(fi) != s.ident {
		// Someone (a newer daemon) replaced it: not ours to remove.
		return nil
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vhost: remove socket: %w", err)
	}
	return nil
}

// prepareSocketPath creates the parent directory and clears a stale
// socket; anything else found at path is left alone and reported.
func prepareSocketPath(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("vhost: socket directory: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("vhost: socket directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("vhost: socket directory %s is not a directory", dir)
	}

	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vhost: socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("vhost: socket %s: a %s is in the way, not a socket; remove it by hand",
			path, describeMode(fi.Mode()))
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("vhost: socket %s: another process is listening on it (a second daemon, or virtiofsd?)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("vhost: socket %s: cannot tell whether it is stale: %w", path, err)
	}
	// Stale: left by a daemon that died. listen renames over it.
	return nil
}

// listen binds a socket under a temporary name, makes it 0600 and renames
// it into place, so that the socket is never reachable with a looser mode
// and a stale one is replaced in one step.
func listen(path string) (*net.UnixListener, fileIdent, error) {
	tmp := tmpName(path)
	os.Remove(tmp) // our own leftover from an earlier Serve in this process
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fileIdent{}, fmt.Errorf("vhost: socket %s: %w", path, err)
	}
	// The name changes under the listener: we remove the file ourselves.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, fileIdent, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, fileIdent{}, fmt.Errorf("vhost: socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(tmp)
	if err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return ln, identOf(fi), nil
}

func tmpName(path string) string { return fmt.Sprintf("%s.%d.tmp", path, os.Getpid()) }

func identOf(fi os.FileInfo) fileIdent {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileIdent{}
	}
	return fileIdent{dev: uint64(st.Dev), ino: st.Ino}
}

func describeMode(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	case m&os.ModeDevice != 0:
		return "device"
	}
	return "file of mode " + m.String()
}

// directIO answers every OPEN and CREATE with FOPEN_DIRECT_IO (see
// Options.PageCache). OPEN and CREATE are only sent for non-directories.
type directIO struct{ fuse.RawFileSystem }

func (d directIO) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := d.RawFileSystem.Open(cancel, in, out)
	if st == fuse.OK {
		out.OpenFlags = setDirectIO(out.OpenFlags)
	}
	return st
}

func (d directIO) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := d.RawFileSystem.Create(cancel, in, name, out)
	if st == fuse.OK {
		out.OpenFlags = setDirectIO(out.OpenFlags)
	}
	return st
}

// setDirectIO drops KEEP_CACHE (meaningless without a page cache, and it
// would keep stale pages of an earlier cached open).
func setDirectIO(flags uint32) uint32 {
	return flags&^fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_DIRECT_IO
}
