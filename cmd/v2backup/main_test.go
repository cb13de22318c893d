package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// v2 runs a command line in-process and returns stdout, stderr and the exit code.
func v2(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

const example = "../../examples/softxs.toml"

// Every system of the seed's summary tables, with its paths.
func TestInventoryPrintsEverySeedSystem(t *testing.T) {
	out, errOut, code := v2(t, "--config", example, "inventory")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"SoftXS Web Site", "Hydro Demo", "Tracking System", "Wiki", "Roadnotes PMS",
		"Cardenillo", "Coya II", "DryTech", "HCMC2", "IDP", "Ilulissat", "KEJV", "Lagarfoss", "Sisimiut",
		"/v01/backup/local/web/demo.softxs.ch/hydro",
		"odin.softxs.ch:/v01/backup/remote/zg-3.softxs.ch/web/demo.softxs.ch/hydro",
		"/v01/backup/local/_host/cardenillo.softxs.ch",
		"15 applications",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inventory output lacks %q", want)
		}
	}
	// --server and --vm filter; --json is machine-readable.
	out, _, code = v2(t, "--config", example, "--server", "zg-1.softxs.ch", "inventory", "--json")
	var rows []appRow
	if code != exitOK || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 9 {
		t.Fatalf("zg-1 --json: exit %d, %d rows: %s", code, len(rows), out)
	}
	if rows[0].VM != "_host" || !strings.HasPrefix(rows[0].LocalBackup, "/v01/backup/local/_host/") {
		t.Errorf("first zg-1 row: %+v", rows[0])
	}
	out, _, _ = v2(t, "--config", example, "inventory", "--vm", "intern")
	if !strings.Contains(out, "1 applications") || !strings.Contains(out, "Tracking System") {
		t.Errorf("--vm intern:\n%s", out)
	}
}

func TestPaths(t *testing.T) {
	out, errOut, code := v2(t, "--config", example, "paths", "hydro")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"web:/backup/demo.softxs.ch/hydro",
		"zg-3.softxs.ch:/v01/backup/local/web/demo.softxs.ch/hydro",
		"zg-3.softxs.ch:/v01/backup/snapshots/local/{snapshot}/web/demo.softxs.ch/hydro",
		"odin.softxs.ch:/v01/backup/remote/zg-3.softxs.ch/web/demo.softxs.ch/hydro",
		"zg-3.softxs.ch:/v01/backup/history/backup-hydro-{yyyymmdd}",
		"{drive}/v2backup/zg-3.softxs.ch/local/web/demo.softxs.ch/hydro",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("paths output lacks %q:\n%s", want, out)
		}
	}
}

// Bad configuration and bad usage exit 2 with a message that says where.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[site]\npartition = \"/v01/backup\"\n\n[[server]]\nname = \"zg-3.softxs.ch\"\n\n[[app]]\nname = \"hydro\"\nserver = \"zg-9.softxs.ch\"\nrelpath = \"Demo.softxs.ch/hydro\"\ntype = \"rails\"\ncolour = \"blue\"\n"), 0o644)
	cases := []struct {
		name     string
		args     []string
		code     int
		inStderr []string
	}{
		{"invalid inventory", []string{"--config", bad, "inventory"}, exitUsage,
			[]string{bad + ":12:1: app[hydro].colour: unknown key", bad + ":9:1: app[hydro].server", "zg-9.softxs.ch", bad + ":10:1: app[hydro].relpath", "lower case"}},
		{"missing inventory", []string{"--config", filepath.Join(dir, "none.toml"), "inventory"}, exitUsage, []string{"none.toml", "no such file"}},
		{"unknown application", []string{"--config", example, "paths", "nope"}, exitUsage, []string{`no application "nope"`}},
		{"unknown command", []string{"frobnicate"}, exitUsage, []string{"unknown command"}},
		{"unknown flag", []string{"--config", example, "inventory", "--bogus"}, exitUsage, []string{"unknown flag"}},
		{"missing argument", []string{"--config", example, "paths"}, exitUsage, []string{"accepts 1 arg"}},
		{"bad --server", []string{"--config", example, "--server", "localhost", "status"}, exitUsage, []string{"--server", "at least two labels"}},
		{"not a host", []string{"--config", example, "--server", "odin.softxs.ch", "status"}, exitUsage, []string{"not a host"}},
		{"restore without --to", []string{"--config", example, "restore", "hydro"}, exitUsage, []string{"--to DIR is required"}},
		{"verify --live and --snapshot", []string{"--config", example, "--server", "zg-3.softxs.ch", "verify", "--live", "--snapshot", "x"}, exitUsage, []string{"exclude each other"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, code := v2(t, c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, c.code, errOut)
			}
			for _, w := range c.inStderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

// V2BACKUP_CONFIG names the inventory when --config is not given.
func TestConfigFromEnvironment(t *testing.T) {
	t.Setenv("V2BACKUP_CONFIG", example)
	out, errOut, code := v2(t, "inventory")
	if code != exitOK || !strings.Contains(out, "15 applications") {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
}

// Every command has help.
func TestHelpForEachCommand(t *testing.T) {
	root := newRootCommand(&globalOptions{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}})
	for _, c := range root.Commands() {
		if c.Name() == "help" {
			continue
		}
		out, _, code := v2(t, "help", c.Name())
		if code != exitOK || !strings.Contains(out, "Usage:") || len(out) < 100 {
			t.Errorf("help %s: exit %d:\n%s", c.Name(), code, out)
		}
	}
}

// status on a fresh partition: every application, state never.
func TestStatusEmpty(t *testing.T) {
	dir := t.TempDir()
	inv := filepath.Join(dir, "inv.toml")
	data, _ := os.ReadFile(example)
	os.WriteFile(inv, bytes.ReplaceAll(data, []byte("/v01/backup"), []byte(dir+"/v01")), 0o644)
	out, errOut, code := v2(t, "--config", inv, "--server", "zg-3.softxs.ch", "status")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got := strings.Count(out, " never"); got != 5 {
		t.Errorf("%d apps never backed up, want zg-3's 5:\n%s", got, out)
	}
}
