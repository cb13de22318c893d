// Command sshdcmd runs a private test sshd (package sshtest) for programs
// that cannot import it, such as bench/remoteview: it prints one JSON line
// describing the server, then serves until SIGTERM or SIGINT.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/softxs/v2backup/jobs/sshtest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: sshdcmd DIR (an empty private directory for keys and config)")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	s, err := sshtest.Start(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "sshdcmd:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(s)
	<-sigs
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "sshdcmd:", err)
		os.Exit(1)
	}
}
