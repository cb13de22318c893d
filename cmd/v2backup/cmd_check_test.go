package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
)

const checkInventory = `
[site]
partition = %q

[[server]]
name = "zg-3.softxs.ch"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"

[[app]]
name = "hydro"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "demo.softxs.ch/hydro"
type = "rails"

[[app]]
name = "wiki"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "wiki.softxs.ch"
type = "moinmoin"
[app.expect]
min_files = 2

[[backup_server]]
name = "odin.softxs.ch"
partition = %q
pulls = ["zg-3.softxs.ch"]
`

// checkSite is a host zg-3 whose two applications were backed up two
// hours ago, hydro with its dump, and its backup server odin, never pulled.
type checkSite struct {
	config         string
	hostPart, odin tiers.Partition
	db             *catalog.DB
}

func newCheckSite(t *testing.T) *checkSite {
	t.Helper()
	dir := t.TempDir()
	s := &checkSite{config: filepath.Join(dir, "v2backup.toml"), hostPart: tiers.Partition(filepath.Join(dir, "host")),
		odin: tiers.Partition(filepath.Join(dir, "odin"))}
	if err := os.WriteFile(s.config, fmt.Appendf(nil, checkInventory, s.hostPart, s.odin), 0o644); err != nil {
		t.Fatal(err)
	}
	db, err := catalog.Open(s.hostPart.CatalogPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s.db = db
	ctx := context.Background()
	end := time.Now().Add(-2 * time.Hour)
	for _, app := range []string{"hydro", "wiki"} {
		id, err := db.StartRun(ctx, app, "backup", end.Add(-time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if err := db.FinishRun(ctx, id, end, catalog.RunOK, 2, 20, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.UpsertFiles(ctx, []catalog.FileRecord{
		{Path: "web/demo.softxs.ch/hydro/db/hydro-2026-11-29T020000.sql.gz", App: "hydro", Size: 100, MTime: end},
		{Path: "web/wiki.softxs.ch/a", App: "wiki", Size: 10, MTime: end},
		{Path: "web/wiki.softxs.ch/b", App: "wiki", Size: 10, MTime: end},
	}); err != nil {
		t.Fatal(err)
	}
	writeGzip(t, filepath.Join(s.hostPart.Local("web", "demo.softxs.ch/hydro"), "db", "hydro-2026-11-29T020000.sql.gz"),
		"-- MariaDB dump 10.19\nCREATE TABLE t (i int);\n-- Dump completed on 2026-11-29  2:00:00\n")
	return s
}

func writeGzip(t *testing.T, path, content string) {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(content))
	zw.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *checkSite) check(t *testing.T, server string, args ...string) (string, string, int) {
	t.Helper()
	return v2(t, append([]string{"--config", s.config, "--server", server, "check"}, args...)...)
}

var checkPerfRE = regexp.MustCompile(`^'([a-z0-9_.-]+)'=([0-9]+(?:s|B)?|U);([0-9]*);([0-9]*);0$`)

// perfdata parses the first line's performance data, failing on any
// label=value the plugin guidelines would not accept.
func perfdata(t *testing.T, out string) map[string]string {
	t.Helper()
	first, _, _ := strings.Cut(out, "\n")
	_, perf, ok := strings.Cut(first, " | ")
	if !ok {
		t.Fatalf("no performance data in %q", first)
	}
	got := map[string]string{}
	for _, f := range strings.Fields(perf) {
		m := checkPerfRE.FindStringSubmatch(f)
		if m == nil {
			t.Errorf("performance data %q does not parse", f)
			continue
		}
		got[m[1]] = m[2] + ";" + m[3] + ";" + m[4]
	}
	return got
}

func TestCheckStates(t *testing.T) {
	s := newCheckSite(t)
	out, errOut, code := s.check(t, "zg-3.softxs.ch")
	if code != 0 || !strings.HasPrefix(out, "V2BACKUP OK - 2 applications on 1 server as expected | ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}
	perf := perfdata(t, out)
	if age := perf["hydro_age"]; !regexp.MustCompile(`^[0-9]+s;93600;180000$`).MatchString(age) || perf["wiki_files"] != "2;;" || perf["wiki_bytes"] != "20B;;" {
		t.Errorf("perfdata %v", perf)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.hostPart.CatalogPath()), dumpCacheName)); err != nil {
		t.Errorf("no dump cache next to the catalog: %v", err)
	}

	// The flags replace the inventory's ages: WARNING, then CRITICAL.
	out, _, code = s.check(t, "zg-3.softxs.ch", "--warn-age", "1h")
	if code != 1 || !strings.HasPrefix(out, "V2BACKUP WARNING - 0 critical, 2 warning in 2 applications") ||
		!strings.Contains(out, "\nWARNING zg-3.softxs.ch hydro: last success ") || !strings.HasSuffix(perfdata(t, out)["wiki_age"], "s;3600;180000") {
		t.Errorf("--warn-age 1h: exit %d:\n%s", code, out)
	}
	out, _, code = s.check(t, "zg-3.softxs.ch", "--warn-age", "1h", "--crit-age", "90m", "--app", "wiki")
	if code != 2 || !strings.HasPrefix(out, "V2BACKUP CRITICAL - 1 critical, 0 warning in 1 application on 1 server; CRITICAL zg-3.softxs.ch wiki: ") ||
		strings.Contains(out, "hydro") {
		t.Errorf("--crit-age 90m --app wiki: exit %d:\n%s", code, out)
	}

	// A truncated dump is CRITICAL; --json says the same, same exit status.
	dump := filepath.Join(s.hostPart.Local("web", "demo.softxs.ch/hydro"), "db", "hydro-2026-11-29T030000.sql.gz")
	writeGzip(t, dump, "-- MariaDB dump 10.19\nCREATE TABLE t (i int);\nINSERT INTO t VALUES (1),(2),(3);\n-- Dump completed on 2026-11-29  3:00:00\n")
	data, _ := os.ReadFile(dump)
	os.WriteFile(dump, data[:len(data)/2], 0o644)
	out, _, code = s.check(t, "zg-3.softxs.ch", "--json")
	var res struct {
		Status   string
		Problems []struct{ Status, App, Rule, Message string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 2 || res.Status != "CRITICAL" || len(res.Problems) != 1 ||
		res.Problems[0].Rule != "dump" || !strings.Contains(res.Problems[0].Message, dump) {
		t.Errorf("truncated dump, --json: exit %d, %v: %+v\n%s", code, err, res, out)
	}
}

// Everything that keeps the check from being made is UNKNOWN, exit 3, with
// the plugin's line on stdout.
func TestCheckUnknown(t *testing.T) {
	s := newCheckSite(t)
	broken := filepath.Join(t.TempDir(), "broken.toml")
	os.WriteFile(broken, []byte("[site]\npartition = \"v01\"\n"), 0o644)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown app", []string{"--config", s.config, "--server", "zg-3.softxs.ch", "check", "--app", "nosuch"}, "--app nosuch: no such application in " + s.config},
		{"bad age", []string{"--config", s.config, "--server", "zg-3.softxs.ch", "check", "--warn-age", "soon"}, `--warn-age "soon": want a positive duration`},
		{"bad crit age", []string{"--config", s.config, "--server", "zg-3.softxs.ch", "check", "--crit-age", "-1h"}, `--crit-age "-1h"`},
		{"ages reversed", []string{"--config", s.config, "--server", "zg-3.softxs.ch", "check", "--warn-age", "3h", "--crit-age", "2h"}, "warning age 3h0m0s is above critical age 2h0m0s"},
		{"unknown flag", []string{"--config", s.config, "check", "--bogus"}, "unknown flag: --bogus"},
		{"flag without value", []string{"--config", s.config, "check", "--app"}, "flag needs an argument"},
		{"argument", []string{"--config", s.config, "check", "hydro"}, `check takes no arguments, got ["hydro"] (use --app)`},
		{"no inventory", []string{"--config", filepath.Join(t.TempDir(), "none.toml"), "--server", "zg-3.softxs.ch", "check"}, "none.toml"},
		{"bad inventory", []string{"--config", broken, "--server", "zg-3.softxs.ch", "check"}, "site.partition"},
		{"bad server name", []string{"--config", s.config, "--server", "Not A Host", "check"}, "--server"},
		{"not in the inventory", []string{"--config", s.config, "--server", "zg-9.softxs.ch", "check"}, "zg-9.softxs.ch is neither a host nor a backup server"},
		{"no catalog", []string{"--config", s.config, "--server", "odin.softxs.ch", "check"}, "catalog of odin.softxs.ch: "},
	} {
		out, _, code := v2(t, c.args...)
		if code != 3 || !strings.HasPrefix(out, "V2BACKUP UNKNOWN - ") || !strings.Contains(out, c.want) || strings.Count(out, "\n") != 1 {
			t.Errorf("%s: exit %d, stdout %q, want UNKNOWN with %q", c.name, code, out, c.want)
		}
	}
	// A catalog that is not one.
	os.MkdirAll(filepath.Dir(s.odin.CatalogPath()), 0o755)
	os.WriteFile(s.odin.CatalogPath(), bytes.Repeat([]byte("not a database "), 100), 0o644)
	if out, _, code := s.check(t, "odin.softxs.ch"); code != 3 || !strings.HasPrefix(out, "V2BACKUP UNKNOWN - ") || !strings.Contains(out, s.odin.CatalogPath()) {
		t.Errorf("damaged catalog: exit %d: %s", code, out)
	}
	// --help is not a check.
	if out, _, code := s.check(t, "zg-3.softxs.ch", "--help"); code != 0 || !strings.Contains(out, "--crit-age") {
		t.Errorf("--help: exit %d: %s", code, out)
	}
}

// A backup server checks every host it pulls, from the catalog the host
// shipped, the pulled dump in its remote tier and its own pull records.
func TestCheckBackupServer(t *testing.T) {
	s := newCheckSite(t)
	ctx := context.Background()
	odin, err := catalog.Open(s.odin.CatalogPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { odin.Close() })

	out, _, code := s.check(t, "odin.softxs.ch")
	if code != 2 || !strings.Contains(out, "\nCRITICAL zg-3.softxs.ch hydro: no successful backup is recorded (no catalog of zg-3.softxs.ch at ") ||
		!strings.Contains(out, "\nWARNING zg-3.softxs.ch: no ok pull by odin.softxs.ch") || perfdata(t, out)["hydro_age"] != "U;93600;180000" {
		t.Errorf("never pulled: exit %d:\n%s", code, out)
	}

	// A pull: the host's catalog and tree arrive, and odin records it.
	if err := s.db.ExportTo(ctx, s.odin.HostCatalog("zg-3.softxs.ch")); err != nil {
		t.Fatal(err)
	}
	writeGzip(t, filepath.Join(s.odin.Remote("zg-3.softxs.ch", "web", "demo.softxs.ch/hydro"), "db", "hydro-2026-11-29T020000.sql.gz"),
		"-- MariaDB dump 10.19\nCREATE TABLE t (i int);\n-- Dump completed on 2026-11-29  2:00:00\n")
	end := time.Now().Add(-time.Hour)
	if _, err := odin.RecordPull(ctx, catalog.Pull{BackupServer: "odin.softxs.ch", HostServer: "zg-3.softxs.ch",
		Start: end.Add(-time.Minute), End: end, Result: catalog.RunOK}); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := s.check(t, "odin.softxs.ch")
	if code != 0 || !strings.HasPrefix(out, "V2BACKUP OK - 2 applications on 1 server as expected | ") {
		t.Errorf("after a pull: exit %d:\n%s%s", code, out, errOut)
	}
	if out, _, code := s.check(t, "odin.softxs.ch", "--app", "hydro"); code != 0 || !strings.Contains(out, "'hydro_age'=") || strings.Contains(out, "wiki") {
		t.Errorf("--app hydro on odin: exit %d:\n%s", code, out)
	}
}
