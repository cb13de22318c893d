// Command viewcmd mounts a remote view or the administrators' history from
// flags, prints "ready" once the mount answers, and serves until SIGTERM
// or SIGINT, then unmounts. Tests run it as a separate process, so that
// programs like rsync and sha256sum can read the mount without the
// serving process forking (see go-fuse's fs package doc on deadlocks).
// A remote view prints its request counts as a JSON line on SIGUSR1
// (bench/remoteview); -cpuprofile profiles the serving.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/softxs/v2backup/fusefs/roview"
)

func main() {
	mode := flag.String("mode", "remote", "remote or admin")
	mnt := flag.String("mount", "", "mount point")
	snapDir := flag.String("snapdir", "", "snapshot directory ({partition}/snapshots/local)")
	server := flag.String("server", "", "this host's FQDN (remote)")
	state := flag.String("state", "", "state directory for computed manifests (remote)")
	idle := flag.Duration("idle", roview.DefaultIdle, "idle time before switching snapshots (remote)")
	poll := flag.Duration("poll", roview.DefaultPoll, "how often to look for a newer snapshot (remote)")
	debug := flag.Bool("debug", false, "trace the FUSE protocol")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the serving to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "viewcmd:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "viewcmd: cpu profile:", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if err := run(*mode, *mnt, *snapDir, *server, *state, *idle, *poll, *debug); err != nil {
		fmt.Fprintln(os.Stderr, "viewcmd:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(mode, mnt, snapDir, server, state string, idle, poll time.Duration, debug bool) error {
	if mnt == "" {
		return fmt.Errorf("-mount is required")
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	var srv *fuse.Server
	var unmount func() error
	// SIGUSR1 prints the remote view's request counts as a JSON line
	// (roview.RequestCount: [{"Op":"OPEN","Count":10000,"Time":...},...]),
	// so a benchmark can count round trips.
	counts := make(chan os.Signal, 1)
	var requests func() []roview.RequestCount
	switch mode {
	case "remote":
		v, err := roview.MountRemoteView(mnt, roview.RemoteOptions{
			SnapDir: snapDir, Server: server, StateDir: state, Idle: idle, Poll: poll,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)), Debug: debug,
		})
		if err != nil {
			return err
		}
		srv, unmount = v.Server(), v.Unmount
		requests = v.Requests
		signal.Notify(counts, syscall.SIGUSR1)
	case "admin":
		s, err := roview.MountAdmin(mnt, snapDir)
		if err != nil {
			return err
		}
		srv, unmount = s, s.Unmount
	default:
		return fmt.Errorf("-mode %q: want remote or admin", mode)
	}
	if err := srv.WaitMount(); err != nil {
		unmount()
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	fmt.Println("ready")
	for waiting := true; waiting; {
		select {
		case <-counts:
			line, err := json.Marshal(requests())
			if err != nil {
				return err
			}
			fmt.Println(string(line))
		case <-sigs:
			waiting = false
		}
	}
	if err := unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w", mnt, err)
	}
	return nil
}
