package pull

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/softxs/v2backup/tiers"
)

// sshCommand is rsync's -e: ssh with host keys checked and no prompt.
func (o *Options) sshCommand(h Host) string {
	ssh := o.SSH
	if ssh == "" {
		ssh = "ssh"
	}
	port := h.Port
	if port == 0 {
		port = 22
	}
	args := []string{shellQuote(ssh), "-p", strconv.Itoa(port)}
	if o.Identity != "" {
		args = append(args, "-i", shellQuote(o.Identity), "-o", "IdentitiesOnly=yes")
	}
	if o.KnownHosts != "" {
		args = append(args, "-o", shellQuote("UserKnownHostsFile="+o.KnownHosts))
	}
	args = append(args, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes")
	return strings.Join(args, " ")
}

// shellQuote quotes s for rsync's -e parser, which honours single quotes.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// rsyncArgs is the pull's rsync command line.
func (o *Options) rsyncArgs(h Host, staging, current string, hasCurrent bool) []string {
	// --modify-window=-1: compare mtimes to the nanosecond, so a file
	// rewritten with the same size within the same second is transferred,
	// not hard-linked from the last copy (and then refused by verification).
	args := []string{"-a", "--delete", "--numeric-ids", "--modify-window=-1", "-e", o.sshCommand(h)}
	if hasCurrent {
		args = append(args, "--link-dest="+current)
	}
	args = append(args, o.RsyncOptions...)
	return append(args, h.SSH+":"+h.View+"/", staging+"/")
}

// rsync runs the transfer into staging. It runs in its own process group,
// so a cancelled pull ends ssh too.
func (o *Options) rsync(ctx context.Context, h Host, staging, current string, hasCurrent bool) error {
	bin := o.Rsync
	if bin == "" {
		bin = "rsync"
	}
	args := o.rsyncArgs(h, staging, current, hasCurrent)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	if o.started != nil {
		o.started(h.Server, cmd.Process.Pid)
	}
	err := cmd.Wait()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("rsync from %s:%s cancelled: %w", h.SSH, h.View, ctx.Err())
	}
	return rsyncError(h, cmd, err, stderr.String())
}

// RsyncError is a failed rsync: its exit code (or the signal that killed
// it), what that code means, and the last lines it wrote.
type RsyncError struct {
	Server  tiers.Server
	Source  string
	Code    int    // -1 if killed by a signal
	Signal  string // the signal, if killed
	Meaning string
	Stderr  string
}

func (e *RsyncError) Error() string {
	how := fmt.Sprintf("exit %d: %s", e.Code, e.Meaning)
	if e.Signal != "" {
		how = "killed by signal " + e.Signal
	}
	msg := fmt.Sprintf("rsync from %s failed (%s)", e.Source, how)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// HostKey reports whether ssh refused the host's key.
func (e *RsyncError) HostKey() bool {
	return strings.Contains(e.Stderr, "Host key verification failed") || strings.Contains(e.Stderr, "REMOTE HOST IDENTIFICATION HAS CHANGED")
}

func rsyncError(h Host, cmd *exec.Cmd, err error, stderr string) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("rsync from %s:%s: %w", h.SSH, h.View, err)
	}
	re := &RsyncError{Server: h.Server, Source: h.SSH + ":" + h.View, Code: ee.ExitCode(), Stderr: lastLines(stderr, 4)}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		re.Code, re.Signal = -1, ws.Signal().String()
		return re
	}
	re.Meaning = RsyncExitMeaning(re.Code)
	switch {
	case re.HostKey():
		re.Meaning = "ssh refused the host key of " + string(h.Server) + " (not in the known hosts, or changed)"
	case strings.Contains(stderr, "ssh: connect to host"), strings.Contains(stderr, "ssh: Could not resolve"):
		re.Meaning = "ssh could not connect to " + string(h.Server)
	case strings.Contains(stderr, "Permission denied (publickey"):
		re.Meaning = "ssh login to " + h.SSH + " refused (is the backup server's key authorized there?)"
	}
	return re
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(s, "\r", "")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// RsyncExitMeaning says in words what an rsync exit code means (rsync(1),
// EXIT VALUES); 255 comes from ssh.
func RsyncExitMeaning(code int) string {
	switch code {
	case 0:
		return "success"
	case 1:
		return "syntax or usage error"
	case 2:
		return "protocol incompatibility"
	case 3:
		return "errors selecting input/output files or directories"
	case 4:
		return "requested action not supported"
	case 5:
		return "error starting the client-server protocol"
	case 6:
		return "daemon unable to append to its log file"
	case 10:
		return "error in socket I/O"
	case 11:
		return "error in file I/O"
	case 12:
		return "error in the rsync protocol data stream (often: the connection or the remote rsync died)"
	case 13:
		return "errors with program diagnostics"
	case 14:
		return "error in IPC code"
	case 20:
		return "received SIGUSR1 or SIGINT"
	case 21:
		return "some error returned by waitpid()"
	case 22:
		return "error allocating core memory buffers"
	case 23:
		return "partial transfer due to error"
	case 24:
		return "partial transfer due to vanished source files"
	case 25:
		return "the --max-delete limit stopped deletions"
	case 30:
		return "timeout in data send/receive"
	case 35:
		return "timeout waiting for daemon connection"
	case 127:
		return "command not found (rsync missing on the host?)"
	case 255:
		return "ssh could not connect or log in (connection refused, host key, or key not authorized)"
	}
	return "unknown exit code"
}
