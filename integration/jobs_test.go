package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/jobs/dbtest"
)

// dumpNoise is what differs between two dumps of equal data: comments
// (host, dates, database name) and psql's restrict keys.
var dumpNoise = regexp.MustCompile(`(?m)^(--.*|\\(un)?restrict .*|/\*M?!\d+ SET .*)$\n?`)

func mariadbDump(t *testing.T, m *dbtest.MariaDB, db string) string {
	t.Helper()
	out, err := exec.Command("mariadb-dump", "--no-defaults", "--socket="+m.Socket, "-uroot", "--skip-dump-date", db).Output()
	if err != nil {
		t.Fatalf("dumping %s: %v", db, err)
	}
	return dumpNoise.ReplaceAllString(string(out), "")
}

func postgresDump(t *testing.T, p *dbtest.Postgres, db string) string {
	t.Helper()
	cmd := exec.Command("pg_dump", "--no-owner", "--no-privileges")
	cmd.Env = append(os.Environ(), "PGHOST="+p.SocketDir, "PGPORT="+strconv.Itoa(p.Port), "PGUSER=postgres",
		"PGPASSWORD="+dbtest.SuperPassword, "PGDATABASE="+db)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump %s: %v", db, err)
	}
	return dumpNoise.ReplaceAllString(string(out), "")
}

// writeTree creates files (relative path -> content) under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for rel, body := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// capistrano builds a Capistrano deployment at root/{name} with its data
// directory on "the HD" and returns the app path and the HD var directory.
func capistrano(t *testing.T, root, name, databaseYML string) (app, hdVar string) {
	t.Helper()
	app = filepath.Join(root, name)
	hdVar = filepath.Join(root, "hd", name, "var")
	writeTree(t, app, map[string]string{
		"releases/20260101000000/app/models/document.rb": "class Document; end\n",
		"releases/20260102000000/app/models/document.rb": "class Document < ApplicationRecord; end\n",
		"releases/20260102000000/REVISION":               "abc123\n",
		"shared/config/database.yml":                     databaseYML,
		"shared/log/production.log":                      "noise\n",
		"shared/pids/puma.pid":                           "1234\n",
		"shared/public/assets/app.css":                   "body{}\n",
	})
	writeTree(t, hdVar, map[string]string{
		"file_assets/0001/drawing.pdf": "%PDF-1.4 drawing\n",
		"file_assets/0002/photo.jpg":   "\xff\xd8\xff jpeg",
	})
	for _, l := range [][2]string{
		{filepath.Join(app, "shared/config/database.yml"), filepath.Join(app, "releases/20260102000000/config/database.yml")},
		{filepath.Join(app, "releases/20260102000000"), filepath.Join(app, "current")},
		{hdVar, filepath.Join(app, "shared/var")},
	} {
		os.MkdirAll(filepath.Dir(l[1]), 0o755)
		if err := os.Symlink(l[0], l[1]); err != nil {
			t.Fatal(err)
		}
	}
	return app, hdVar
}

// fileSums maps each regular file under root to its SHA-256.
func fileSums(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for p, e := range snapshotTree(t, root) {
		if e.mode.IsRegular() {
			out[p] = e.sha
		}
	}
	return out
}

func sameSums(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	var diff []string
	for p, s := range want {
		if got[p] != s {
			diff = append(diff, fmt.Sprintf("%s: want %.12s, got %.12s", p, s, got[p]))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diff = append(diff, p+": unexpected")
		}
	}
	sort.Strings(diff)
	if len(diff) > 0 || len(want) == 0 {
		t.Errorf("%s: %d files, %d differences:\n%s", what, len(want), len(diff), strings.Join(diff, "\n"))
	}
}

// Issue 6: real application jobs write through the daemon's VM mount, the
// snapshot takes them, restore brings files and databases back, and a
// failing job keeps the previous backup.
func TestJobsThroughDaemon(t *testing.T) {
	m := dbtest.MariaDBT(t)
	pg := dbtest.PostgresT(t)
	e := newEnv(t)
	apps := e.path("apps")

	if _, err := m.SQL(`CREATE DATABASE hydro;
CREATE USER 'hydro'@'localhost' IDENTIFIED BY 'hydro-pw';
GRANT ALL ON ` + "`hydro%`" + `.* TO 'hydro'@'localhost';
CREATE TABLE hydro.documents (id INT PRIMARY KEY AUTO_INCREMENT, title VARCHAR(200), body BLOB) DEFAULT CHARSET=utf8mb4;
INSERT INTO hydro.documents (title, body) VALUES ('Zürich plan', UNHEX('00FF10')), ('Größe ✓', 'text'), ('third', NULL);`); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.SQL("postgres", `CREATE ROLE roadnotes LOGIN CREATEDB PASSWORD 'roads-pw';
CREATE DATABASE roadnotes_production OWNER roadnotes;`); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.SQL("roadnotes_production", `SET ROLE roadnotes;
CREATE TABLE notes (id serial PRIMARY KEY, road text NOT NULL, note text);
INSERT INTO notes (road, note) VALUES ('A1', 'pothole km 12'), ('A3', 'Zürich–Chur ✓'), ('N2', NULL);`); err != nil {
		t.Fatal(err)
	}
	hydro, hydroVar := capistrano(t, apps, "hydro", fmt.Sprintf(`production:
  adapter: mysql2
  database: hydro
  username: hydro
  password: hydro-pw
  socket: %s
`, m.Socket))
	roads, roadsVar := capistrano(t, apps, "roadnotes", fmt.Sprintf(`production:
  adapter: postgresql
  database: roadnotes_production
  username: roadnotes
  password: roads-pw
  host: %s
  port: %d
`, pg.SocketDir, pg.Port))
	sh(t, apps, `mkdir -p work git && cd work && git init -q -b main && echo v1 > README && git add . &&
		git -c user.name=t -c user.email=t@x commit -q -m first && git tag v1.0 && cd ../git && git clone -q --bare ../work proj.git`)
	writeTree(t, filepath.Join(apps, "Maildir"), map[string]string{
		"cur/1700000000.M1P1.host:2,S": "From: a\n\nseen\n",
		"new/1700000001.M2P1.host":     "From: b\n\nnew\n",
	})
	writeTree(t, filepath.Join(apps, "www"), map[string]string{"index.html": "<h1>hi</h1>\n", "img/logo.png": "png", "cache/x": "skip"})

	e.writeInventory(strings.Replace(historyVMs, "[[app]]", `[[app]]
name = "roadnotes"
server = "zg-3.softxs.ch"
vm = "web"
path = "`+roads+`"
relpath = "pms.roadnotes.ch"
type = "rails"

[[app]]
name = "git"
server = "zg-3.softxs.ch"
vm = "web"
path = "`+apps+`/git"
relpath = "git.softxs.ch"
type = "git"

[[app]]
name = "mail"
server = "zg-3.softxs.ch"
vm = "web"
path = "`+apps+`/Maildir"
relpath = "mail.softxs.ch/info"
type = "maildir"

[[app]]`, 1))
	// hydro becomes the rails app, www a files app with an exclude.
	inv, _ := os.ReadFile(e.inventory)
	s := strings.Replace(string(inv), "relpath = \"demo.softxs.ch/hydro\"\ntype = \"files\"",
		"path = \""+hydro+"\"\nrelpath = \"demo.softxs.ch/hydro\"\ntype = \"rails\"", 1)
	s = strings.Replace(s, "relpath = \"www.softxs.ch\"\ntype = \"files\"",
		"path = \""+apps+"/www\"\nrelpath = \"www.softxs.ch\"\ntype = \"files\"\n[app.files]\npaths = [\".\"]\nexclude = [\"cache/\"]", 1)
	e.writeInventory(s)
	e.startDaemon()
	mnt := e.path("mnt/web")

	names := []string{"hydro", "roadnotes", "git", "mail", "www"}
	out, errOut, code := e.v2backup(append([]string{"backup", "--target", mnt}, names...)...)
	if code != 0 {
		t.Fatalf("backup: exit %d\n%s\n%s", code, out, errOut)
	}
	waitStatus := func(app, want string) statusJSON {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st := e.status()[app]
			if st.State == want {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("status of %s: %+v, want %s", app, st, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, n := range names {
		waitStatus(n, "ok")
	}
	snap, rep := e.quietSnapshot()
	for _, n := range names {
		if st := appStates(rep)[n]; st != "complete" {
			t.Errorf("snapshot %s: %s is %q, want complete\n%s", snap, n, st, rep)
		}
	}
	if out, errOut, code := e.v2backup("verify", "--snapshot", snap); code != 0 {
		t.Errorf("verify --snapshot: exit %d\n%s\n%s", code, out, errOut)
	}

	// Restore each from the snapshot, databases into new ones.
	restore := func(app string, extra ...string) string {
		t.Helper()
		dest := e.path("restored", app)
		out, errOut, code := e.v2backup(append([]string{"restore", app, "--at", snap, "--to", dest}, extra...)...)
		if code != 0 {
			t.Fatalf("restore %s: exit %d\n%s\n%s", app, code, out, errOut)
		}
		return dest
	}
	dest := restore("hydro", "--db", "hydro_copy")
	if want, got := mariadbDump(t, m, "hydro"), mariadbDump(t, m, "hydro_copy"); want != got || !strings.Contains(got, "third") {
		t.Errorf("restored MariaDB database differs:\n--- original\n%s\n--- restored\n%s", want, got)
	}
	sameSums(t, "restored hydro var", fileSums(t, hydroVar), fileSums(t, filepath.Join(dest, "shared/var")))
	sameSums(t, "restored hydro release", fileSums(t, filepath.Join(hydro, "releases")), fileSums(t, filepath.Join(dest, "releases")))
	if _, err := os.Stat(filepath.Join(dest, "shared/log/production.log")); err == nil {
		t.Error("restored hydro has shared/log")
	}
	dest = restore("roadnotes", "--db", "roadnotes_copy")
	if want, got := postgresDump(t, pg, "roadnotes_production"), postgresDump(t, pg, "roadnotes_copy"); want != got || !strings.Contains(got, "pothole km 12") {
		t.Errorf("restored PostgreSQL database differs:\n--- original\n%s\n--- restored\n%s", want, got)
	}
	sameSums(t, "restored roadnotes var", fileSums(t, roadsVar), fileSums(t, filepath.Join(dest, "shared/var")))
	dest = restore("www")
	sameSums(t, "restored www", map[string]string{"index.html": fileSums(t, apps+"/www")["index.html"], "img/logo.png": fileSums(t, apps+"/www")["img/logo.png"]}, fileSums(t, dest))
	dest = restore("mail")
	sameSums(t, "restored Maildir", fileSums(t, apps+"/Maildir"), fileSums(t, filepath.Join(dest, "maildir")))
	dest = restore("git")
	want := sh(t, apps+"/git/proj.git", "git show-ref")
	if got := sh(t, e.root, "cd \"$(find "+dest+" -type d -name proj.git | head -1)\" && git show-ref"); got != want {
		t.Errorf("restored proj.git refs:\n%s\nwant:\n%s", got, want)
	}

	// The database goes down: the backup fails, the previous one stays.
	live := filepath.Join(e.partition, "local/web/demo.softxs.ch/hydro")
	before := fileSums(t, filepath.Join(live, "db"))
	m.Kill()
	out, errOut, code = e.v2backup("backup", "--target", mnt, "hydro")
	if code != 1 || !strings.Contains(errOut, "hydro") {
		t.Errorf("backup with the database down: exit %d, want 1 naming hydro\n%s\n%s", code, out, errOut)
	}
	sameSums(t, "hydro's dumps after the failed backup", before, fileSums(t, filepath.Join(live, "db")))
	if st := waitStatus("hydro", "failed"); st.Error == "" {
		t.Errorf("status of failed hydro has no error: %+v", st)
	}
	out, _, code = e.v2backup("status")
	if !regexp.MustCompile(`(?m)demo\.softxs\.ch/hydro.*failed`).MatchString(out) {
		t.Errorf("status table does not show hydro failed (exit %d):\n%s", code, out)
	}
}
