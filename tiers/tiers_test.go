package tiers

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The seed's example: the rails app http://demo.softxs.ch/hydro on server
// zg-3.softxs.ch in VM web.
func TestSeedPaths(t *testing.T) {
	p := mustPartition(t, "/v01/backup")
	s := mustServer(t, "zg-3.softxs.ch")
	vm := mustVM(t, "web")
	rel := mustRelpath(t, "demo.softxs.ch/hydro")
	for _, c := range []struct{ got, want string }{
		{p.LocalRoot(), "/v01/backup/local"},
		{p.LocalVM(vm), "/v01/backup/local/web"},
		{p.Local(vm, rel), "/v01/backup/local/web/demo.softxs.ch/hydro"},
		{p.RemoteRoot(), "/v01/backup/remote"},
		{p.RemoteServer(s), "/v01/backup/remote/zg-3.softxs.ch"},
		{p.HostCatalog(s), "/v01/backup/remote/zg-3.softxs.ch/CATALOG.db"},
		{p.Remote(s, vm, rel), "/v01/backup/remote/zg-3.softxs.ch/web/demo.softxs.ch/hydro"},
		{p.Local(NoVM, mustRelpath(t, "cardenillo.softxs.ch")), "/v01/backup/local/_host/cardenillo.softxs.ch"},
		{p.SnapshotDir(Local), "/v01/backup/snapshots/local"},
		{p.Snapshot(Remote, "2026-11-28T050000"), "/v01/backup/snapshots/remote/2026-11-28T050000"},
		{p.SnapshotLocal("2026-11-28T050000", vm, rel), "/v01/backup/snapshots/local/2026-11-28T050000/web/demo.softxs.ch/hydro"},
		{p.HistoryDir(), "/v01/backup/history"},
		{p.StateDir(), "/v01/backup/.v2backup"},
		{p.CatalogPath(), "/v01/backup/.v2backup/catalog.db"},
		{p.StagingDir(s), "/v01/backup/.v2backup/staging/zg-3.softxs.ch"},
		{TierPath(vm, rel), "web/demo.softxs.ch/hydro"},
		{HistoryFile("hydro", time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)), "backup-hydro-20261128"},
	} {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
	// A remote backup is the whole local tier under the server's directory.
	if got := p.RemoteServer(s) + strings.TrimPrefix(p.Local(vm, rel), p.LocalRoot()); got != p.Remote(s, vm, rel) {
		t.Errorf("remote tier is not local tier under server dir: %s", got)
	}
}

func TestSeedNamesAccepted(t *testing.T) {
	for _, s := range []string{"zg-3.softxs.ch", "zg-1.softxs.ch", "loki.softxs.ch", "odin.softxs.ch"} {
		mustServer(t, s)
	}
	for _, s := range []string{"web", "intern", "wiki", "v2", "v0402", "_host"} {
		mustVM(t, s)
	}
	for _, s := range []string{"www.softxs.ch", "demo.softxs.ch/hydro", "intern.softxs.ch/tracking",
		"wiki.softxs.ch", "v2.softxs.ch/v2p0-jk1", "cardenillo.softxs.ch", "kejv.softxs.ch/arch",
		"demo.softxs.ch/Hydro Files/ü"} {
		mustRelpath(t, s)
	}
	for _, s := range []string{"hydro", "www", "coya-ii", "roadnotes.pms", "a_b"} {
		if _, err := ParseAppName(s); err != nil {
			t.Errorf("ParseAppName(%q): %v", s, err)
		}
	}
}

// Each rejected input gets an error naming the field, the value and the rule.
func TestRejected(t *testing.T) {
	long := strings.Repeat("a", 256)
	cases := []struct {
		name, field, value, rule string
		parse                    func(string) error
	}{
		{"dotdot", "relpath", "demo.softxs.ch/../etc", `".." segment`, relp},
		{"dot", "relpath", "demo.softxs.ch/./x", `"." segment`, relp},
		{"empty segment", "relpath", "demo.softxs.ch//x", "empty path segment", relp},
		{"trailing slash", "relpath", "demo.softxs.ch/x/", "must not end with /", relp},
		{"leading slash", "relpath", "/demo.softxs.ch/x", "must be relative", relp},
		{"empty", "relpath", "", "must not be empty", relp},
		{"upper case host", "relpath", "Demo.softxs.ch/hydro", "lower case", relp},
		{"host not FQDN", "relpath", "wiki/softxs.ch", "fully qualified domain name", relp},
		{"host underscore", "relpath", "my_host.ch/x", "only a-z, 0-9", relp},
		{"host dotdot", "relpath", "a..b/x", "empty DNS label", relp},
		{"host dash", "relpath", "-a.ch/x", "may not start or end with '-'", relp},
		{"control char", "relpath", "demo.softxs.ch/a\tb", "control character U+0009", relp},
		{"NUL", "relpath", "demo.softxs.ch/a\x00b", "control character U+0000", relp},
		{"DEL", "relpath", "demo.softxs.ch/a\x7fb", "control character U+007F", relp},
		{"dot name", "relpath", "demo.softxs.ch/.history", "reserved", relp},
		{"invalid utf8", "relpath", "demo.softxs.ch/\xff", "UTF-8", relp},
		{"segment too long", "relpath", "demo.softxs.ch/" + long, "over the system's limit of 255", relp},
		{"path too long", "relpath", "demo.softxs.ch" + strings.Repeat("/abcdefgh", 500), "path limit", relp},
		{"label too long", "relpath", strings.Repeat("a", 64) + ".ch", "limit of 63", relp},
		{"server upper", "server", "ZG-3.softxs.ch", "lower case", srv},
		{"server single label", "server", "localhost", "at least two labels", srv},
		{"server empty", "server", "", "must not be empty", srv},
		{"server space", "server", "zg 3.softxs.ch", "only a-z", srv},
		{"server too long", "server", strings.Repeat("abcdefgh.", 30) + "ch", "limit of 253", srv},
		{"vm empty", "vm", "", "must not be empty", vmp},
		{"vm slash", "vm", "web/x", "only a-z", vmp},
		{"vm dotdot", "vm", "..", "only a-z", vmp},
		{"vm upper", "vm", "Web", "lower case", vmp},
		{"vm NUL", "vm", "w\x00", "control character", vmp},
		{"vm underscore", "vm", "_other", "only a-z", vmp},
		{"name upper", "name", "Hydro", "lower case", app},
		{"name slash", "name", "a/b", "may hold only", app},
		{"name leading dash", "name", "-x", "may hold only", app},
		{"partition relative", "partition", "v01/backup", "absolute", part},
		{"partition unclean", "partition", "/v01/../backup", "clean path", part},
		{"tier", "tier", "offsite", `"local" or "remote"`, tier},
		{"snapshot colon", "snapshot", "2026-11-28T05:00:00", "must look like", snap},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.parse(c.value)
			var ne *NameError
			if !errors.As(err, &ne) {
				t.Fatalf("got %v, want a *NameError", err)
			}
			if ne.Field != c.field || ne.Value != c.value {
				t.Errorf("field/value = %s/%q, want %s/%q", ne.Field, ne.Value, c.field, c.value)
			}
			if !strings.Contains(ne.Rule, c.rule) {
				t.Errorf("rule %q does not mention %q", ne.Rule, c.rule)
			}
			if msg := err.Error(); !strings.Contains(msg, c.field) || !strings.Contains(msg, ne.Rule) {
				t.Errorf("message %q lacks field or rule", msg)
			}
		})
	}
}

func TestRelpathRelations(t *testing.T) {
	a, b, c := mustRelpath(t, "demo.softxs.ch/hydro"), mustRelpath(t, "demo.softxs.ch/hydro/x"), mustRelpath(t, "demo.softxs.ch/hydrox")
	if !a.Contains(b) || b.Contains(a) || a.Contains(c) || !a.Overlaps(b) || !b.Overlaps(a) || a.Overlaps(c) {
		t.Error("Contains/Overlaps wrong")
	}
	if a.Host() != "demo.softxs.ch" || len(b.Segments()) != 3 {
		t.Error("Host/Segments wrong")
	}
}

func TestSnapshotNames(t *testing.T) {
	at := time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)
	name := SnapshotName(at)
	if name != "2026-11-28T050000" {
		t.Fatalf("SnapshotName = %s", name)
	}
	back, err := ParseSnapshotName(name, time.UTC)
	if err != nil || !back.Equal(at) {
		t.Fatalf("ParseSnapshotName = %v, %v", back, err)
	}
	if _, err := ParseSnapshotName("latest", time.UTC); err == nil {
		t.Error("latest accepted as snapshot name")
	}
}

func relp(s string) error { _, err := ParseRelpath(s); return err }
func srv(s string) error  { _, err := ParseServer(s); return err }
func vmp(s string) error  { _, err := ParseVM(s); return err }
func app(s string) error  { _, err := ParseAppName(s); return err }
func part(s string) error { _, err := ParsePartition(s); return err }
func tier(s string) error { _, err := ParseTier(s); return err }
func snap(s string) error { _, err := ParseSnapshotName(s, time.UTC); return err }

func mustPartition(t *testing.T, s string) Partition {
	t.Helper()
	p, err := ParsePartition(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
func mustServer(t *testing.T, s string) Server {
	t.Helper()
	v, err := ParseServer(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
func mustVM(t *testing.T, s string) VM {
	t.Helper()
	v, err := ParseVM(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
func mustRelpath(t *testing.T, s string) Relpath {
	t.Helper()
	v, err := ParseRelpath(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing"), filepath.Join(dir, "file")} {
		if bad == filepath.Join(dir, "file") {
			if err := os.WriteFile(bad, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := SyncDir(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("SyncDir(%s) = %v, want an error naming it", bad, err)
		}
	}
}
