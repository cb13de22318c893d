// Package sshtest runs a private OpenSSH server on 127.0.0.1 for tests and
// benchmarks: a generated host key and user key in a temporary directory, a
// spare port, root login by key only. It never touches the system's sshd or
// its keys.
package sshtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SSHD is the OpenSSH server binary (sshd refuses a relative path).
const SSHD = "/usr/sbin/sshd"

// Server is a running private sshd.
type Server struct {
	Dir        string // temporary directory holding keys and config
	Addr       string // "127.0.0.1"
	Port       int
	User       string // "root"
	Identity   string // the user's private key
	KnownHosts string // a known_hosts file trusting exactly this server's host key
	HostKey    string // the server's private host key

	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error // sshd's exit, valid once done is closed
	once   sync.Once
}

// Target is the ssh destination, user@address.
func (s *Server) Target() string { return s.User + "@" + s.Addr }

// SSHArgs are the ssh options that reach this server with host keys checked
// and no prompt, for ssh or for rsync's -e.
func (s *Server) SSHArgs() []string {
	return []string{"-p", strconv.Itoa(s.Port), "-i", s.Identity,
		"-o", "UserKnownHostsFile=" + s.KnownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"}
}

// Log returns what sshd wrote to stderr so far.
func (s *Server) Log() string { return s.stderr.String() }

// Start generates the keys in dir (which must exist and be private to the
// caller) and starts sshd on a spare port of 127.0.0.1. It returns once the
// server answers with its SSH banner.
func Start(dir string) (*Server, error) {
	s := &Server{
		Dir:        dir,
		Addr:       "127.0.0.1",
		User:       "root",
		Identity:   filepath.Join(dir, "id_ed25519"),
		KnownHosts: filepath.Join(dir, "known_hosts"),
		HostKey:    filepath.Join(dir, "host_ed25519"),
	}
	for _, k := range []string{s.Identity, s.HostKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "v2backup-test", "-f", k).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("sshtest: ssh-keygen %s: %v: %s", k, err, out)
		}
	}
	pub, err := os.ReadFile(s.Identity + ".pub")
	if err != nil {
		return nil, fmt.Errorf("sshtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return nil, fmt.Errorf("sshtest: %w", err)
	}
	// sshd checks for its privilege separation directory even when it
	// is not used for a key login by root.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("sshtest: privilege separation directory: %w", err)
	}
	var lastErr error
	for range 10 {
		port, err := sparePort()
		if err != nil {
			return nil, err
		}
		s.Port = port
		if err := s.start(); err != nil {
			lastErr = err
			if strings.Contains(err.Error(), "Address already in use") {
				continue // someone took the port in between: try another
			}
			return nil, err
		}
		if err := s.writeKnownHosts(); err != nil {
			s.Close()
			return nil, err
		}
		return s, nil
	}
	return nil, lastErr
}

// StartT is Start for a test: keys in t.TempDir(), server stopped in
// t.Cleanup. It fails the test if sshd cannot start.
func StartT(t testing.TB) *Server {
	t.Helper()
	s, err := Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("sshtest: %v", err)
		}
	})
	return s
}

func sparePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("sshtest: finding a spare port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
MaxStartups 100:30:200
MaxSessions 100
LogLevel ERROR
`, s.Port, s.HostKey, filepath.Join(s.Dir, "authorized_keys"))
	confPath := filepath.Join(s.Dir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("sshtest: %w", err)
	}
	s.stderr = &syncBuffer{}
	s.cmd = exec.Command(SSHD, "-D", "-e", "-f", confPath)
	s.cmd.Stderr = s.stderr
	// Its own process group, so Close also ends the per-connection children.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("sshtest: starting %s: %w", SSHD, err)
	}
	s.done = make(chan struct{})
	go func() { s.err = s.cmd.Wait(); close(s.done) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("sshtest: sshd on port %d exited (%v): %s", s.Port, s.err, s.stderr.String())
		default:
		}
		if banner(s.Addr, s.Port) {
			return nil
		}
		if time.Now().After(deadline) {
			s.Close()
			return fmt.Errorf("sshtest: sshd on port %d did not answer within 30s: %s", s.Port, s.stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling for readiness, with a deadline
	}
}

// banner reports whether an SSH server answers on the port.
func banner(addr string, port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

func (s *Server) writeKnownHosts() error {
	pub, err := os.ReadFile(s.HostKey + ".pub")
	if err != nil {
		return fmt.Errorf("sshtest: %w", err)
	}
	f := strings.Fields(string(pub))
	if len(f) < 2 {
		return fmt.Errorf("sshtest: host key %s.pub: unexpected content %q", s.HostKey, pub)
	}
	line := fmt.Sprintf("[%s]:%d %s %s\n", s.Addr, s.Port, f[0], f[1])
	return os.WriteFile(s.KnownHosts, []byte(line), 0o600)
}

// WrongKnownHosts writes a known_hosts file in the server's directory that
// lists a different, freshly generated key for this server (as after a
// host key change or a man in the middle) and returns its path.
func (s *Server) WrongKnownHosts() (string, error) {
	other := filepath.Join(s.Dir, "other_host_ed25519")
	os.Remove(other)
	os.Remove(other + ".pub")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other).CombinedOutput(); err != nil {
		return "", fmt.Errorf("sshtest: ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(other + ".pub")
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(pub))
	path := filepath.Join(s.Dir, "wrong_known_hosts")
	line := fmt.Sprintf("[%s]:%d %s %s\n", s.Addr, s.Port, f[0], f[1])
	return path, os.WriteFile(path, []byte(line), 0o600)
}

// Close stops sshd and every session it started.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		if s.cmd == nil || s.cmd.Process == nil {
			return
		}
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
			err = fmt.Errorf("sshd (pid %d) ignored SIGTERM for 10s; killed", s.cmd.Process.Pid)
		}
		var ee *exec.ExitError
		if s.err != nil && !errors.As(s.err, &ee) {
			err = errors.Join(err, s.err)
		}
	})
	return err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
