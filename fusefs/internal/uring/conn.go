package uring

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Transport names, as logged.
const (
	TransportURing = "io_uring"
	TransportDev   = "/dev/fuse"
)

// PerQueue is the number of threads (and ring entries) per CPU queue:
// more than one, so that a request that waits (for a RELEASE queued on
// the same CPU, say) does not hold up its queue.
const PerQueue = 2

// Conn is a mounted FUSE connection served by a fuse.Server, and by
// io_uring queues where the kernel offers them.
type Conn struct {
	*fuse.Server
	mountpoint string
	rings      *Server // nil: served through /dev/fuse only
	own        bool    // mounted by Mount: go-fuse cannot unmount /dev/fd/N
}

// NewServer mounts raw at mountpoint like fuse.NewServer with DirectMount,
// serves it, and waits until the mount is ready. When the kernel lets
// FUSE use io_uring (Enabled) and noURing is false, requests are served
// through io_uring queues (see the package comment); otherwise, or when
// the rings cannot be set up, through /dev/fuse as usual.
func NewServer(raw fuse.RawFileSystem, mountpoint string, opts *fuse.MountOptions, noURing bool, logger *slog.Logger) (*Conn, error) {
	if noURing || !Enabled() {
		return serveDev(raw, mountpoint, opts)
	}
	rings, err := Prepare(PerQueue, opts.MaxWrite, logger)
	if err != nil {
		logger.Warn("fuse io_uring unavailable, serving through /dev/fuse", "mountpoint", mountpoint, "err", err)
		return serveDev(raw, mountpoint, opts)
	}
	o := *opts
	o.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
	fd, err := Mount(mountpoint, &o)
	if err != nil {
		rings.Close()
		return nil, err
	}
	// Mounted already: go-fuse must not mount again (DirectMount would
	// mount over the /dev/fd/N path).
	o.DirectMount, o.DirectMountStrict = false, false
	srv, err := fuse.NewServer(raw, DevPath(fd), &o)
	if err != nil {
		rings.Close()
		unix.Unmount(mountpoint, unix.MNT_DETACH)
		return nil, err
	}
	c := &Conn{Server: srv, mountpoint: mountpoint, own: true}
	if srv.KernelSettings().Flags64()&fuse.CAP_OVER_IO_URING != 0 {
		// The kernel now holds every request until each queue has a
		// buffer, or until a registration fails (then it goes back to
		// /dev/fuse by itself).
		if err := rings.Start(fd, raw, &o, srv.KernelSettings()); err != nil {
			logger.Warn("fuse io_uring: registration failed, serving through /dev/fuse", "mountpoint", mountpoint, "err", err)
		} else {
			c.rings = rings
		}
	} else {
		rings.Close()
	}
	go srv.Serve()
	if err := pollHack(mountpoint); err != nil {
		c.Unmount()
		return nil, err
	}
	return c, nil
}

// pollHack is go-fuse's WaitMount for a mount it did not make: the Go
// runtime registers every file it opens with epoll, and epoll_ctl on a
// FUSE file sends a POLL request while the calling thread keeps its P.
// With every P so blocked, no thread is left to answer, and the process
// deadlocks. Opening go-fuse's magic file and polling it once makes the
// kernel ask, get ENOSYS, and never send POLL again.
func pollHack(mountpoint string) error {
	fd, err := unix.Open(filepath.Join(mountpoint, ".go-fuse-epoll-hack"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	defer unix.Close(fd)
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return nil
}

func serveDev(raw fuse.RawFileSystem, mountpoint string, opts *fuse.MountOptions) (*Conn, error) {
	srv, err := fuse.NewServer(raw, mountpoint, opts)
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		// The serving loop ends by itself when the mount failed.
		return nil, err
	}
	return &Conn{Server: srv, mountpoint: mountpoint}, nil
}

// Transport names how requests reach the daemon.
func (c *Conn) Transport() string {
	if c.rings != nil {
		return TransportURing
	}
	return TransportDev
}

// RingRequests reports how many requests the io_uring queues answered.
func (c *Conn) RingRequests() uint64 {
	if c.rings == nil {
		return 0
	}
	return c.rings.Requests()
}

// Unmount unmounts the connection (retrying briefly while the kernel
// still counts just-closed files) and waits for the serving loops.
func (c *Conn) Unmount() error {
	if c.Server == nil {
		return nil
	}
	if !c.own {
		return c.Server.Unmount()
	}
	var err error
	delay := time.Duration(0)
	for try := 0; try < 5; try++ {
		if err = unix.Unmount(c.mountpoint, 0); err == nil || errors.Is(err, unix.EINVAL) {
			err = nil
			break
		}
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", c.mountpoint, err)
	}
	c.Wait()
	return nil
}

// Wait waits until the serving loops (and rings) have ended.
func (c *Conn) Wait() {
	c.Server.Wait()
	if c.rings != nil {
		c.rings.Wait()
	}
}
