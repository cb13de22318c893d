package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/softxs/v2backup/jobs/metrics"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// exampleIn writes the example inventory with its partition under dir,
// edited by the replacements old, new, ...
func exampleIn(t *testing.T, dir string, edits ...string) string {
	t.Helper()
	data, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.ReplaceAll(data, []byte("/v01/backup"), []byte(dir+"/v01"))
	for i := 0; i+1 < len(edits); i += 2 {
		if !bytes.Contains(data, []byte(edits[i])) {
			t.Fatalf("example inventory has no %q", edits[i])
		}
		data = bytes.Replace(data, []byte(edits[i]), []byte(edits[i+1]), 1)
	}
	path := filepath.Join(dir, "inv.toml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// syncBuffer is a log sink safe to read while a daemon writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var httpAt = regexp.MustCompile(`http: status page and metrics at http://([^/ ]+)/`)

// waitHTTP polls the log for the listener's address.
func waitHTTP(t *testing.T, log *syncBuffer, done <-chan error) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if m := httpAt.FindStringSubmatch(log.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("serve returned %v before listening; log:\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listener logged; log:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return string(body)
}

func TestListenAddress(t *testing.T) {
	dir := t.TempDir()
	path := exampleIn(t, dir,
		`name = "zg-3.softxs.ch"`, "name = \"zg-3.softxs.ch\"\nlisten = \"127.0.0.1:9911\"",
		`name = "odin.softxs.ch"`, "name = \"odin.softxs.ch\"\nlisten = \"127.0.0.1:9912\"")
	inv, err := inventory.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for server, want := range map[string]string{"zg-3.softxs.ch": "127.0.0.1:9911", "odin.softxs.ch": "127.0.0.1:9912", "zg-1.softxs.ch": "", "nope.softxs.ch": ""} {
		if got := listenAddress(inv, tiers.Server(server)); got != want {
			t.Errorf("listenAddress(%s) = %q, want %q", server, got, want)
		}
	}
}

// TestStartHTTP: no address is off; an address that cannot be listened on
// is logged and not fatal; a good one serves /metrics until closed.
func TestStartHTTP(t *testing.T) {
	var log syncBuffer
	lg := slog.New(slog.NewTextHandler(&log, nil))
	src := func(context.Context) ([]*report.Report, error) { return nil, nil }
	if s := startHTTP("", httpMux(src, nil, lg), lg); s != nil {
		t.Error("listener without an address")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if s := startHTTP(busy.Addr().String(), httpMux(src, nil, lg), lg); s != nil {
		s.Close(lg)
		t.Error("listener on a busy port")
	}
	if !strings.Contains(log.String(), "not serving the status page and metrics") || !strings.Contains(log.String(), busy.Addr().String()) {
		t.Errorf("busy port not logged with its address:\n%s", log.String())
	}
	s := startHTTP("127.0.0.1:0", httpMux(src, nil, lg), lg)
	if s == nil {
		t.Fatalf("no listener:\n%s", log.String())
	}
	body := get(t, "http://"+s.addr+"/metrics")
	if !strings.Contains(body, "v2backup_scrape_error 0") {
		t.Errorf("/metrics:\n%s", body)
	}
	get(t, "http://"+s.addr+"/") // the status page: its content is jobs/statuspage's to test
	s.Close(lg)
	if _, err := http.Get("http://" + s.addr + "/metrics"); err == nil {
		t.Error("still serving after Close")
	}
	(*httpServer)(nil).Close(lg) // a listener that never started
}

// TestServeBackupServer: on a machine that is only a backup server, serve
// runs the HTTP listener alone, with the pulled hosts' metrics, and stops
// on cancel; without a listen address it refuses to start.
func TestServeBackupServer(t *testing.T) {
	dir := t.TempDir()
	g := &globalOptions{Config: exampleIn(t, dir), Server: "odin.softxs.ch", stdout: io.Discard, stderr: io.Discard}
	var log syncBuffer
	g.log = slog.New(slog.NewTextHandler(&log, nil))
	err := runServe(context.Background(), g, serveOptions{})
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "no listen address") || !strings.Contains(err.Error(), "odin.softxs.ch") {
		t.Fatalf("backup server without listen: %v (exit %d), want a usage error", err, exitCode(err))
	}

	g.Config = exampleIn(t, dir, `name = "odin.softxs.ch"`, "name = \"odin.softxs.ch\"\nlisten = \"127.0.0.1:0\"")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, g, serveOptions{}) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	addr := waitHTTP(t, &log, done)
	body := get(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`v2backup_host_catalog_up{server="zg-3.softxs.ch"} 0`,
		`v2backup_app_state{app="hydro",server="zg-3.softxs.ch",state="never",type="rails",vm="web"} 1`,
		"v2backup_scrape_error 0",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, "v2backup_fuse_requests_total") || strings.Contains(body, "v2backup_catalog_queue_depth") {
		t.Error("a backup server without mounts exports live daemon counters")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	done <- nil
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Error("still serving after shutdown")
	}

	// A listen address that cannot be bound: nothing else to serve, so an error.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	g.Config = exampleIn(t, dir, `name = "odin.softxs.ch"`, "name = \"odin.softxs.ch\"\nlisten = \""+busy.Addr().String()+"\"")
	if err := runServe(context.Background(), g, serveOptions{}); err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Errorf("busy listen address: %v", err)
	}
}

// TestMetricsCommand: printed and written as a textfile for a host and a
// backup server; errors exit with the documented codes.
func TestMetricsCommand(t *testing.T) {
	dir := t.TempDir()
	inv := exampleIn(t, dir)
	out, errOut, code := v2(t, "--config", inv, "--server", "zg-3.softxs.ch", "metrics")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`v2backup_app_state{app="hydro",server="zg-3.softxs.ch",state="never",type="rails",vm="web"} 1`,
		`v2backup_host_catalog_up{server="zg-3.softxs.ch"} 1`,
		`v2backup_snapshots{server="zg-3.softxs.ch"} 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "go_goroutines") || strings.Contains(out, "fuse") {
		t.Error("the command prints daemon-only metrics")
	}

	tf := filepath.Join(dir, "textfile")
	if err := os.Mkdir(tf, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := v2(t, "--config", inv, "--server", "odin.softxs.ch", "metrics", "--textfile", tf); code != exitOK {
		t.Fatalf("odin --textfile: exit %d: %s", code, errOut)
	}
	data, err := os.ReadFile(filepath.Join(tf, metrics.TextfileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`v2backup_host_catalog_up{server="zg-1.softxs.ch"} 0`, `v2backup_host_catalog_up{server="loki.softxs.ch"} 0`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("odin's textfile lacks %s:\n%s", want, data)
		}
	}

	if _, errOut, code := v2(t, "--config", inv, "--server", "nope.softxs.ch", "metrics"); code != exitUsage || !strings.Contains(errOut, "nope.softxs.ch") {
		t.Errorf("unknown server: exit %d: %s", code, errOut)
	}
	missing := filepath.Join(dir, "missing")
	if _, errOut, code := v2(t, "--config", inv, "--server", "zg-3.softxs.ch", "metrics", "--textfile", missing); code != exitFailed || !strings.Contains(errOut, missing) {
		t.Errorf("missing textfile directory: exit %d: %s", code, errOut)
	}
}
