package jobs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unitKeys reads a systemd unit's Key=Value lines.
func unitKeys(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			kv[k] = v
		}
	}
	return kv
}

// TestSystemdUnits checks the units with systemd-analyze and that the
// timer ends, random delay included, before a 05:00 snapshot.
func TestSystemdUnits(t *testing.T) {
	svc := unitKeys(t, "systemd/v2backup-backup.service")
	tim := unitKeys(t, "systemd/v2backup-backup.timer")
	if !strings.Contains(svc["ExecStart"], "v2backup backup --all") || svc["Type"] != "oneshot" {
		t.Errorf("service: ExecStart %q, Type %q", svc["ExecStart"], svc["Type"])
	}
	if tim["Persistent"] != "true" || tim["RandomizedDelaySec"] == "" {
		t.Errorf("timer: Persistent %q, RandomizedDelaySec %q", tim["Persistent"], tim["RandomizedDelaySec"])
	}
	at, err := time.Parse("*-*-* 15:04:05", tim["OnCalendar"])
	if err != nil {
		t.Fatalf("OnCalendar %q: %v", tim["OnCalendar"], err)
	}
	delay, err := time.ParseDuration(tim["RandomizedDelaySec"])
	if err != nil {
		t.Fatal(err)
	}
	if latest := at.Add(delay); latest.Hour() >= 5 {
		t.Errorf("timer may start at %s, not before a 05:00 snapshot", latest.Format("15:04"))
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	// Verify copies whose ExecStart exists here.
	dir := t.TempDir()
	for _, n := range []string{"v2backup-backup.service", "v2backup-backup.timer"} {
		b, _ := os.ReadFile(filepath.Join("systemd", n))
		s := strings.ReplaceAll(string(b), "/usr/local/bin/v2backup", "/bin/true")
		os.WriteFile(filepath.Join(dir, n), []byte(s), 0o644)
	}
	out, err := exec.Command(sa, "verify", "--man=no", filepath.Join(dir, "v2backup-backup.service"), filepath.Join(dir, "v2backup-backup.timer")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
