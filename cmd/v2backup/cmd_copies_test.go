package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/copies"
	"github.com/softxs/v2backup/jobs/nightly"
	"github.com/softxs/v2backup/tiers"
)

// copiesInventory: host zg-3 and backup server bk on their own partitions.
func copiesInventory(t *testing.T) (cfg string, hostPart, bkPart tiers.Partition) {
	t.Helper()
	dir := t.TempDir()
	hostPart, bkPart = tiers.Partition(filepath.Join(dir, "host")), tiers.Partition(filepath.Join(dir, "bk"))
	cfg = filepath.Join(dir, "v2backup.toml")
	inv := `
[site]
partition = "` + string(hostPart) + `"

[[server]]
name = "zg-3.softxs.ch"

[[server]]
name = "zg-1.softxs.ch"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"

[[app]]
name = "hydro"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "demo.softxs.ch/hydro"
type = "rails"

[[backup_server]]
name = "bk.softxs.ch"
partition = "` + string(bkPart) + `"
pulls = ["zg-3.softxs.ch"]
`
	if err := os.WriteFile(cfg, []byte(inv), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, hostPart, bkPart
}

func TestCopiesCommand(t *testing.T) {
	cfg, hostPart, bkPart := copiesInventory(t)
	app := filepath.Join(hostPart.Local("web", "demo.softxs.ch/hydro"))
	if err := os.MkdirAll(filepath.Join(app, "db"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "db", "hydro.sql"), []byte("CREATE TABLE t;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	host := []string{"--config", cfg, "--server", "zg-3.softxs.ch"}
	if _, errOut, code := v2(t, append(host, "snapshot")...); code != exitOK {
		t.Fatalf("snapshot: exit %d: %s", code, errOut)
	}
	// The snapshot shipped the catalog for the remote view.
	ents, err := os.ReadDir(nightly.ShippedDir(hostPart))
	if err != nil || len(ents) != 1 || !strings.HasSuffix(ents[0].Name(), ".db") {
		t.Fatalf("shipped exports %v, %v", ents, err)
	}
	name := strings.TrimSuffix(ents[0].Name(), ".db")

	out, errOut, code := v2(t, append(host, "copies", "hydro", "--json")...)
	if code != exitOK {
		t.Fatalf("copies on the host: exit %d: %s", code, errOut)
	}
	var nights []copies.Night
	if err := json.Unmarshal([]byte(out), &nights); err != nil || len(nights) != 1 || len(nights[0].Copies) != 1 {
		t.Fatalf("copies --json: %v: %s", err, out)
	}
	local := nights[0].Copies[0]
	if local.Kind != copies.Local || local.Snapshot != name || local.Files != 1 || len(local.Digest) != 64 || local.Where != "zg-3.softxs.ch" {
		t.Fatalf("local copy %+v", local)
	}
	out, _, code = v2(t, append(host, "copies", "hydro", "--at", name[:10])...)
	if code != exitOK || !strings.Contains(out, name) || !strings.Contains(out, local.Digest[:16]) || !strings.Contains(out, "never verified") {
		t.Fatalf("copies --at day: exit %d:\n%s", code, out)
	}
	// A verify of one application records nothing; of the whole snapshot,
	// the date copies shows.
	if _, errOut, code := v2(t, append(host, "verify", "hydro")...); code != exitOK {
		t.Fatalf("verify hydro: exit %d: %s", code, errOut)
	}
	out, _, _ = v2(t, append(host, "copies", "hydro")...)
	if !strings.Contains(out, "never verified") {
		t.Fatalf("after verify of one app:\n%s", out)
	}
	if _, errOut, code := v2(t, append(host, "verify")...); code != exitOK {
		t.Fatalf("verify: exit %d: %s", code, errOut)
	}
	out, _, _ = v2(t, append(host, "copies", "hydro", "--json")...)
	if err := json.Unmarshal([]byte(out), &nights); err != nil || len(nights) != 1 || nights[0].Copies[0].VerifiedAt.IsZero() {
		t.Fatalf("after a whole verify the local copy is not verified: %v\n%s", err, out)
	}

	// The backup server, before any pull: no host catalog, said so.
	bk := []string{"--config", cfg, "--server", "bk.softxs.ch"}
	out, errOut, code = v2(t, append(bk, "copies", "hydro")...)
	if code != exitOK || !strings.Contains(errOut, "no catalog of zg-3.softxs.ch") || !strings.Contains(out, "no copies of hydro") {
		t.Fatalf("bk before a pull: exit %d: %s\n%s", code, errOut, out)
	}
	// With the shipped catalog where a pull puts it.
	if err := os.MkdirAll(filepath.Dir(bkPart.HostCatalog("zg-3.softxs.ch")), 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(nightly.ShippedCatalog(hostPart, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bkPart.HostCatalog("zg-3.softxs.ch"), raw, 0o444); err != nil {
		t.Fatal(err)
	}
	// An unreadable host catalog is an error naming it.
	if err := os.WriteFile(bkPart.HostCatalog("zg-3.softxs.ch"), []byte("not a database"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = v2(t, append(bk, "copies", "hydro")...)
	if code != exitFailed || !strings.Contains(errOut, bkPart.HostCatalog("zg-3.softxs.ch")) {
		t.Fatalf("bad host catalog: exit %d: %s", code, errOut)
	}
	if err := os.Remove(bkPart.HostCatalog("zg-3.softxs.ch")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bkPart.HostCatalog("zg-3.softxs.ch"), raw, 0o444); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = v2(t, append(bk, "copies", "hydro", "--at", name)...)
	if code != exitOK || !strings.Contains(out, name) || !strings.Contains(out, local.Digest[:16]) {
		t.Fatalf("bk with the host catalog: exit %d: %s\n%s", code, errOut, out)
	}

	// A drive copy with a different digest shows as a mismatch: record a
	// remote-tier snapshot on bk whose content differs, pulled from name.
	ctx := context.Background()
	db, err := catalog.Open(bkPart.CatalogPath())
	if err != nil {
		t.Fatal(err)
	}
	b, err := db.BeginSnapshot(ctx, tiers.Remote, "bk.softxs.ch", "2030-01-01T060000", time.Date(2030, 1, 1, 6, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Add(ctx, catalog.ManifestEntry{Path: "zg-3.softxs.ch/web/demo.softxs.ch/hydro/db/hydro.sql", Size: 16, MTime: time.Date(2030, 1, 1, 6, 0, 0, 0, time.UTC), SHA256: strings.Repeat("0", 64), App: "hydro"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	end := time.Date(2030, 1, 1, 6, 0, 0, 0, time.UTC)
	id, err := db.RecordPull(ctx, catalog.Pull{BackupServer: "bk.softxs.ch", HostServer: "zg-3.softxs.ch", HostSnapshot: name, Start: end, End: end, Result: catalog.RunOK})
	if err == nil {
		err = db.SetPullRemoteSnapshot(ctx, id, "2030-01-01T060000")
	}
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _, code = v2(t, append(bk, "copies", "hydro")...)
	if code != exitOK || !strings.Contains(out, "MISMATCH") || !strings.Contains(out, "bk.softxs.ch") || !strings.Contains(out, "2030-01-01T060000") {
		t.Fatalf("mismatch: exit %d:\n%s", code, out)
	}
}

func TestCopiesCommandErrors(t *testing.T) {
	cfg, _, _ := copiesInventory(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"unknown app", []string{"--server", "zg-3.softxs.ch", "copies", "nope"}, exitUsage, []string{`"nope"`, cfg}},
		{"bad date", []string{"--server", "zg-3.softxs.ch", "copies", "hydro", "--at", "28.11.2026"}, exitUsage, []string{"28.11.2026", "must be a day"}},
		{"no copy that night", []string{"--server", "zg-3.softxs.ch", "copies", "hydro", "--at", "2026-11-28"}, exitFailed, []string{"no copy of the night 2026-11-28"}},
		{"neither host nor puller", []string{"--server", "zg-1.softxs.ch", "copies", "hydro"}, exitUsage, []string{"zg-3.softxs.ch", "neither is nor pulls"}},
		{"no app", []string{"--server", "zg-3.softxs.ch", "copies"}, exitUsage, []string{"accepts 1 arg"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := v2(t, append([]string{"--config", cfg}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q: %s", w, errOut)
				}
			}
		})
	}
}
