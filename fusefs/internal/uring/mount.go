package uring

import (
	"fmt"
	"os"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Mount opens /dev/fuse and mounts it at mountpoint the way go-fuse's
// DirectMount does, and returns the descriptor: the rings need it, and
// go-fuse does not give its own out. Serve it with
// fuse.NewServer(fs, DevPath(fd), opts); unmount with unix.Unmount.
func Mount(mountpoint string, opts *fuse.MountOptions) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return -1, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("mount %s: open /dev/fuse: %w", mountpoint, err)
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if opts.DirectMountFlags != 0 {
		flags = opts.DirectMountFlags
	}
	maxWrite := opts.MaxWrite
	if maxWrite <= 0 {
		maxWrite = 128 << 10
	}
	data := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", maxWrite),
	}
	for _, o := range opts.Options {
		switch o {
		case "nodev":
			flags |= unix.MS_NODEV
		case "dev":
			flags &^= unix.MS_NODEV
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "suid":
			flags &^= unix.MS_NOSUID
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "exec":
			flags &^= unix.MS_NOEXEC
		default:
			data = append(data, o)
		}
	}
	if opts.AllowOther {
		data = append(data, "allow_other")
	}
	source := opts.FsName
	if source == "" {
		source = opts.Name
	}
	fstype := "fuse"
	if opts.Name != "" {
		fstype += "." + opts.Name
	}
	if err := unix.Mount(source, mountpoint, fstype, flags, strings.Join(data, ",")); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	return fd, nil
}

// DevPath is the mountpoint that makes fuse.NewServer serve an already
// mounted descriptor.
func DevPath(fd int) string { return fmt.Sprintf("/dev/fd/%d", fd) }
