package inventory

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/tiers"
)

// seedRow is one row of the wiki's "Summary of Backup Systems" tables, as
// the example resolves it (the resolutions are commented in the example).
type seedRow struct {
	name, description string
	server            tiers.Server
	vm                tiers.VM
	path              string
	relpath           tiers.Relpath
	typ               AppType
}

// seedTables holds every row of the four tables, by table.
var seedTables = map[string][]seedRow{
	"SoftXS Systems": {
		{"www", "SoftXS Web Site", "zg-3.softxs.ch", "web", "/home/v2/rails/www.softxs.ch", "www.softxs.ch", TypeRails},
		{"hydro", "Hydro Demo", "zg-3.softxs.ch", "web", "/home/v2/rails/demo.softxs.ch/hydro", "demo.softxs.ch/hydro", TypeRails},
		{"tracking", "Tracking System", "zg-3.softxs.ch", "intern", "/home/v2/rails/intern.softxs.ch/tracking", "intern.softxs.ch/tracking", TypeRails},
		{"wiki", "Wiki", "loki.softxs.ch", "wiki", "/home/wiki/www/html", "wiki.softxs.ch", TypeMoinMoin},
	},
	"Prototype Systems": {
		{"v2p0-jk1", "Prototype v2p0-jk1", "zg-3.softxs.ch", "v2", "/home/v2/rails/v2.softxs.ch/v2p0-jk1", "v2.softxs.ch/v2p0-jk1", TypeRails},
	},
	"Customer Systems": {
		{"roadnotes", "Roadnotes PMS", "zg-3.softxs.ch", "v0402", "/home/v2/rails/roadnotes.softxs.ch/pms", "roadnotes.softxs.ch/pms", TypeRails},
	},
	"DrawMGT Systems": {
		{"cardenillo", "Cardenillo", "zg-1.softxs.ch", tiers.NoVM, "/home/cardenillo/html/prod/var", "cardenillo.softxs.ch", TypeDrawMGT},
		{"coya2", "Coya II", "zg-1.softxs.ch", tiers.NoVM, "/home/coya/html/prod/var", "coya.softxs.ch", TypeDrawMGT},
		{"drytech", "DryTech", "zg-1.softxs.ch", tiers.NoVM, "/home/drytech/html/prod/var", "drytech.softxs.ch", TypeDrawMGT},
		{"hcmc2", "HCMC2", "zg-1.softxs.ch", tiers.NoVM, "/home/hcmc2/html/prod/var", "hcmc2.softxs.ch", TypeDrawMGT},
		{"idp", "IDP", "zg-1.softxs.ch", tiers.NoVM, "/home/idp/html/prod/var", "idp.softxs.ch", TypeDrawMGT},
		{"ilulissat", "Ilulissat", "zg-1.softxs.ch", tiers.NoVM, "/home/ilulissat/html/prod/var", "ilulissat.softxs.ch", TypeDrawMGT},
		{"kejv", "KEJV", "zg-1.softxs.ch", tiers.NoVM, "/home/kejv/html/arch/var", "kejv.softxs.ch", TypeDrawMGT},
		{"lagarfoss", "Lagarfoss", "zg-1.softxs.ch", tiers.NoVM, "/home/lagarfoss/html/prod/var", "lagarfoss.softxs.ch", TypeDrawMGT},
		{"sisimiut", "Sisimiut", "zg-1.softxs.ch", tiers.NoVM, "/home/sisimiut/html/prod/var", "sisimiut.softxs.ch", TypeDrawMGT},
	},
}

// checkSoftXS checks that an inventory file holds the whole seed.
func checkSoftXS(t *testing.T, file string) {
	t.Helper()
	inv, err := Load(file)
	if err != nil {
		t.Fatalf("Load(%s): %v", file, err)
	}
	rows := 0
	wantRows := map[string]int{"SoftXS Systems": 4, "Prototype Systems": 1, "Customer Systems": 1, "DrawMGT Systems": 9}
	for table, want := range seedTables {
		if len(want) != wantRows[table] {
			t.Fatalf("%s: the test lists %d rows, the seed has %d", table, len(want), wantRows[table])
		}
		for _, r := range want {
			rows++
			a, ok := inv.App(r.name)
			if !ok {
				t.Errorf("%s: %s (%s) is missing", table, r.description, r.name)
				continue
			}
			got := seedRow{a.Name, a.Description, a.Server, a.VM, a.Path, a.Relpath, a.Type}
			if got != r {
				t.Errorf("%s: %s is\n%+v, want\n%+v", table, r.name, got, r)
			}
			if a.Status != "open" {
				t.Errorf("%s: status %q, want open", r.name, a.Status)
			}
		}
	}
	if len(inv.Apps) != rows {
		t.Errorf("%d applications, want the seed's %d", len(inv.Apps), rows)
	}
	for _, s := range []tiers.Server{"zg-3.softxs.ch", "zg-1.softxs.ch", "loki.softxs.ch"} {
		if !inv.IsHost(s) {
			t.Errorf("server %s is not declared", s)
		}
	}
	if got := len(inv.VMsOn("zg-3.softxs.ch")); got != 4 {
		t.Errorf("zg-3 has %d VMs, want 4 (web, intern, v2, v0402)", got)
	}
	if len(inv.BackupServers) != 1 {
		t.Fatalf("%d backup servers, want 1", len(inv.BackupServers))
	}
	bs := inv.BackupServers[0]
	for _, s := range inv.Servers {
		found := false
		for _, p := range bs.Pulls {
			found = found || p == s.Name
		}
		if !found {
			t.Errorf("backup server %s does not pull %s", bs.Name, s.Name)
		}
	}
	for _, a := range inv.Apps {
		if a.Type == TypeDrawMGT && (a.Database == nil || a.Database.Name == "") {
			t.Errorf("drawmgt app %s has no database, which its job needs", a.Name)
		}
	}
}

func TestExample(t *testing.T) { checkSoftXS(t, "../../examples/softxs.toml") }

// TestFormatV1 loads a frozen copy of the example as first shipped: files
// written for format 1 must keep loading (compatibility is tested, not
// promised). Never edit testdata/v1; add a v2 beside it.
func TestFormatV1(t *testing.T) { checkSoftXS(t, "testdata/v1/softxs.toml") }

// TestExampleBlocksCommented checks that the example documents each
// type-specific table, commented out, and that uncommenting them loads.
func TestExampleBlocksCommented(t *testing.T) {
	data, err := os.ReadFile("../../examples/softxs.toml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		for _, block := range []string{"[app.database]", "[app.files]", "[app.expect]"} {
			if line == "# "+block {
				// Uncomment the block: every "# key = value" line after it
				// up to the first line that is not one.
				line = block
			}
		}
		out = append(out, line)
	}
	text := strings.Join(out, "\n")
	for _, block := range []string{"[app.database]", "[app.files]", "[app.expect]"} {
		if !strings.Contains(text, "\n"+block+"\n") {
			t.Errorf("the example has no commented %s block", block)
		}
	}
	// Uncomment the key lines right under each block header.
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		if lines[i] == "[app.database]" || lines[i] == "[app.files]" || lines[i] == "[app.expect]" {
			for j := i + 1; j < len(lines) && strings.HasPrefix(lines[j], "# ") && strings.Contains(lines[j], " = "); j++ {
				lines[j] = strings.TrimPrefix(lines[j], "# ")
			}
		}
	}
	inv, err := Parse("uncommented.toml", []byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatalf("the example with its commented blocks uncommented: %v", err)
	}
	a, _ := inv.App("roadnotes")
	if a.Database == nil || a.Database.Adapter != AdapterPostgreSQL || a.Files == nil || len(a.Files.Paths) != 2 || a.Expect == nil || a.Expect.MinFiles != 1000 {
		t.Errorf("uncommented blocks did not load into roadnotes: %+v %+v %+v", a.Database, a.Files, a.Expect)
	}
}

const minimal = `[site]
partition = "/v01/backup"

[[server]]
name = "zg-3.softxs.ch"

[[server]]
name = "zg-1.softxs.ch"
partition = "/v02/backup"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"

[[vm]]
name = "intern"
server = "zg-3.softxs.ch"

[[vm]]
name = "app"
server = "zg-1.softxs.ch"

[[app]]
name = "hydro"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "demo.softxs.ch/hydro"
type = "rails"

[[app]]
name = "www"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "www.softxs.ch"
type = "rails"
expect = { min_files = 10, warn_age = "1h" }

[[app]]
name = "mail"
server = "zg-3.softxs.ch"
relpath = "mail.softxs.ch"
type = "maildir"

[[app]]
name = "tracking"
server = "zg-3.softxs.ch"
vm = "intern"
relpath = "intern.softxs.ch/tracking"
type = "rails"

[[app]]
name = "other"
server = "zg-1.softxs.ch"
vm = "app"
relpath = "demo.softxs.ch/hydro"
type = "files"

[[backup_server]]
name = "odin.softxs.ch"
partition = "/v03/backup"
pulls = ["zg-3.softxs.ch", "zg-1.softxs.ch"]
`

func TestDefaults(t *testing.T) {
	inv, err := Parse("min.toml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if inv.File != "min.toml" {
		t.Errorf("File %q", inv.File)
	}
	st := inv.Site.Snapshot
	if st.Time.String() != "05:00" || st.Quiet.Duration != 15*time.Minute || st.Deadline.Duration != 2*time.Hour {
		t.Errorf("snapshot defaults: %v %v %v", st.Time, st.Quiet, st.Deadline)
	}
	if inv.Site.Retention != (Retention{7, 4, 6}) {
		t.Errorf("retention default %+v", inv.Site.Retention)
	}
	s, _ := inv.Server("zg-3.softxs.ch")
	if s.SSH != "root@zg-3.softxs.ch" || s.SSHPort != 22 || s.HostMount != "/srv/v2backup/_host" || s.RemoteView != "/v01/backup/view" {
		t.Errorf("server defaults: %+v", s)
	}
	s1, _ := inv.Server("zg-1.softxs.ch")
	if s1.RemoteView != "/v02/backup/view" {
		t.Errorf("remote view of a server with its own partition: %q", s1.RemoteView)
	}
	v, _ := inv.VM("zg-3.softxs.ch", "web")
	if v.Mount != "/srv/v2backup/web" || v.Socket != "/run/v2backup/web.sock" || v.Export != ExportFUSE || v.GuestDir != "/backup" {
		t.Errorf("vm defaults: %+v", v)
	}
	a, _ := inv.App("mail")
	if a.VM != tiers.NoVM || a.KeepDumps != 3 || a.Status != "open" {
		t.Errorf("app defaults: vm %q keep_dumps %d status %q", a.VM, a.KeepDumps, a.Status)
	}
	b, _ := inv.BackupServer("odin.softxs.ch")
	if b.Parallel != 1 {
		t.Errorf("parallel default %d", b.Parallel)
	}

	// What is set is kept.
	set := strings.Replace(minimal, "[[server]]\nname = \"zg-3.softxs.ch\"\n", `[[server]]
name = "zg-3.softxs.ch"
ssh = "backup@10.0.0.3"
ssh_port = 2222
host_mount = "/mnt/host"
remote_view = "/srv/view"
`, 1)
	set = strings.Replace(set, "[[vm]]\nname = \"web\"\nserver = \"zg-3.softxs.ch\"\n", `[[vm]]
name = "web"
server = "zg-3.softxs.ch"
mount = "/mnt/web"
socket = "/run/web.sock"
export = "both"
guest_dir = "/srv/backup"
`, 1)
	set = strings.Replace(set, "[site]\n", "[site]\nretention = { nightly = 1 }\nsnapshot = { time = \"04:15\", quiet = \"5m\", deadline = \"30m\" }\n", 1)
	inv, err = Parse("set.toml", []byte(set))
	if err != nil {
		t.Fatal(err)
	}
	s, _ = inv.Server("zg-3.softxs.ch")
	if s.SSH != "backup@10.0.0.3" || s.SSHPort != 2222 || s.HostMount != "/mnt/host" || s.RemoteView != "/srv/view" {
		t.Errorf("server settings lost: %+v", s)
	}
	v, _ = inv.VM("zg-3.softxs.ch", "web")
	if v.Mount != "/mnt/web" || v.Socket != "/run/web.sock" || v.Export != ExportBoth || v.GuestDir != "/srv/backup" {
		t.Errorf("vm settings lost: %+v", v)
	}
	st = inv.Site.Snapshot
	if st.Time.String() != "04:15" || st.Quiet.Duration != 5*time.Minute || st.Deadline.Duration != 30*time.Minute {
		t.Errorf("snapshot settings lost: %v %v %v", st.Time, st.Quiet, st.Deadline)
	}
	if inv.Site.Retention != (Retention{Nightly: 1}) {
		t.Errorf("a partial retention is kept as written: %+v", inv.Site.Retention)
	}
}

func TestAccessors(t *testing.T) {
	inv, err := Parse("min.toml", []byte(strings.Replace(minimal, "[site]\n", "[site]\nexpect = { min_files = 1, min_mb = 2.5, crit_age = \"50h\", warn_age = \"26h\" }\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	names := func(apps []App) []string {
		var out []string
		for _, a := range apps {
			out = append(out, a.Name)
		}
		return out
	}
	// Sorted by VM, then relpath: _host sorts before the VM names.
	if got, want := names(inv.AppsOn("zg-3.softxs.ch", "")), []string{"mail", "tracking", "hydro", "www"}; !reflect.DeepEqual(got, want) {
		t.Errorf("AppsOn(zg-3, all) = %v, want %v", got, want)
	}
	if got, want := names(inv.AppsOn("zg-3.softxs.ch", "web")), []string{"hydro", "www"}; !reflect.DeepEqual(got, want) {
		t.Errorf("AppsOn(zg-3, web) = %v, want %v", got, want)
	}
	if got, want := names(inv.AppsOn("zg-3.softxs.ch", tiers.NoVM)), []string{"mail"}; !reflect.DeepEqual(got, want) {
		t.Errorf("AppsOn(zg-3, _host) = %v, want %v", got, want)
	}
	if got := inv.AppsOn("odin.softxs.ch", ""); len(got) != 0 {
		t.Errorf("AppsOn(backup server) = %v", names(got))
	}
	var vms []tiers.VM
	for _, v := range inv.VMsOn("zg-3.softxs.ch") {
		vms = append(vms, v.Name)
	}
	if want := []tiers.VM{"intern", "web"}; !reflect.DeepEqual(vms, want) {
		t.Errorf("VMsOn(zg-3) = %v, want %v", vms, want)
	}
	if _, ok := inv.VM("zg-1.softxs.ch", "web"); ok {
		t.Error("VM(zg-1, web) found a VM of zg-3")
	}
	if v, ok := inv.VM("zg-1.softxs.ch", "app"); !ok || v.Server != "zg-1.softxs.ch" {
		t.Errorf("VM(zg-1, app) = %+v, %v", v, ok)
	}
	if _, ok := inv.App("nope"); ok {
		t.Error("App(nope) found something")
	}
	if a, ok := inv.App("other"); !ok || a.Server != "zg-1.softxs.ch" {
		t.Errorf("App(other) = %+v, %v", a, ok)
	}
	// App returns the inventory's own row, not a copy.
	a, _ := inv.App("hydro")
	a.Description = "changed"
	if b, _ := inv.App("hydro"); b.Description != "changed" {
		t.Error("App returned a copy")
	}
	if _, ok := inv.Server("odin.softxs.ch"); ok || inv.IsHost("odin.softxs.ch") || !inv.IsBackupServer("odin.softxs.ch") || inv.IsBackupServer("zg-3.softxs.ch") || !inv.IsHost("zg-3.softxs.ch") {
		t.Error("IsHost/IsBackupServer/Server confuse hosts and backup servers")
	}
	if _, ok := inv.BackupServer("zg-3.softxs.ch"); ok {
		t.Error("BackupServer(zg-3) found something")
	}
	for _, c := range []struct {
		name                   tiers.Server
		part, history, catalog string
	}{
		{"zg-3.softxs.ch", "/v01/backup", "/v01/backup/history", "/v01/backup/.v2backup/catalog.db"},
		{"zg-1.softxs.ch", "/v02/backup", "/v02/backup/history", "/v02/backup/.v2backup/catalog.db"},
		{"odin.softxs.ch", "/v03/backup", "/v03/backup/history", "/v03/backup/.v2backup/catalog.db"},
		{"unknown.softxs.ch", "/v01/backup", "/v01/backup/history", "/v01/backup/.v2backup/catalog.db"},
	} {
		if p := inv.Partition(c.name); string(p) != c.part {
			t.Errorf("Partition(%s) = %s, want %s", c.name, p, c.part)
		}
		if h := inv.HistoryDir(c.name); h != c.history {
			t.Errorf("HistoryDir(%s) = %s, want %s", c.name, h, c.history)
		}
		if h := inv.CatalogPath(c.name); h != c.catalog {
			t.Errorf("CatalogPath(%s) = %s, want %s", c.name, h, c.catalog)
		}
	}
	inv.Site.History, inv.Site.Catalog = "/var/lib/v2backup/history", "/var/lib/v2backup/catalog.db"
	if inv.HistoryDir("zg-1.softxs.ch") != inv.Site.History || inv.CatalogPath("zg-1.softxs.ch") != inv.Site.Catalog {
		t.Error("site history/catalog keys are not used")
	}
	if r := inv.RetentionOf("odin.softxs.ch"); r != inv.Site.Retention {
		t.Errorf("RetentionOf(odin) = %+v, want the site's", r)
	}
	inv.BackupServers[0].Retention = &Retention{Nightly: 30}
	if r := inv.RetentionOf("odin.softxs.ch"); r != (Retention{Nightly: 30}) {
		t.Errorf("RetentionOf(odin) = %+v, want its own", r)
	}

	site := inv.Site.Expect
	h, _ := inv.App("hydro")
	if e := inv.ExpectFor(h); e != site {
		t.Errorf("ExpectFor(hydro) = %+v, want the site's %+v", e, site)
	}
	w, _ := inv.App("www")
	want := site
	want.MinFiles, want.WarnAge = 10, Duration{time.Hour}
	if e := inv.ExpectFor(w); e != want {
		t.Errorf("ExpectFor(www) = %+v, want %+v", e, want)
	}
	w.Expect = &Expect{FinishedBy: Clock{Hour: 4, Set: true}, MinMB: 9, MaxChangePercent: 20, CritAge: Duration{time.Hour}}
	want = Expect{FinishedBy: Clock{Hour: 4, Set: true}, MinFiles: 1, MinMB: 9, MaxChangePercent: 20, WarnAge: Duration{26 * time.Hour}, CritAge: Duration{time.Hour}}
	if e := inv.ExpectFor(w); e != want {
		t.Errorf("ExpectFor(www) = %+v, want %+v", e, want)
	}
}

// TestManyErrors checks that one load reports every problem of a file, of
// every kind, in file order.
func TestManyErrors(t *testing.T) {
	doc := `[site]
partition = "v01"
colour = "blue"
[[server]]
name = "zg-3.softxs.ch"
[[app]]
name = "a"
server = "zg-3.softxs.ch"
relpath = "a.softxs.ch"
type = "rails"
keep_dumps = "x"
[[app]]
name = "b"
server = "zg-9.softxs.ch"
relpath = "b.softxs.ch"
type = "php"
schedule = "9am"
[[app]]
name = "c"
server = "zg-3.softxs.ch"
relpath = "a.softxs.ch/c"
type = "git"
`
	_, err := Parse("many.toml", []byte(doc))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v, want Errors", err)
	}
	want := []string{
		`many.toml:2:1: site.partition: invalid partition "v01": must be an absolute path`,
		`many.toml:3:1: site.colour: unknown key "colour"`,
		`many.toml:11:14: app[a].keep_dumps: wrong type`,
		`many.toml:14:1: app[b].server: server "zg-9.softxs.ch" is not declared`,
		`many.toml:16:1: app[b].type: unknown type "php"`,
		`many.toml:17:12: app[b].schedule: invalid time of day "9am"`,
		`many.toml:21:1: app[c].relpath: relpath "a.softxs.ch/c" lies inside "a.softxs.ch" of app[a] (line 6)`,
	}
	if len(es) != len(want) {
		t.Fatalf("%d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(es[i].Error(), w) {
			t.Errorf("error %d:\n got %s\nwant %s...", i, es[i], w)
		}
	}
	if !strings.Contains(err.Error(), "\n") || strings.Count(err.Error(), "\n") != len(want)-1 {
		t.Errorf("Errors.Error() is not one line per problem:\n%s", err)
	}
}

// TestTooManyErrors checks that a file that is all wrong stops at a bound.
func TestTooManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("[site]\npartition = \"/v01/backup\"\n[[server]]\nname = \"zg-3.softxs.ch\"\n")
	for i := 0; i < 150; i++ {
		fmt.Fprintf(&b, "[[app]]\nname = \"a%d\"\nserver = \"zg-9.softxs.ch\"\nrelpath = \"a.softxs.ch/%d\"\ntype = \"rails\"\n", i, i)
	}
	_, err := Parse("bad.toml", []byte(b.String()))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v, want Errors", err)
	}
	if len(es) != maxErrors+1 || es[maxErrors].Reason != "50 more problems not shown" {
		t.Errorf("%d errors, last %v; want %d and a note", len(es), es[len(es)-1], maxErrors+1)
	}

	// Values of the wrong type cost a decode each: those stop sooner.
	b.Reset()
	b.WriteString("[site]\npartition = \"/v01/backup\"\n")
	for i := 0; i < 50; i++ {
		b.WriteString("[[app]]\nkeep_dumps = \"x\"\n")
	}
	_, err = Parse("bad.toml", []byte(b.String()))
	if !errors.As(err, &es) {
		t.Fatalf("error %v, want Errors", err)
	}
	if len(es) != maxRedecodes+1 || !strings.Contains(es[maxRedecodes].Reason, "stopped after 20 values of the wrong type") {
		t.Errorf("%d errors, last %v; want %d and a note", len(es), es[len(es)-1], maxRedecodes+1)
	}
}

func TestLoadMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an error naming %s", err, p)
	}
}

func TestErrorString(t *testing.T) {
	for _, c := range []struct {
		e    Error
		want string
	}{
		{Error{File: "f.toml", Line: 3, Column: 7, Field: "app[hydro].relpath", Reason: "bad"}, "f.toml:3:7: app[hydro].relpath: bad"},
		{Error{File: "f.toml", Field: "site.partition", Reason: "required key is missing"}, "f.toml: site.partition: required key is missing"},
		{Error{File: "f.toml", Reason: "x"}, "f.toml: x"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestClock(t *testing.T) {
	var c Clock
	for _, bad := range []string{"", "5:00", "24:00", "12:60", "-1:00", "12:5", "ab:cd", "12:00:00"} {
		if err := c.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("Clock %q accepted", bad)
		}
	}
	if err := c.UnmarshalText([]byte("23:59")); err != nil || c.String() != "23:59" {
		t.Errorf("Clock 23:59: %v %v", c, err)
	}
	loc := time.FixedZone("CET", 3600)
	at := time.Date(2026, 11, 28, 23, 59, 0, 0, loc)
	if n := c.Next(at); !n.Equal(time.Date(2026, 11, 29, 23, 59, 0, 0, loc)) {
		t.Errorf("Next at the same instant = %v, want the next day", n)
	}
	if n := c.Next(at.Add(-time.Minute)); !n.Equal(at) {
		t.Errorf("Next a minute before = %v, want %v", n, at)
	}
	if (Clock{}).String() != "" {
		t.Error("an unset Clock prints something")
	}
	var d Duration
	if err := d.UnmarshalText([]byte("1h30m")); err != nil || d.Duration != 90*time.Minute {
		t.Errorf("Duration 1h30m: %v %v", d, err)
	}
	if b, _ := d.MarshalText(); string(b) != "1h30m0s" {
		t.Errorf("Duration marshals as %q", b)
	}
}
