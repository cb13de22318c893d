package inventory

import (
	"errors"
	"strings"
	"testing"
)

// base is a valid start that every error case extends; its 8 lines are
// counted into the positions the cases give relative to their own text.
const base = `[site]
partition = "/v01/backup"
[[server]]
name = "zg-3.softxs.ch"
[[vm]]
name = "web"
server = "zg-3.softxs.ch"
`

var baseLines = strings.Count(base, "\n")

// app is a valid application on VM web, to extend with one bad key.
const app = `[[app]]
name = "hydro"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "demo.softxs.ch/hydro"
type = "rails"
`

type errCase struct {
	name string
	// doc follows base, unless full is set; line is relative to doc.
	doc          string
	full         bool
	line, column int
	field        string
	reason       string
}

var errCases = []errCase{
	// go-toml's own checks
	{name: "syntax error", doc: "[[app]]\nname = \"hydro\n", line: 2, column: 14, field: "app[0]", reason: "syntax error: basic strings cannot have new lines"},
	{name: "unknown key", doc: app + "colour = \"red\"\n", line: 7, column: 1, field: "app[hydro].colour",
		reason: `unknown key "colour"; the keys allowed in [app] are: name, description, server, vm, path, relpath`},
	{name: "unknown key in inline table", doc: app + "database = { adapter = \"mysql\", pasword = \"x\" }\n", line: 7, column: 33,
		field: "app[hydro].database.pasword", reason: `unknown key "pasword"; the keys allowed in [app.database] are: adapter, name`},
	{name: "unknown table", doc: "[[mirror]]\nname = \"x\"\n", line: 1, column: 3, field: "mirror[x]", reason: `unknown key "mirror"; the keys allowed here are: site, server, vm, app, backup_server`},
	{name: "wrong type", doc: app + "keep_dumps = \"three\"\n", line: 7, column: 14, field: "app[hydro].keep_dumps", reason: "wrong type: got a TOML string, want an integer"},
	{name: "wrong type in array", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\npulls = [\"zg-3.softxs.ch\", 3]\n", line: 3, column: 28,
		field: "backup_server[odin.softxs.ch].pulls[1]", reason: "wrong type: got a TOML integer, want a string"},
	{name: "clock", doc: app + "schedule = \"25:00\"\n", line: 7, column: 12, field: "app[hydro].schedule", reason: `invalid time of day "25:00": want HH:MM`},
	{name: "clock as TOML time", doc: app + "schedule = 02:30\n", line: 7, column: 12, field: "app[hydro].schedule", reason: `wrong type: got a TOML local time, want a time of day as a string, e.g. "05:00"`},
	{name: "duration as number", doc: "[site.snapshot]\nquiet = 15\n", line: 2, column: 9, field: "site.snapshot.quiet", reason: `wrong type: got a TOML integer, want a duration as a string, e.g. "15m"`},
	{name: "table as string", doc: app + "database = \"mysql\"\n", line: 7, column: 12, field: "app[hydro].database", reason: "wrong type: got a TOML string, want a table"},
	{name: "array as string", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\npulls = \"zg-3.softxs.ch\"\n", line: 3, column: 9, field: "backup_server[odin.softxs.ch].pulls", reason: "wrong type: got a TOML string, want an array"},
	{name: "float as string", doc: "[site.expect]\nmin_mb = \"5\"\n", line: 2, column: 10, field: "site.expect.min_mb", reason: "wrong type: got a TOML string, want a number"},
	{name: "duration", doc: "[site.snapshot]\nquiet = \"15 minutes\"\n", line: 2, column: 9, field: "site.snapshot.quiet", reason: `invalid duration "15 minutes"`},
	{name: "negative duration", doc: "[site.expect]\nwarn_age = \"-1h\"\n", line: 2, column: 12, field: "site.expect.warn_age", reason: `invalid duration "-1h"`},
	{name: "duplicate key", doc: app + "type = \"git\"\n", line: 7, column: 1, field: "app[hydro].type", reason: "already"},

	// names, through the tiers rules
	{name: "app name", doc: strings.Replace(app, `"hydro"`, `"Hydro"`, 1), line: 2, column: 1, field: "app[Hydro].name", reason: `invalid name "Hydro": must be lower case`},
	{name: "app server name", doc: strings.Replace(app, `server = "zg-3.softxs.ch"`, `server = "zg-3"`, 1), line: 3, column: 1, field: "app[hydro].server", reason: `invalid server "zg-3": must be a fully qualified domain name`},
	{name: "app vm name", doc: strings.Replace(app, `vm = "web"`, `vm = "we b"`, 1), line: 4, column: 1, field: "app[hydro].vm", reason: `invalid vm "we b"`},
	{name: "relpath", doc: strings.Replace(app, `"demo.softxs.ch/hydro"`, `"/demo.softxs.ch/hydro"`, 1), line: 5, column: 1, field: "app[hydro].relpath", reason: `invalid relpath "/demo.softxs.ch/hydro": must be relative`},
	{name: "relpath dotdot", doc: strings.Replace(app, `"demo.softxs.ch/hydro"`, `"demo.softxs.ch/../x"`, 1), line: 5, column: 1, field: "app[hydro].relpath", reason: `has a ".." segment`},
	{name: "server name", doc: "[[server]]\nname = \"ZG-1.softxs.ch\"\n", line: 2, column: 1, field: "server[ZG-1.softxs.ch].name", reason: "must be lower case"},
	{name: "vm name", doc: "[[vm]]\nname = \"-web\"\nserver = \"zg-3.softxs.ch\"\n", line: 2, column: 1, field: "vm[-web].name", reason: `label "-web" may not start or end with '-'`},
	{name: "vm server name", doc: "[[vm]]\nname = \"db\"\nserver = \"zg-3.softxs.ch.\"\n", line: 3, column: 1, field: "vm[db].server", reason: `invalid server "zg-3.softxs.ch."`},
	{name: "server partition", doc: "[[server]]\nname = \"zg-1.softxs.ch\"\npartition = \"v01/backup\"\n", line: 3, column: 1, field: "server[zg-1.softxs.ch].partition", reason: `invalid partition "v01/backup": must be an absolute path`},
	{name: "backup server partition", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\npartition = \"/v01/backup/\"\n", line: 3, column: 1, field: "backup_server[odin.softxs.ch].partition", reason: `must be a clean path`},
	{name: "backup server name", doc: "[[backup_server]]\nname = \"odin\"\n", line: 2, column: 1, field: "backup_server[odin].name", reason: `invalid server "odin"`},
	{name: "pulls name", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\npulls = [\"zg-3.softxs.ch\", \"zg 1\"]\n", line: 3, column: 28, field: "backup_server[odin.softxs.ch].pulls[1]", reason: `invalid server "zg 1"`},
	{name: "reserved vm", doc: "[[vm]]\nname = \"_host\"\nserver = \"zg-3.softxs.ch\"\n", line: 2, column: 1, field: "vm[_host].name", reason: `vm name "_host" is reserved`},

	// required keys: reported at the table's header
	{name: "site partition", full: true, doc: "[site]\nname = \"x\"\n", line: 1, column: 1, field: "site.partition", reason: "required key is missing"},
	{name: "site partition, no site", full: true, doc: "[[server]]\nname = \"zg-3.softxs.ch\"\n", line: 0, column: 0, field: "site.partition", reason: "required key is missing"},
	{name: "app name missing", doc: strings.Replace(app, "name = \"hydro\"\n", "", 1), line: 1, column: 1, field: "app[0].name", reason: "required key is missing"},
	{name: "app server missing", doc: strings.Replace(app, "server = \"zg-3.softxs.ch\"\n", "", 1), line: 1, column: 1, field: "app[hydro].server", reason: "required key is missing"},
	{name: "app relpath missing", doc: strings.Replace(app, "relpath = \"demo.softxs.ch/hydro\"\n", "", 1), line: 1, column: 1, field: "app[hydro].relpath", reason: "required key is missing"},
	{name: "app type missing", doc: strings.Replace(app, "type = \"rails\"\n", "", 1), line: 1, column: 1, field: "app[hydro].type", reason: "required key is missing; known types: rails, drawmgt, moinmoin, git, cvs, maildir, wordpress, files"},
	{name: "vm name missing", doc: "\n[[vm]]\nserver = \"zg-3.softxs.ch\"\n", line: 2, column: 1, field: "vm[1].name", reason: "required key is missing"},
	{name: "vm server missing", doc: "[[vm]]\nname = \"db\"\n", line: 1, column: 1, field: "vm[db].server", reason: "required key is missing"},
	{name: "server name missing", doc: "[[server]]\nssh_port = 2222\n", line: 1, column: 1, field: "server[1].name", reason: "required key is missing"},
	{name: "backup server name missing", doc: "[[backup_server]]\npulls = [\"zg-3.softxs.ch\"]\n", line: 1, column: 1, field: "backup_server[0].name", reason: "required key is missing"},

	// duplicates
	{name: "duplicate server", doc: "[[server]]\nname = \"zg-3.softxs.ch\"\n", line: 2, column: 1, field: "server[zg-3.softxs.ch].name", reason: `server "zg-3.softxs.ch" is declared twice; first at line 3`},
	{name: "duplicate vm", doc: "[[vm]]\nserver = \"zg-3.softxs.ch\"\nname = \"web\"\n", line: 3, column: 1, field: "vm[web].name", reason: `vm "web" is declared twice on server zg-3.softxs.ch; first at line 5`},
	{name: "duplicate app", doc: app + strings.Replace(app, "demo.softxs.ch/hydro", "demo.softxs.ch/hydro2", 1), line: 8, column: 1, field: "app[hydro].name", reason: `application name "hydro" is used twice; first at line 8`},
	{name: "duplicate backup server", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\n[[backup_server]]\nname = \"odin.softxs.ch\"\n", line: 4, column: 1, field: "backup_server[odin.softxs.ch].name", reason: `backup server "odin.softxs.ch" is declared twice; first at line 8`},
	{name: "pulls twice", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\npulls = [\"zg-3.softxs.ch\", \"zg-3.softxs.ch\"]\n", line: 3, column: 28, field: "backup_server[odin.softxs.ch].pulls[1]", reason: `host "zg-3.softxs.ch" is listed twice`},

	// collisions of relpaths on one VM
	{name: "same relpath", doc: app + strings.Replace(app, `name = "hydro"`, `name = "hydro2"`, 1), line: 11, column: 1, field: "app[hydro2].relpath",
		reason: `server zg-3.softxs.ch, vm web and relpath "demo.softxs.ch/hydro" are already those of app[hydro] (line 8)`},
	{name: "nested relpath", doc: app + strings.Replace(strings.Replace(app, `name = "hydro"`, `name = "sub"`, 1), "hydro\"\ntype", "hydro/sub\"\ntype", 1), line: 11, column: 1, field: "app[sub].relpath",
		reason: `relpath "demo.softxs.ch/hydro/sub" lies inside "demo.softxs.ch/hydro" of app[hydro] (line 8) on the same vm web`},
	{name: "containing relpath", doc: app + strings.Replace(strings.Replace(app, `name = "hydro"`, `name = "demo"`, 1), "demo.softxs.ch/hydro\"", "demo.softxs.ch\"", 1), line: 11, column: 1, field: "app[demo].relpath",
		reason: `relpath "demo.softxs.ch" contains "demo.softxs.ch/hydro" of app[hydro] (line 8)`},
	{name: "same relpath with no vm", doc: strings.Replace(app, "vm = \"web\"\n", "", 1) + strings.Replace(strings.Replace(app, "vm = \"web\"\n", "vm = \"_host\"\n", 1), `"hydro"`, `"h2"`, 1), line: 10, column: 1, field: "app[h2].relpath",
		reason: `server zg-3.softxs.ch, vm _host and relpath "demo.softxs.ch/hydro" are already those of app[hydro] (line 8)`},

	// references
	{name: "undeclared server", doc: strings.Replace(app, `server = "zg-3.softxs.ch"`, `server = "zg-9.softxs.ch"`, 1), line: 3, column: 1, field: "app[hydro].server", reason: `server "zg-9.softxs.ch" is not declared in any [[server]]`},
	{name: "undeclared vm", doc: strings.Replace(app, `vm = "web"`, `vm = "db"`, 1), line: 4, column: 1, field: "app[hydro].vm", reason: `vm "db" is not declared on server zg-3.softxs.ch: add a [[vm]]`},
	{name: "vm on another server", doc: "[[server]]\nname = \"zg-1.softxs.ch\"\n" + strings.Replace(app, `server = "zg-3.softxs.ch"`, `server = "zg-1.softxs.ch"`, 1), line: 6, column: 1, field: "app[hydro].vm",
		reason: `vm "web" is not declared on server zg-1.softxs.ch; it is declared on zg-3.softxs.ch (line 5)`},
	{name: "vm on undeclared server", doc: "[[vm]]\nname = \"db\"\nserver = \"zg-9.softxs.ch\"\n", line: 3, column: 1, field: "vm[db].server", reason: `server "zg-9.softxs.ch" is not declared in any [[server]]`},
	{name: "pulls undeclared host", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\npulls = [\"zg-3.softxs.ch\", \"zg-9.softxs.ch\"]\n", line: 3, column: 28,
		field: "backup_server[odin.softxs.ch].pulls[1]", reason: `pulls host "zg-9.softxs.ch", which is not declared in any [[server]]`},

	// values
	{name: "unknown type", doc: strings.Replace(app, `type = "rails"`, `type = "django"`, 1), line: 6, column: 1, field: "app[hydro].type", reason: `unknown type "django"; known types: rails, drawmgt`},
	{name: "type case", doc: strings.Replace(app, `type = "rails"`, `type = "DrawMGT"`, 1), line: 6, column: 1, field: "app[hydro].type", reason: `unknown type "DrawMGT" (types are lower case: "drawmgt")`},
	{name: "unknown export", doc: "[[vm]]\nname = \"db\"\nserver = \"zg-3.softxs.ch\"\nexport = \"nfs\"\n", line: 4, column: 1, field: "vm[db].export", reason: `unknown export "nfs"; it must be "fuse", "virtiofs" or "both"`},
	{name: "database adapter", doc: app + "[app.database]\nadapter = \"sqlite\"\n", line: 8, column: 1, field: "app[hydro].database.adapter", reason: `unknown database adapter "sqlite"; it must be "mysql" (MariaDB/MySQL) or "postgresql"`},
	{name: "database port", doc: app + "database = { port = 70000 }\n", line: 7, column: 14, field: "app[hydro].database.port", reason: "port 70000 is out of range"},
	{name: "database password file", doc: app + "database = { password_file = \"db.pw\" }\n", line: 7, column: 14, field: "app[hydro].database.password_file", reason: `"db.pw" is not an absolute path`},
	{name: "app path", doc: app + "path = \"home/v2/rails/hydro\"\n", line: 7, column: 1, field: "app[hydro].path", reason: `"home/v2/rails/hydro" is not an absolute path`},
	{name: "vm mount", doc: "[[vm]]\nname = \"db\"\nserver = \"zg-3.softxs.ch\"\nmount = \"srv/db\"\n", line: 4, column: 1, field: "vm[db].mount", reason: `"srv/db" is not an absolute path`},
	{name: "vm socket", doc: "[[vm]]\nname = \"db\"\nserver = \"zg-3.softxs.ch\"\nsocket = \"db.sock\"\n", line: 4, column: 1, field: "vm[db].socket", reason: `"db.sock" is not an absolute path`},
	{name: "host mount", doc: "[[server]]\nname = \"zg-1.softxs.ch\"\nhost_mount = \"_host\"\n", line: 3, column: 1, field: "server[zg-1.softxs.ch].host_mount", reason: `"_host" is not an absolute path`},
	{name: "identity", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\nidentity = \"~/.ssh/id_ed25519\"\n", line: 3, column: 1, field: "backup_server[odin.softxs.ch].identity", reason: `"~/.ssh/id_ed25519" is not an absolute path`},
	{name: "site history", full: true, doc: "[site]\npartition = \"/v01/backup\"\nhistory = \"history\"\n", line: 3, column: 1, field: "site.history", reason: `"history" is not an absolute path`},
	{name: "site catalog", full: true, doc: "[site]\npartition = \"/v01/backup\"\ncatalog = \"catalog.db\"\n", line: 3, column: 1, field: "site.catalog", reason: `"catalog.db" is not an absolute path`},
	{name: "guest dir", doc: "[[vm]]\nname = \"db\"\nserver = \"zg-3.softxs.ch\"\nguest_dir = \"backup\"\n", line: 4, column: 1, field: "vm[db].guest_dir", reason: `"backup" is not an absolute path`},
	{name: "history mount", doc: "[[server]]\nname = \"zg-1.softxs.ch\"\nhistory_mount = \"history\"\n", line: 3, column: 1, field: "server[zg-1.softxs.ch].history_mount", reason: `"history" is not an absolute path`},
	{name: "remote view", doc: "[[server]]\nname = \"zg-1.softxs.ch\"\nremote_view = \"view\"\n", line: 3, column: 1, field: "server[zg-1.softxs.ch].remote_view", reason: `"view" is not an absolute path`},
	{name: "known hosts", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\nknown_hosts = \"known_hosts\"\n", line: 3, column: 1, field: "backup_server[odin.softxs.ch].known_hosts", reason: `"known_hosts" is not an absolute path`},
	{name: "database socket", doc: app + "[app.database]\nsocket = \"mysqld.sock\"\n", line: 8, column: 1, field: "app[hydro].database.socket", reason: `"mysqld.sock" is not an absolute path`},
	{name: "site expect", doc: "[site.expect]\nmin_files = -10\n", line: 2, column: 1, field: "site.expect.min_files", reason: "-10 is negative"},
	{name: "history mount is a vm mount", full: true, doc: "[site]\npartition = \"/v01/backup\"\n[[server]]\nname = \"zg-3.softxs.ch\"\nhistory_mount = \"/srv/v2backup/web\"\n[[vm]]\nname = \"web\"\nserver = \"zg-3.softxs.ch\"\n",
		line: 6, column: 1, field: "vm[web].mount", reason: "The mount of vm[web], /srv/v2backup/web, is also the history mount (line 5)"},
	{name: "keep dumps", doc: app + "keep_dumps = -1\n", line: 7, column: 1, field: "app[hydro].keep_dumps", reason: "-1 is negative"},
	{name: "parallel", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\nparallel = -2\n", line: 3, column: 1, field: "backup_server[odin.softxs.ch].parallel", reason: "-2 is negative"},
	{name: "site retention", doc: "[site.retention]\nnightly = 7\nweekly = -4\n", line: 3, column: 1, field: "site.retention.weekly", reason: "-4 is negative"},
	{name: "backup retention", doc: "[[backup_server]]\nname = \"odin.softxs.ch\"\nretention = { monthly = -1 }\n", line: 3, column: 15, field: "backup_server[odin.softxs.ch].retention.monthly", reason: "-1 is negative"},
	{name: "expect", doc: app + "expect.min_mb = -0.5\n", line: 7, column: 1, field: "app[hydro].expect.min_mb", reason: "-0.5 is negative"},
	{name: "ssh port", doc: "[[server]]\nname = \"zg-1.softxs.ch\"\nssh_port = -22\n", line: 3, column: 1, field: "server[zg-1.softxs.ch].ssh_port", reason: "port -22 is out of range"},
	{name: "machine with two partitions", doc: "[[server]]\nname = \"odin.softxs.ch\"\npartition = \"/v01/backup\"\n[[backup_server]]\nname = \"odin.softxs.ch\"\npartition = \"/v02/backup\"\n", line: 6, column: 1,
		field: "backup_server[odin.softxs.ch].partition", reason: `partition "/v02/backup" differs from "/v01/backup" of the same machine's [[server]] (line 8)`},

	// mount points of one server
	{name: "same mount", doc: "[[vm]]\nname = \"intern\"\nserver = \"zg-3.softxs.ch\"\nmount = \"/srv/v2backup/web/\"\n", line: 4, column: 1, field: "vm[intern].mount",
		reason: "The mount of vm[intern], /srv/v2backup/web, is also the mount of vm[web] (line 5)"},
	{name: "mount is host mount", doc: "[[vm]]\nname = \"intern\"\nserver = \"zg-3.softxs.ch\"\nmount = \"/srv/v2backup/_host\"\n", line: 4, column: 1, field: "vm[intern].mount",
		reason: "The mount of vm[intern], /srv/v2backup/_host, is also the host mount (line 3)"},
	{name: "nested mount", doc: "[[vm]]\nname = \"intern\"\nserver = \"zg-3.softxs.ch\"\nmount = \"/srv/v2backup/web/intern\"\n", line: 4, column: 1, field: "vm[intern].mount",
		reason: "lies inside the mount of vm[web], /srv/v2backup/web (line 5)"},
	{name: "mount over the remote view", doc: "[[vm]]\nname = \"intern\"\nserver = \"zg-3.softxs.ch\"\nmount = \"/v01/backup\"\n", line: 4, column: 1, field: "vm[intern].mount",
		reason: "contains the remote view, /v01/backup/view (line 3)"},
	{name: "same socket", doc: "[[vm]]\nname = \"intern\"\nserver = \"zg-3.softxs.ch\"\nexport = \"virtiofs\"\nsocket = \"/run/v2backup/web.sock\"\n[[vm]]\nname = \"db\"\nserver = \"zg-3.softxs.ch\"\nexport = \"both\"\nsocket = \"/run/v2backup/web.sock\"\n", line: 10, column: 1, field: "vm[db].socket",
		reason: "The socket of vm[db], /run/v2backup/web.sock, is also the socket of vm[intern] (line 12)"},
}

func TestErrors(t *testing.T) {
	for _, c := range errCases {
		t.Run(c.name, func(t *testing.T) {
			doc, line := base+c.doc, c.line
			if c.full {
				doc = c.doc
			} else if line > 0 {
				line += baseLines
			}
			inv, err := Parse("test.toml", []byte(doc))
			if err == nil {
				t.Fatalf("loaded, want an error; inventory: %+v", inv)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T %v, want Errors", err, err)
			}
			if len(es) != 1 {
				t.Fatalf("%d errors, want 1:\n%v", len(es), err)
			}
			e := es[0]
			if e.File != "test.toml" || e.Line != line || e.Column != c.column || e.Field != c.field || !strings.Contains(e.Reason, c.reason) {
				t.Errorf("got  %s:%d:%d field %q reason %q\nwant %s:%d:%d field %q reason containing %q", e.File, e.Line, e.Column, e.Field, e.Reason, "test.toml", line, c.column, c.field, c.reason)
			}
		})
	}
}
