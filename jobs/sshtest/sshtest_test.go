package sshtest

import (
	"os/exec"
	"strings"
	"testing"
)

func TestServerRunsCommandsWithCheckedHostKey(t *testing.T) {
	s := StartT(t)
	out, err := exec.Command("ssh", append(s.SSHArgs(), s.Target(), "echo", "hello")...).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("ssh echo: %v: %q\nsshd: %s", err, out, s.Log())
	}
}

func TestWrongHostKeyIsRefused(t *testing.T) {
	s := StartT(t)
	wrong, err := s.WrongKnownHosts()
	if err != nil {
		t.Fatal(err)
	}
	args := s.SSHArgs()
	for i, a := range args {
		if strings.HasPrefix(a, "UserKnownHostsFile=") {
			args[i] = "UserKnownHostsFile=" + wrong
		}
	}
	cmd := exec.Command("ssh", append(args, s.Target(), "true")...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("ssh with a wrong host key succeeded: %s", out)
	}
	if code := cmd.ProcessState.ExitCode(); code != 255 || !strings.Contains(string(out), "Host key verification failed") {
		t.Errorf("exit %d, output %q; want 255 and a host key error", code, out)
	}
}

func TestTwoServersGetDifferentPorts(t *testing.T) {
	a, b := StartT(t), StartT(t)
	if a.Port == b.Port {
		t.Fatalf("both on port %d", a.Port)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if banner(a.Addr, a.Port) {
		t.Errorf("sshd still answers on %d after Close", a.Port)
	}
	if !banner(b.Addr, b.Port) {
		t.Errorf("second sshd stopped answering")
	}
}
