package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/softxs/v2backup/jobs/dbtest"
	"github.com/softxs/v2backup/jobs/runfile"
	"github.com/softxs/v2backup/tiers/inventory"
)

// A password that needs quoting in an option file and would be a shell
// hazard on a command line.
const trickyPassword = `p@ss "w\rd' #x;$HOME`

// railsPassword is tricky too, but survives ERB's raw substitution into
// YAML (as it must in Rails itself: no " #" and no leading quote).
const railsPassword = `p@ss "w\rd;$HOME`

func mysqlEsc(s string) string { return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) }

// seedMariaDB creates database db with a user able to manage db_* and
// some rows, including binary and UTF-8 data.
func seedMariaDB(t *testing.T, m *dbtest.MariaDB, db, user, password string) {
	t.Helper()
	_, err := m.SQL(`CREATE DATABASE ` + db + `;
CREATE USER '` + user + `'@'localhost' IDENTIFIED BY '` + mysqlEsc(password) + `';
GRANT ALL ON ` + "`" + db + `%` + "`" + `.* TO '` + user + `'@'localhost';
CREATE TABLE ` + db + `.documents (id INT PRIMARY KEY AUTO_INCREMENT, title VARCHAR(200), body BLOB) DEFAULT CHARSET=utf8mb4;
INSERT INTO ` + db + `.documents (title, body) VALUES ('Zürich plan', UNHEX('00FF10')), ('Größe ✓', 'text'), ('third', NULL);
CREATE TABLE ` + db + `.schema_migrations (version VARCHAR(20) PRIMARY KEY);
INSERT INTO ` + db + `.schema_migrations VALUES ('20260101000000'), ('20260102000000');`)
	if err != nil {
		t.Fatal(err)
	}
}

// dumpMariaDB is a root dump of db for comparisons.
func dumpMariaDB(t *testing.T, m *dbtest.MariaDB, db string) string {
	t.Helper()
	out, err := exec.Command("mariadb-dump", "--no-defaults", "--socket="+m.Socket, "-uroot", "--skip-dump-date", db).Output()
	if err != nil {
		t.Fatalf("dumping %s: %v", db, err)
	}
	return normalizeDump(string(out))
}

// railsApp builds a Capistrano tree under root/{name}-app with the data
// directory on "the HD" (root/hd/...), and returns the inventory path
// root/{name} (as the seed lists it) and the HD var directory.
func railsApp(t *testing.T, root, name, databaseYML string) (path, hdVar string) {
	t.Helper()
	app := filepath.Join(root, name+"-app")
	hdVar = filepath.Join(root, "hd", "rails", "data", name, "var")
	writeFiles(t, app, map[string]string{
		"releases/20260101000000/app/models/document.rb":   "class Document; end\n",
		"releases/20260101000000/config/environment.rb":    "# old\n",
		"releases/20260102000000/app/models/document.rb":   "class Document < ApplicationRecord; end\n",
		"releases/20260102000000/config/environment.rb":    "# new\n",
		"releases/20260102000000/REVISION":                 "abc123\n",
		"shared/config/database.yml":                       databaseYML,
		"shared/log/production.log":                        "noise\n",
		"shared/pids/puma.pid":                             "1234\n",
		"shared/tmp/pids/server.pid":                       "99\n",
		"shared/bundle/ruby/3.2.0/gems/rails/lib/rails.rb": "module Rails; end\n",
		"shared/public/assets/app.css":                     "body{}\n",
		"shared/backup/pre-update.sql":                     "-- manual\n",
		"shared/delayed_job.log":                           "log\n",
	})
	for _, rel := range []string{"20260101000000", "20260102000000"} {
		symlink(t, filepath.Join(app, "shared/config/database.yml"), filepath.Join(app, "releases", rel, "config/database.yml"))
	}
	symlink(t, filepath.Join(app, "releases/20260102000000"), filepath.Join(app, "current"))
	writeFiles(t, hdVar, map[string]string{
		"file_assets/0001/drawing.pdf": "%PDF-1.4 drawing\n",
		"file_assets/0002/photo.jpg":   "\xff\xd8\xff jpeg",
		"thumbnails/0001.png":          "png",
	})
	// A link inside the data directory stays a link (followed only once, at the top).
	symlink(t, "file_assets/0001/drawing.pdf", filepath.Join(hdVar, "latest.pdf"))
	symlink(t, hdVar, filepath.Join(app, "shared/var"))
	symlink(t, filepath.Join(app, "current/public"), filepath.Join(root, name))
	return filepath.Join(root, name), hdVar
}

func mysqlDatabaseYML(m *dbtest.MariaDB, db, user string) string {
	return `default: &default
  adapter: mysql2
  encoding: utf8mb4
  pool: 5
  username: ` + user + `
  password: <%= ENV['HYDRO_DB_PASSWORD'] %>
  socket: ` + m.Socket + `

development:
  <<: *default
  database: ` + db + `_dev

production:
  <<: *default
  database: ` + db + `
`
}

func getenvWith(kv ...string) func(string) string {
	return func(k string) string {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == k {
				return kv[i+1]
			}
		}
		return ""
	}
}

func needServers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real database servers")
	}
}

// TestMariaDBApps runs the database applications (rails, wordpress,
// drawmgt) against a real MariaDB server, then their failures.
func TestMariaDBApps(t *testing.T) {
	needServers(t)
	m := dbtest.MariaDBT(t)
	ctx := context.Background()

	t.Run("rails", func(t *testing.T) {
		seedMariaDB(t, m, "hydro", "hydro", railsPassword)
		root := t.TempDir()
		path, hdVar := railsApp(t, root, "hydro", mysqlDatabaseYML(m, "hydro", "hydro"))
		app := &inventory.App{Name: "hydro", Type: inventory.TypeRails, Path: path, Relpath: "demo.softxs.ch/hydro", KeepDumps: 2}
		target := filepath.Join(root, "backup")
		o := Options{Target: target, Now: clock(), Getenv: getenvWith("HYDRO_DB_PASSWORD", railsPassword)}
		var res *Result
		dir := filepath.Join(target, "demo.softxs.ch/hydro")
		for i := 0; i < 3; i++ {
			var err error
			if res, err = Backup(ctx, app, o); err != nil {
				t.Fatal(err)
			}
			if i < 2 {
				// A crashed run's temporary dump is cleared by the next one.
				os.WriteFile(filepath.Join(dir, "db/.tmp-hydro-crashed.sql.gz"), []byte("half"), 0o600)
			}
		}
		rec := readRun(t, dir)
		if rec.Status != runfile.OK || rec.Files == 0 || rec.Bytes == 0 || rec.Files != res.Record.Files {
			t.Fatalf("run file %+v, result %+v", rec, res.Record)
		}
		if rec.Tools["rsync"] == "" || rec.Tools["gzip"] == "" || !strings.Contains(rec.Tools["mariadb-dump"], "mariadb-dump") {
			t.Errorf("tool versions %v", rec.Tools)
		}
		if !strings.Contains(strings.Join(rec.Checks, "\n"), "completion line present") {
			t.Errorf("checks %q: no dump check", rec.Checks)
		}
		dumps, _ := filepath.Glob(filepath.Join(dir, "db", "*.sql.gz"))
		if len(dumps) != 2 || filepath.Base(dumps[1]) != "hydro-"+res.Record.Start.Format(DumpStamp)+".sql.gz" {
			t.Fatalf("dumps after three runs with keep_dumps=2: %v", dumps)
		}
		got := tree(t, dir, nil)
		for _, gone := range []string{"shared/log", "shared/pids", "shared/tmp/pids", "shared/delayed_job.log"} {
			if _, ok := got[gone]; ok {
				t.Errorf("%s was copied", gone)
			}
		}
		if got["shared/var"] != "dir -rwxr-xr-x" || got["shared/var/latest.pdf"] != "link file_assets/0001/drawing.pdf" {
			t.Errorf("shared/var = %q, shared/var/latest.pdf = %q: want the HD directory followed once", got["shared/var"], got["shared/var/latest.pdf"])
		}
		// Capistrano's absolute links are recorded, not created (a VM's
		// mount refuses links out of its tree).
		links, err := readLinks(dir)
		if err != nil {
			t.Fatal(err)
		}
		app1 := filepath.Join(root, "hydro-app")
		wantLinks := []Link{{"current", filepath.Join(app1, "releases/20260102000000")},
			{"releases/20260101000000/config/database.yml", filepath.Join(app1, "shared/config/database.yml")},
			{"releases/20260102000000/config/database.yml", filepath.Join(app1, "shared/config/database.yml")}}
		if fmt.Sprint(links) != fmt.Sprint(wantLinks) {
			t.Errorf("recorded links %v, want %v", links, wantLinks)
		}
		if _, ok := got["current"]; ok {
			t.Errorf("current copied as %s", got["current"])
		}
		noTemps(t, dir)

		// Restore as a duplicate, database included.
		dest := filepath.Join(root, "restored")
		rr, err := Restore(ctx, app, RestoreOptions{Source: dir, Dest: dest, Database: "hydro_copy",
			Getenv: getenvWith("HYDRO_DB_PASSWORD", railsPassword)})
		if err != nil {
			t.Fatal(err)
		}
		if rr.Database != "hydro_copy" || rr.Dump != dumps[1] {
			t.Errorf("restore result %+v", rr)
		}
		if l, _ := os.Readlink(filepath.Join(dest, "current")); l != "releases/20260102000000" {
			t.Errorf("restored current -> %q, want releases/20260102000000", l)
		}
		for _, r := range []string{"20260101000000", "20260102000000"} {
			l, _ := os.Readlink(filepath.Join(dest, "releases", r, "config/database.yml"))
			if l != "../../../shared/config/database.yml" {
				t.Errorf("restored release %s: config/database.yml -> %q, want ../../../shared/config/database.yml", r, l)
			}
		}
		app2 := filepath.Join(root, "hydro-app")
		isLink := under("current", "releases/20260101000000/config/database.yml", "releases/20260102000000/config/database.yml")
		skip := func(rel string) bool {
			return isLink(rel) || under("shared/log", "shared/pids", "shared/tmp/pids", "shared/delayed_job.log", "shared/var")(rel)
		}
		sameTree(t, "restored application", tree(t, app2, skip), tree(t, dest, func(rel string) bool { return isLink(rel) || under("db", "shared/var")(rel) }))
		sameTree(t, "restored data directory", tree(t, hdVar, nil), tree(t, filepath.Join(dest, "shared/var"), nil))
		if want, got := dumpMariaDB(t, m, "hydro"), dumpMariaDB(t, m, "hydro_copy"); want != got {
			t.Errorf("restored database differs:\n--- original\n%s\n--- restored\n%s", want, got)
		}
		// A second restore into the same places is refused.
		if _, err := Restore(ctx, app, RestoreOptions{Source: dir, Dest: dest}); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Errorf("restore into a non-empty directory: %v", err)
		}
		if _, err := Restore(ctx, app, RestoreOptions{Source: dir, Dest: filepath.Join(root, "r2"), Database: "hydro_copy",
			Getenv: getenvWith("HYDRO_DB_PASSWORD", railsPassword)}); err == nil || !strings.Contains(err.Error(), "already has 2 tables") {
			t.Errorf("restore into a database with tables: %v", err)
		}
	})

	t.Run("wordpress", func(t *testing.T) {
		seedMariaDB(t, m, "blog", "blog", trickyPassword)
		root := t.TempDir()
		wp := filepath.Join(root, "wp")
		writeFiles(t, wp, map[string]string{
			"wp-config.php": `<?php
/* define('DB_NAME', 'commented_out'); */
// define('DB_USER', 'nobody');
define( 'DB_NAME', 'blog' );
define( 'DB_USER', "blog" );
define( 'DB_PASSWORD', '` + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(trickyPassword) + `' );
define( 'DB_HOST', 'localhost:` + m.Socket + `' );
$table_prefix = 'wp_';
require_once ABSPATH . 'wp-settings.php';
`,
			"wp-content/uploads/2026/11/plan.pdf": "pdf",
			"wp-content/themes/softxs/style.css":  "css",
			"wp-content/cache/page.html":          "cached",
			"wp-includes/version.php":             "<?php $wp_version = '6.7';",
		})
		app := &inventory.App{Name: "blog", Type: inventory.TypeWordPress, Path: wp, Relpath: "www.softxs.ch/blog"}
		target := filepath.Join(root, "backup")
		if _, err := Backup(ctx, app, Options{Target: target, Now: clock()}); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(target, "www.softxs.ch/blog")
		if _, err := os.Stat(filepath.Join(dir, "wp-content/cache")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("wp-content/cache copied: %v", err)
		}
		dest := filepath.Join(root, "restored")
		if _, err := Restore(ctx, app, RestoreOptions{Source: dir, Dest: dest, Database: "blog_copy"}); err != nil {
			t.Fatal(err)
		}
		sameTree(t, "restored wordpress", tree(t, wp, under("wp-includes", "wp-content/cache")), tree(t, dest, under("db")))
		if want, got := dumpMariaDB(t, m, "blog"), dumpMariaDB(t, m, "blog_copy"); want != got {
			t.Errorf("restored database differs:\n%s\n---\n%s", want, got)
		}
	})

	t.Run("drawmgt", func(t *testing.T) {
		seedMariaDB(t, m, "cardenillo", "cardenillo", trickyPassword)
		root := t.TempDir()
		varDir := filepath.Join(root, "home/cardenillo/html/prod/var")
		writeFiles(t, varDir, map[string]string{"docs/A-001.dwg": "dwg", "docs/A-002.pdf": "pdf", "config.ini": "x=1"})
		pwFile := filepath.Join(root, "pw")
		os.WriteFile(pwFile, []byte(trickyPassword+"\n"), 0o600)
		app := &inventory.App{Name: "cardenillo", Type: inventory.TypeDrawMGT, Path: varDir, Relpath: "cardenillo.softxs.ch",
			Database: &inventory.Database{Adapter: "mysql", Name: "cardenillo", User: "cardenillo", Socket: m.Socket, PasswordFile: pwFile}}
		target := filepath.Join(root, "backup")
		if _, err := Backup(ctx, app, Options{Target: target, Now: clock()}); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(target, "cardenillo.softxs.ch")
		dest := filepath.Join(root, "restored")
		if _, err := Restore(ctx, app, RestoreOptions{Source: dir, Dest: dest, Database: "cardenillo_copy"}); err != nil {
			t.Fatal(err)
		}
		sameTree(t, "restored var", tree(t, varDir, nil), tree(t, filepath.Join(dest, "var"), nil))
		if want, got := dumpMariaDB(t, m, "cardenillo"), dumpMariaDB(t, m, "cardenillo_copy"); want != got {
			t.Errorf("restored database differs")
		}
		// No database in the inventory: a clear error.
		bad := *app
		bad.Database = nil
		_, err := Backup(ctx, &bad, Options{Target: target})
		if err == nil || !strings.Contains(err.Error(), "cardenillo: find application: drawmgt needs [app.database]") {
			t.Errorf("drawmgt without a database: %v", err)
		}
	})

	t.Run("failures", func(t *testing.T) {
		seedMariaDB(t, m, "track", "track", railsPassword)
		root := t.TempDir()
		path, hdVar := railsApp(t, root, "track", mysqlDatabaseYML(m, "track", "track"))
		app := &inventory.App{Name: "track", Type: inventory.TypeRails, Path: path, Relpath: "intern.softxs.ch/tracking"}
		target := filepath.Join(root, "backup")
		now := clock()
		good := Options{Target: target, Now: now, Getenv: getenvWith("HYDRO_DB_PASSWORD", railsPassword)}
		if _, err := Backup(ctx, app, good); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(target, "intern.softxs.ch/tracking")
		before := tree(t, dir, under(runfile.Name))

		expectFailure := func(t *testing.T, o Options, step string, causes ...string) {
			t.Helper()
			res, err := Backup(ctx, app, o)
			var je *Error
			if !errors.As(err, &je) || je.App != "track" || je.Step != step {
				t.Fatalf("error %v: want app track, step %q", err, step)
			}
			for _, c := range causes {
				if !strings.Contains(err.Error(), c) {
					t.Errorf("error %q does not say %q", err, c)
				}
			}
			rec := readRun(t, dir)
			if rec.Status != runfile.Failed || rec.Step != step || rec.Error == "" || res.Record.Status != runfile.Failed {
				t.Errorf("run file after failure: %+v", rec)
			}
			kept(t, before, tree(t, dir, under(runfile.Name)))
			noTemps(t, dir)
		}

		t.Run("bad keep_dumps", func(t *testing.T) {
			bad := *app
			bad.KeepDumps = -1
			_, err := Backup(ctx, &bad, good)
			if err == nil || !strings.Contains(err.Error(), "track: dump database track: app track: keep_dumps -1: must be at least 1") {
				t.Fatalf("keep_dumps -1: %v", err)
			}
			kept(t, before, tree(t, dir, under(runfile.Name)))
		})
		t.Run("wrong password", func(t *testing.T) {
			o := good
			o.Getenv = getenvWith("HYDRO_DB_PASSWORD", "wrong")
			expectFailure(t, o, "dump database track", "Access denied", `"track"`)
		})
		t.Run("unset environment variable", func(t *testing.T) {
			yml := filepath.Join(root, "track-app/shared/config/database.yml")
			orig, _ := os.ReadFile(yml)
			os.WriteFile(yml, []byte(strings.Replace(string(orig), "ENV['HYDRO_DB_PASSWORD']", "ENV.fetch('TRACK_PW')", 1)), 0o644)
			defer os.WriteFile(yml, orig, 0o644)
			expectFailure(t, good, "find application", "database.yml:6", "TRACK_PW is not set")
		})
		t.Run("disappearing source directory", func(t *testing.T) {
			moved := hdVar + ".moved"
			if err := os.Rename(hdVar, moved); err != nil {
				t.Fatal(err)
			}
			defer os.Rename(moved, hdVar)
			expectFailure(t, good, "copy shared/var", "shared/var", "no such file or directory", "is a symlink to "+hdVar)
		})
		t.Run("database down", func(t *testing.T) {
			m2 := dbtest.MariaDBT(t)
			seedMariaDB(t, m2, "track", "track", railsPassword)
			yml := filepath.Join(root, "track-app/shared/config/database.yml")
			orig, _ := os.ReadFile(yml)
			os.WriteFile(yml, []byte(strings.ReplaceAll(string(orig), m.Socket, m2.Socket)), 0o644)
			defer os.WriteFile(yml, orig, 0o644)
			m2.Kill()
			expectFailure(t, good, "dump database track", "Can't connect", m2.Socket)
		})
	})
}

// kept fails unless every entry of before is unchanged in after; the only
// new entries allowed are verified dumps of the failed run.
func kept(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: was %s, now %q", k, v, after[k])
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok && !strings.HasPrefix(k, "db/") {
			t.Errorf("%s: new %s", k, v)
		}
	}
}

// TestFullTarget fills a small tmpfs: the dump, then the file copy fail;
// each leaves the previous backup as it was.
func TestFullTarget(t *testing.T) {
	needServers(t)
	if os.Geteuid() != 0 {
		t.Fatal("mounting a tmpfs needs root")
	}
	m := dbtest.MariaDBT(t)
	ctx := context.Background()
	seedMariaDB(t, m, "full", "full", railsPassword)
	root := t.TempDir()
	target := filepath.Join(root, "backup")
	os.MkdirAll(target, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "v2backup-test", target).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", target).Run() })
	path, hdVar := railsApp(t, root, "full", mysqlDatabaseYML(m, "full", "full"))
	app := &inventory.App{Name: "full", Type: inventory.TypeRails, Path: path, Relpath: "full.softxs.ch"}
	o := Options{Target: target, Now: clock(), Getenv: getenvWith("HYDRO_DB_PASSWORD", railsPassword)}
	if _, err := Backup(ctx, app, o); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(target, "full.softxs.ch")
	before := tree(t, dir, under(runfile.Name))
	check := func(step, cause string) {
		t.Helper()
		_, err := Backup(ctx, app, o)
		var je *Error
		if !errors.As(err, &je) || je.Step != step || !strings.Contains(err.Error(), cause) {
			t.Fatalf("error %v: want step %q, cause %q", err, step, cause)
		}
		if rec := readRun(t, dir); rec.Status != runfile.Failed || rec.Step != step {
			t.Errorf("run file %+v", rec)
		}
		sameTree(t, "backup on a full disk", before, tree(t, dir, under(runfile.Name)))
		noTemps(t, dir)
	}
	// 2 MB of random bytes do not compress: the dump does not fit.
	noise := make([]byte, 2<<20)
	rand.Read(noise)
	if _, err := m.SQL("SET GLOBAL max_allowed_packet=67108864; CREATE TABLE full.noise (b LONGBLOB); INSERT INTO full.noise VALUES (UNHEX('" + hex.EncodeToString(noise) + "'));"); err != nil {
		t.Fatal(err)
	}
	check("dump database full", "No space left on device")
	if _, err := m.SQL("DROP TABLE full.noise;"); err != nil {
		t.Fatal(err)
	}
	// The database fits again; a big new file in the data directory does not.
	os.WriteFile(filepath.Join(hdVar, "file_assets/big.bin"), noise, 0o644)
	_, err := Backup(ctx, app, o)
	var je *Error
	if !errors.As(err, &je) || je.Step != "copy shared/var" || !strings.Contains(err.Error(), "No space left on device") {
		t.Fatalf("error %v: want copy shared/var: No space left on device", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "shared/var/file_assets/0001/drawing.pdf")); err != nil {
		t.Errorf("previous copy damaged: %v", err)
	}
	noTemps(t, dir)
}
