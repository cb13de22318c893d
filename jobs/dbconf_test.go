package jobs

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

func writeFile(t *testing.T, p, s string) string {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRailsDatabaseYML(t *testing.T) {
	dir := t.TempDir()
	env := getenvWith("DB_PW", "s3cret", "DB_HOST", "db.internal")
	f := writeFile(t, filepath.Join(dir, "database.yml"), `default: &default
  adapter: mysql2
  username: hydro
  password: <%= ENV['DB_PW'] %>
  host: <%= ENV.fetch("DB_HOST", "localhost") %>
  port: 3307
production:
  <<: *default
  database: hydro_production
  socket: <%= ENV.fetch('DB_SOCKET') { '/run/mysqld/mysqld.sock' } %>
`)
	c, err := railsDatabase(f, env)
	if err != nil {
		t.Fatal(err)
	}
	want := conn{Database: inventory.Database{Adapter: AdapterMySQL, Name: "hydro_production", User: "hydro", Host: "db.internal", Port: 3307, Socket: "/run/mysqld/mysqld.sock"}, Password: "s3cret", From: f}
	if *c != want {
		t.Fatalf("got %+v\nwant %+v", *c, want)
	}
	// Inventory overrides, field by field; the password from a file.
	pw := writeFile(t, filepath.Join(dir, "pw"), "from-file\n")
	if err := c.override(&inventory.Database{Name: "other", PasswordFile: pw}, "inventory"); err != nil {
		t.Fatal(err)
	}
	if c.Name != "other" || c.Password != "from-file" || c.User != "hydro" || !strings.Contains(c.From, "and inventory") {
		t.Errorf("after override %+v", c)
	}
	if err := c.override(&inventory.Database{PasswordFile: filepath.Join(dir, "nope")}, "inventory"); err == nil || !strings.Contains(err.Error(), "inventory: password_file") {
		t.Errorf("missing password file: %v", err)
	}

	pg := writeFile(t, filepath.Join(dir, "pg.yml"), "production:\n  adapter: postgresql\n  database: x\n  host: /var/run/postgresql\n")
	if c, err := railsDatabase(pg, env); err != nil || c.Socket != "/var/run/postgresql" || c.Host != "" || c.Adapter != AdapterPostgres {
		t.Errorf("postgres socket host: %+v, %v", c, err)
	}

	for _, c := range []struct{ yml, want string }{
		{"development:\n  adapter: mysql2\n", "no production section"},
		{"production:\n  adapter: sqlite3\n  database: db/p.sqlite3\n", `production.adapter "sqlite3" is not supported`},
		{"production:\n  database: x\n", "production.adapter is missing"},
		{"production:\n  adapter: mysql2\n", "production.database is missing"},
		{"production:\n  adapter: mysql2\n  database: x\n  port: abc\n", `production.port "abc": not a number`},
		{"production:\n  adapter: mysql2\n  database: [a, b]\n", "production.database: want a string"},
		{"production:\n  url: <%= ENV['DATABASE_URL'] %>\n", "production.url is not supported"},
		{"production:\n  adapter: mysql2\n  database: <%= Rails.application.secrets.db %>\n", `database.yml:3: ERB expression "Rails.application.secrets.db" is not supported`},
		{"production:\n  <% if true %>\n  adapter: mysql2\n", "database.yml:2: ERB tag"},
		{"production:\n  adapter: mysql2\n  database: <%= ENV.fetch('NOPE') %>\n", "database.yml:3: ENV.fetch(\"NOPE\"): environment variable NOPE is not set"},
		{"production:\n  adapter: mysql2\n\tdatabase: x\n", "database.yml: yaml:"},
	} {
		f := writeFile(t, filepath.Join(dir, "database.yml"), c.yml)
		_, err := railsDatabase(f, env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.yml, err, c.want)
		}
	}
	if _, err := railsDatabase(filepath.Join(dir, "missing.yml"), env); err == nil {
		t.Error("missing file accepted")
	}
}

func TestConnValidate(t *testing.T) {
	for _, c := range []struct {
		c    conn
		want string
	}{
		{conn{Database: inventory.Database{Adapter: "oracle", Name: "x"}, From: "f"}, `f: adapter "oracle"`},
		{conn{Database: inventory.Database{Adapter: "mysql", Name: "x`; DROP"}, From: "f"}, "f: database name"},
		{conn{Database: inventory.Database{Adapter: "mysql", Name: ""}, From: "f"}, "f: database name"},
		{conn{Database: inventory.Database{Adapter: "postgresql", Name: "x", Port: 70000}, From: "f"}, "port 70000"},
	} {
		if err := c.c.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.c, err, c.want)
		}
	}
	c := conn{Database: inventory.Database{Adapter: "mysql", Name: "x", User: "u", Host: "h", Port: 3306}, From: "f"}
	if s := c.String(); s != `mysql database "x" as "u" on h:3306 (settings from f)` {
		t.Errorf("String() = %q", s)
	}
	if _, err := newCreds(&conn{Database: inventory.Database{Adapter: "oracle"}}); err == nil {
		t.Error("credentials for an unknown adapter")
	}
}

func TestWordPressConfig(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, filepath.Join(dir, "wp-config.php"), `<?php
/** The name of the database for WordPress
define('DB_NAME', 'wrong'); */
# define('DB_NAME', 'wrong2');
define( 'DB_NAME', 'wp_blog' );
define("DB_USER", "wp\"user");
define( 'DB_PASSWORD', 'it\'s \\ok' );
define( 'DB_HOST', '127.0.0.1:3307' );
`)
	c, err := wordpressDatabase(f)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "wp_blog" || c.User != `wp"user` || c.Password != `it's \ok` || c.Host != "127.0.0.1" || c.Port != 3307 || c.Adapter != AdapterMySQL {
		t.Errorf("got %+v", c)
	}
	for _, c := range []struct{ php, want string }{
		{"define('DB_NAME', 'a'); define('DB_USER', 'u'); define('DB_HOST', 'localhost:/run/my.sock');", ""},
		{"define('DB_NAME', 'a'); define('DB_USER', 'u');", "no define('DB_HOST', ...)"},
		{"define('DB_NAME', getenv('X')); define('DB_USER', 'u'); define('DB_HOST', 'h');", "wp-config.php:1: DB_NAME is set by the PHP expression \"getenv('X')\""},
		{"define('DB_NAME', 'a'); define('DB_USER', 'u'); define('DB_HOST', 'h:port');", `DB_HOST "h:port"`},
	} {
		writeFile(t, f, c.php)
		got, err := wordpressDatabase(f)
		if c.want == "" {
			if err != nil || got.Socket != "/run/my.sock" || got.Host != "localhost" {
				t.Errorf("%s: %+v, %v", c.php, got, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.php, err, c.want)
		}
	}
}

func TestInside(t *testing.T) {
	dir := t.TempDir()
	out := t.TempDir()
	writeFile(t, filepath.Join(out, "secret.yml"), "x")
	symlink(t, filepath.Join(out, "secret.yml"), filepath.Join(dir, "config/database.yml"))
	if _, err := inside(dir, filepath.Join(dir, "config/database.yml")); err == nil || !strings.Contains(err.Error(), "outside "+dir) {
		t.Errorf("link out of the tree: %v", err)
	}
}

func gz(t *testing.T, p, s string) string {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return writeFile(t, p, b.String())
}

func TestVerifyDump(t *testing.T) {
	dir := t.TempDir()
	mysql := "-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n\nCREATE TABLE t (x int);\n" + strings.Repeat("INSERT INTO t VALUES (1);\n", 1000) + "-- Dump completed on 2026-11-29  2:00:01\n"
	pg := "--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE t (x int);\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n\n"
	if n, kind, err := VerifyDump(gz(t, filepath.Join(dir, "m.sql.gz"), mysql), ""); err != nil || kind != AdapterMySQL || n != int64(len(mysql)) {
		t.Errorf("mysql dump: %d %s %v", n, kind, err)
	}
	if _, kind, err := VerifyDump(gz(t, filepath.Join(dir, "p.sql.gz"), pg), AdapterPostgres); err != nil || kind != AdapterPostgres {
		t.Errorf("pg dump: %s %v", kind, err)
	}
	full := gz(t, filepath.Join(dir, "full.sql.gz"), mysql)
	b, _ := os.ReadFile(full)
	trunc := writeFile(t, filepath.Join(dir, "trunc.sql.gz"), string(b[:len(b)-20]))
	flip := append([]byte{}, b...)
	flip[len(flip)/2] ^= 0xff
	corrupt := writeFile(t, filepath.Join(dir, "corrupt.sql.gz"), string(flip))
	for _, c := range []struct{ path, adapter, want string }{
		{trunc, "", "compressed stream damaged"},
		{corrupt, "", "dump " + corrupt},
		{writeFile(t, filepath.Join(dir, "plain.sql.gz"), mysql), "", "not a gzip stream"},
		{gz(t, filepath.Join(dir, "cut.sql.gz"), mysql[:len(mysql)-50]), "", `does not end with "-- Dump completed": the dump was cut short`},
		{gz(t, filepath.Join(dir, "cutpg.sql.gz"), pg[:40]), "", `does not end with "-- PostgreSQL database dump complete"`},
		{gz(t, filepath.Join(dir, "junk.sql.gz"), "hello"), "", "no MariaDB/MySQL or PostgreSQL dump header"},
		{full, AdapterPostgres, "a mysql dump, want postgresql"},
		{filepath.Join(dir, "missing.sql.gz"), "", "no such file"},
	} {
		if _, _, err := VerifyDump(c.path, c.adapter); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", filepath.Base(c.path), err, c.want)
		}
	}
}

func TestPruneAndNewestDump(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"app-2026-11-27T020000.sql.gz", "app-2026-11-28T020000.sql.gz", "app-2026-11-29T020000.sql.gz",
		"app-test-2026-11-20T020000.sql.gz", ".tmp-app-2026-11-30T020000.sql.gz", "app-notes.txt"} {
		writeFile(t, filepath.Join(dir, n), "x")
	}
	removed, err := pruneDumps(dir, "app", 2)
	if err != nil || strings.Join(removed, ",") != "app-2026-11-27T020000.sql.gz" {
		t.Errorf("pruned %v, %v", removed, err)
	}
	if removed, err := pruneDumps(dir, "app", 5); err != nil || removed != nil {
		t.Errorf("prune under the limit: %v %v", removed, err)
	}
	if n, err := NewestDump(dir); err != nil || filepath.Base(n) != "app-2026-11-29T020000.sql.gz" {
		t.Errorf("newest %s %v", n, err)
	}
	if _, err := NewestDump(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no database dump") {
		t.Errorf("newest in an empty dir: %v", err)
	}
	if _, err := pruneDumps(filepath.Join(dir, "nope"), "app", 1); err == nil {
		t.Error("prune of a missing directory")
	}
}

func TestSelectAndTarget(t *testing.T) {
	inv := &inventory.Inventory{File: "inv.toml",
		Servers: []inventory.Server{{Name: "zg-1.softxs.ch", HostMount: "/srv/host"}},
		VMs:     []inventory.VM{{Name: "web", Server: "zg-3.softxs.ch", GuestDir: "/mnt/backup"}, {Name: "intern", Server: "zg-3.softxs.ch"}},
		Apps: []inventory.App{
			{Name: "www", Server: "zg-3.softxs.ch", VM: "web", Relpath: "www.softxs.ch"},
			{Name: "hydro", Server: "zg-3.softxs.ch", VM: "web", Relpath: "demo.softxs.ch/hydro"},
			{Name: "tracking", Server: "zg-3.softxs.ch", VM: "intern", Relpath: "intern.softxs.ch/tracking"},
			{Name: "cardenillo", Server: "zg-1.softxs.ch", Relpath: "cardenillo.softxs.ch"},
		}}
	names := func(as []*inventory.App) string {
		var s []string
		for _, a := range as {
			s = append(s, a.Name)
		}
		return strings.Join(s, ",")
	}
	if as, err := Select(inv, "zg-3.softxs.ch", "web", nil, true); err != nil || names(as) != "www,hydro" {
		t.Errorf("all on web: %s %v", names(as), err)
	}
	if as, err := Select(inv, "zg-1.softxs.ch", tiers.NoVM, nil, true); err != nil || names(as) != "cardenillo" {
		t.Errorf("all on the host: %s %v", names(as), err)
	}
	if as, err := Select(inv, "zg-3.softxs.ch", "web", []string{"hydro"}, false); err != nil || names(as) != "hydro" {
		t.Errorf("hydro: %s %v", names(as), err)
	}
	for _, c := range []struct {
		server tiers.Server
		vm     tiers.VM
		names  []string
		all    bool
		want   string
	}{
		{"zg-3.softxs.ch", "web", []string{"nope"}, false, `inv.toml: no application "nope"`},
		{"zg-3.softxs.ch", "web", []string{"tracking"}, false, `application "tracking" runs on server zg-3.softxs.ch, vm intern, not here (server zg-3.softxs.ch, vm web)`},
		{"zg-3.softxs.ch", "web", nil, false, "name at least one application"},
		{"zg-3.softxs.ch", "web", []string{"www"}, true, "not both"},
		{"zg-9.softxs.ch", "web", nil, true, "no applications on server zg-9.softxs.ch, vm web"},
	} {
		if _, err := Select(inv, c.server, c.vm, c.names, c.all); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c, err, c.want)
		}
	}
	for i, want := range []string{"/mnt/backup", "/mnt/backup", DefaultGuestDir, "/srv/host"} {
		if got := TargetDir(inv, &inv.Apps[i]); got != want {
			t.Errorf("target of %s = %s, want %s", inv.Apps[i].Name, got, want)
		}
	}
	inv.Servers = nil
	if got := TargetDir(inv, &inv.Apps[3]); got != DefaultHostMount {
		t.Errorf("default host mount %s", got)
	}
}

func TestCapistranoDir(t *testing.T) {
	root := t.TempDir()
	if _, err := CapistranoDir(filepath.Join(root, "x")); err == nil || !strings.Contains(err.Error(), "no Capistrano layout (releases/ and current) in "+filepath.Join(root, "x")+" or "+filepath.Join(root, "x-app")) {
		t.Errorf("no layout: %v", err)
	}
	os.MkdirAll(filepath.Join(root, "x/releases/1"), 0o755)
	os.Symlink("releases/1", filepath.Join(root, "x/current"))
	if d, err := CapistranoDir(filepath.Join(root, "x")); err != nil || d != filepath.Join(root, "x") {
		t.Errorf("direct layout: %s %v", d, err)
	}
}

func TestRestoreErrors(t *testing.T) {
	root := t.TempDir()
	app := &inventory.App{Name: "a", Type: inventory.TypeDrawMGT, Relpath: "a.softxs.ch"}
	src := filepath.Join(root, "src")
	writeFile(t, filepath.Join(src, "var/x"), "x")
	for _, c := range []struct {
		o    RestoreOptions
		want string
	}{
		{RestoreOptions{Dest: root}, "a: restore: start: need a source and a destination"},
		{RestoreOptions{Source: filepath.Join(root, "nope"), Dest: filepath.Join(root, "d")}, "source directory " + filepath.Join(root, "nope") + ": no such file"},
		{RestoreOptions{Source: src, Dest: filepath.Join(root, "d1"), Database: "x"}, "a: restore: find database settings: no database settings"},
		{RestoreOptions{Source: src, Dest: filepath.Join(root, "d2"), Database: "x", Conn: &inventory.Database{Adapter: "mysql"}}, "a: restore: find database dump: open " + filepath.Join(src, "db")},
		{RestoreOptions{Source: src, Dest: filepath.Join(root, "d3"), Database: "bad name", Conn: &inventory.Database{Adapter: "mysql"}}, `database name "bad name"`},
	} {
		if _, err := Restore(t.Context(), app, c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.o, err, c.want)
		}
	}
	g := &inventory.App{Name: "g", Type: inventory.TypeGit, Relpath: "g.softxs.ch"}
	if _, err := Restore(t.Context(), g, RestoreOptions{Source: src, Dest: filepath.Join(root, "d4")}); err == nil || !strings.Contains(err.Error(), "g: restore: recreate git repositories: "+filepath.Join(src, "git")+": no git bundles") {
		t.Errorf("git restore without bundles: %v", err)
	}
}

func TestProgress(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "w/data/pages/A/current"), "1")
	var b bytes.Buffer
	app := &inventory.App{Name: "w", Type: inventory.TypeMoinMoin, Path: filepath.Join(root, "w"), Relpath: "w.softxs.ch"}
	if _, err := Backup(t.Context(), app, Options{Target: filepath.Join(root, "b"), Progress: &b}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "w: copy data\n") || !strings.Contains(b.String(), "w: ok, 1 files") {
		t.Errorf("progress output %q", b.String())
	}
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	if IsTerminal(f) || ProgressTo(f) != nil {
		t.Error("/dev/null is a terminal")
	}
}

// TestCredentials: the password goes into a 0600 file in a private
// directory, never into arguments, and the file is gone after close.
func TestCredentials(t *testing.T) {
	for _, adapter := range []string{AdapterMySQL, AdapterPostgres} {
		c := &conn{Database: inventory.Database{Adapter: adapter, Name: "db", User: "u", Socket: "/run/s", Port: 3307}, Password: trickyPassword}
		cr, err := newCreds(c)
		if err != nil {
			t.Fatal(err)
		}
		prog, args, env, err := dumpCommand(c, cr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(strings.Join(append(args, prog), " "), "p@ss") || strings.Contains(strings.Join(env, " "), "p@ss") {
			t.Errorf("%s: password in arguments %q or environment %q", adapter, args, env)
		}
		ents, _ := os.ReadDir(cr.dir)
		di, _ := os.Stat(cr.dir)
		if len(ents) != 1 || di.Mode().Perm() != 0o700 {
			t.Fatalf("%s: credentials dir %v mode %v", adapter, ents, di.Mode())
		}
		f := filepath.Join(cr.dir, ents[0].Name())
		fi, _ := os.Stat(f)
		b, _ := os.ReadFile(f)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %s mode %v", adapter, f, fi.Mode())
		}
		want := `password="p@ss \"w\\rd' #x;$HOME"`
		if adapter == AdapterPostgres {
			want = `*:*:*:*:p@ss "w\\rd' #x;$HOME`
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("%s: credentials file %q lacks %q", adapter, b, want)
		}
		cr.close()
		if _, err := os.Stat(cr.dir); !os.IsNotExist(err) {
			t.Errorf("%s: credentials left behind: %v", adapter, err)
		}
	}
}
