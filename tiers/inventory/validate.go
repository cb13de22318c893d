package inventory

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/softxs/v2backup/tiers"
)

// The database adapters a job can dump.
const (
	AdapterMySQL      = "mysql"
	AdapterPostgreSQL = "postgresql"
)

// validate checks what go-toml cannot: names, references between tables,
// collisions. Values go-toml already rejected (l.skip) are not reported
// again.
func (l *loader) validate(inv *Inventory) {
	l.validateSite(&inv.Site)
	servers := l.validateServers(inv)
	vms := l.validateVMs(inv, servers)
	l.validateApps(inv, servers, vms)
	l.validateBackupServers(inv, servers)
	l.validateMounts(inv, servers, vms)
	l.validateAges(inv)
}

// name parses one name with its tiers rule; an empty required name is
// reported as missing. ok is false when it was missing or invalid.
func (l *loader) name(path, value string, required bool, parse func(string) error) bool {
	if l.skip[path] {
		return false
	}
	if value == "" {
		if required {
			l.errAt(path, "required key is missing")
		}
		return false
	}
	if err := parse(value); err != nil {
		var ne *tiers.NameError
		if errors.As(err, &ne) {
			l.errAt(path, "%s", ne.Error())
		} else {
			l.errAt(path, "%v", err)
		}
		return false
	}
	return true
}

func parseServer(s string) error    { _, err := tiers.ParseServer(s); return err }
func parseVM(s string) error        { _, err := tiers.ParseVM(s); return err }
func parseRelpath(s string) error   { _, err := tiers.ParseRelpath(s); return err }
func parseAppName(s string) error   { _, err := tiers.ParseAppName(s); return err }
func parsePartition(s string) error { _, err := tiers.ParsePartition(s); return err }

// abs checks an optional path that must be absolute.
func (l *loader) abs(path, value string) {
	if value != "" && !l.skip[path] && !filepath.IsAbs(value) {
		l.errAt(path, "%q is not an absolute path", value)
	}
}

// nonNegative checks a count.
func (l *loader) nonNegative(path string, v float64) {
	if v < 0 && !l.skip[path] {
		l.errAt(path, "%v is negative; it must be 0 or more", v)
	}
}

// port checks an optional TCP port.
func (l *loader) port(path string, v int) {
	if (v < 0 || v > 65535) && !l.skip[path] {
		l.errAt(path, "port %d is out of range 1-65535 (0 or absent: the default)", v)
	}
}

func (l *loader) retention(path string, r Retention) {
	l.nonNegative(path+".nightly", float64(r.Nightly))
	l.nonNegative(path+".weekly", float64(r.Weekly))
	l.nonNegative(path+".monthly", float64(r.Monthly))
}

func (l *loader) expect(path string, e Expect) {
	l.nonNegative(path+".min_files", float64(e.MinFiles))
	l.nonNegative(path+".min_mb", e.MinMB)
	l.nonNegative(path+".max_change_percent", e.MaxChangePercent)
}

// line is the line of path, for "first declared at line N".
func (l *loader) line(path string) int { return l.ix.place(path).line }

func (l *loader) validateSite(s *Site) {
	l.name("site.partition", string(s.Partition), true, parsePartition)
	l.abs("site.history", s.History)
	l.abs("site.catalog", s.Catalog)
	l.retention("site.retention", s.Retention)
	l.expect("site.expect", s.Expect)
	l.nonNegative("site.copy_max_age_days", float64(s.CopyMaxAgeDays))
}

// validateAges checks that each application's warning age, defaults
// included, is not above its critical age: `check` would never warn.
func (l *loader) validateAges(inv *Inventory) {
	site := inv.Site.Expect.withDefaults()
	bad := func(e Expect) bool { return e.WarnAge.Duration > e.CritAge.Duration }
	if bad(site) {
		dflt := ""
		if inv.Site.Expect.CritAge.Duration == 0 {
			dflt = " (the default)"
		}
		l.errAt("site.expect.warn_age", "warn_age %v is above crit_age %v%s", site.WarnAge.Duration, site.CritAge.Duration, dflt)
		return
	}
	for i := range inv.Apps {
		o := inv.Apps[i].Expect
		if o == nil || (o.WarnAge.Duration == 0 && o.CritAge.Duration == 0) {
			continue
		}
		e := site
		if o.WarnAge.Duration != 0 {
			e.WarnAge = o.WarnAge
		}
		if o.CritAge.Duration != 0 {
			e.CritAge = o.CritAge
		}
		if bad(e) {
			key := fmt.Sprintf("app.%d.expect.warn_age", i)
			if o.WarnAge.Duration == 0 {
				key = fmt.Sprintf("app.%d.expect.crit_age", i)
			}
			l.errAt(key, "warn_age %v is above crit_age %v (application %q, the site's values where it sets none)",
				e.WarnAge.Duration, e.CritAge.Duration, inv.Apps[i].Name)
		}
	}
}

// validateServers returns the valid declared servers and where each is.
func (l *loader) validateServers(inv *Inventory) map[tiers.Server]string {
	servers := map[tiers.Server]string{}
	for i, s := range inv.Servers {
		base := fmt.Sprintf("server.%d", i)
		if l.name(base+".name", string(s.Name), true, parseServer) {
			if first, dup := servers[s.Name]; dup {
				l.errAt(base+".name", "server %q is declared twice; first at line %d", s.Name, l.line(first))
			} else {
				servers[s.Name] = base
			}
		}
		l.name(base+".partition", string(s.Partition), false, parsePartition)
		l.port(base+".ssh_port", s.SSHPort)
		l.abs(base+".remote_view", s.RemoteView)
		l.abs(base+".history_mount", s.HistoryMount)
		l.abs(base+".host_mount", s.HostMount)
	}
	return servers
}

// vmKey identifies a VM: its name is unique on its server only.
type vmKey struct {
	server tiers.Server
	vm     tiers.VM
}

// validateVMs returns the valid declared VMs and where each is.
func (l *loader) validateVMs(inv *Inventory, servers map[tiers.Server]string) map[vmKey]string {
	vms := map[vmKey]string{}
	for i, v := range inv.VMs {
		base := fmt.Sprintf("vm.%d", i)
		nameOK := false
		if v.Name == tiers.NoVM {
			l.errAt(base+".name", "vm name %q is reserved for applications with no VM: leave out their vm key instead of declaring it", v.Name)
		} else {
			nameOK = l.name(base+".name", string(v.Name), true, parseVM)
		}
		serverOK := l.name(base+".server", string(v.Server), true, parseServer)
		if serverOK {
			if _, ok := servers[v.Server]; !ok {
				l.errAt(base+".server", "server %q is not declared in any [[server]]", v.Server)
			}
		}
		if nameOK && serverOK {
			k := vmKey{v.Server, v.Name}
			if first, dup := vms[k]; dup {
				l.errAt(base+".name", "vm %q is declared twice on server %s; first at line %d", v.Name, v.Server, l.line(first))
			} else {
				vms[k] = base
			}
		}
		switch v.Export {
		case "", ExportFUSE, ExportVirtiofs, ExportBoth:
		default:
			if !l.skip[base+".export"] {
				l.errAt(base+".export", "unknown export %q; it must be %q, %q or %q", v.Export, ExportFUSE, ExportVirtiofs, ExportBoth)
			}
		}
		l.abs(base+".mount", v.Mount)
		l.abs(base+".socket", v.Socket)
		l.abs(base+".guest_dir", v.GuestDir)
	}
	return vms
}

func (l *loader) validateApps(inv *Inventory, servers map[tiers.Server]string, vms map[vmKey]string) {
	names := map[string]string{}
	type placed struct {
		base string
		rel  tiers.Relpath
	}
	onVM := map[vmKey][]placed{}
	var order []vmKey
	for i, a := range inv.Apps {
		base := fmt.Sprintf("app.%d", i)
		if l.name(base+".name", a.Name, true, parseAppName) {
			if first, dup := names[a.Name]; dup {
				l.errAt(base+".name", "application name %q is used twice; first at line %d", a.Name, l.line(first))
			} else {
				names[a.Name] = base
			}
		}
		serverOK := l.name(base+".server", string(a.Server), true, parseServer)
		if serverOK {
			if _, ok := servers[a.Server]; !ok {
				l.errAt(base+".server", "server %q is not declared in any [[server]]", a.Server)
				serverOK = false
			}
		}
		vm := a.VM
		if vm == "" {
			vm = tiers.NoVM
		}
		vmOK := vm == tiers.NoVM || l.name(base+".vm", string(a.VM), false, parseVM)
		if vmOK && serverOK && vm != tiers.NoVM {
			if _, ok := vms[vmKey{a.Server, vm}]; !ok {
				vmOK = false
				var elsewhere []string
				for k, where := range vms {
					if k.vm == vm {
						elsewhere = append(elsewhere, fmt.Sprintf("%s (line %d)", k.server, l.line(where)))
					}
				}
				slices.Sort(elsewhere)
				if len(elsewhere) > 0 {
					l.errAt(base+".vm", "vm %q is not declared on server %s; it is declared on %s", vm, a.Server, strings.Join(elsewhere, ", "))
				} else {
					l.errAt(base+".vm", "vm %q is not declared on server %s: add a [[vm]] with name = %q and server = %q, or leave out vm for an application with no VM", vm, a.Server, vm, a.Server)
				}
			}
		}
		relOK := l.name(base+".relpath", string(a.Relpath), true, parseRelpath)
		if relOK && serverOK && vmOK {
			k := vmKey{a.Server, vm}
			if _, seen := onVM[k]; !seen {
				order = append(order, k)
			}
			onVM[k] = append(onVM[k], placed{base, a.Relpath})
		}
		if !l.skip[base+".type"] {
			switch {
			case a.Type == "":
				l.errAt(base+".type", "required key is missing; known types: %s", typeList())
			case !slices.Contains(AppTypes, a.Type):
				hint := ""
				if lower := AppType(strings.ToLower(string(a.Type))); slices.Contains(AppTypes, lower) {
					hint = fmt.Sprintf(" (types are lower case: %q)", lower)
				}
				l.errAt(base+".type", "unknown type %q%s; known types: %s", a.Type, hint, typeList())
			}
		}
		l.abs(base+".path", a.Path)
		l.nonNegative(base+".keep_dumps", float64(a.KeepDumps))
		if d := a.Database; d != nil {
			switch d.Adapter {
			case "", AdapterMySQL, AdapterPostgreSQL:
			default:
				if !l.skip[base+".database.adapter"] {
					l.errAt(base+".database.adapter", "unknown database adapter %q; it must be %q (MariaDB/MySQL) or %q", d.Adapter, AdapterMySQL, AdapterPostgreSQL)
				}
			}
			l.port(base+".database.port", d.Port)
			l.abs(base+".database.socket", d.Socket)
			l.abs(base+".database.password_file", d.PasswordFile)
		}
		if a.Expect != nil {
			l.expect(base+".expect", *a.Expect)
		}
	}
	// Two applications of one VM may not share or nest their relpaths: one
	// would write into the other's backup.
	for _, k := range order {
		ps := onVM[k]
		for j := 1; j < len(ps); j++ {
			for i := 0; i < j; i++ {
				a, b := ps[i], ps[j]
				switch {
				case a.rel == b.rel:
					l.errAt(b.base+".relpath", "server %s, vm %s and relpath %q are already those of %s (line %d)", k.server, k.vm, b.rel, l.ix.display(a.base), l.line(a.base))
				case a.rel.Contains(b.rel):
					l.errAt(b.base+".relpath", "relpath %q lies inside %q of %s (line %d) on the same vm %s of %s", b.rel, a.rel, l.ix.display(a.base), l.line(a.base), k.vm, k.server)
				case b.rel.Contains(a.rel):
					l.errAt(b.base+".relpath", "relpath %q contains %q of %s (line %d) on the same vm %s of %s", b.rel, a.rel, l.ix.display(a.base), l.line(a.base), k.vm, k.server)
				default:
					continue
				}
				break
			}
		}
	}
}

func typeList() string {
	s := make([]string, len(AppTypes))
	for i, t := range AppTypes {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

func (l *loader) validateBackupServers(inv *Inventory, servers map[tiers.Server]string) {
	names := map[tiers.Server]string{}
	for i, b := range inv.BackupServers {
		base := fmt.Sprintf("backup_server.%d", i)
		if l.name(base+".name", string(b.Name), true, parseServer) {
			if first, dup := names[b.Name]; dup {
				l.errAt(base+".name", "backup server %q is declared twice; first at line %d", b.Name, l.line(first))
			} else {
				names[b.Name] = base
			}
			if where, host := servers[b.Name]; host && b.Partition != "" {
				if s := inv.Servers[indexOf(where)]; s.Partition != "" && s.Partition != b.Partition {
					l.errAt(base+".partition", "partition %q differs from %q of the same machine's [[server]] (line %d); one machine has one partition", b.Partition, s.Partition, l.line(where))
				}
			}
		}
		l.name(base+".partition", string(b.Partition), false, parsePartition)
		pulled := map[tiers.Server]string{}
		for j, h := range b.Pulls {
			p := fmt.Sprintf("%s.pulls.%d", base, j)
			if !l.name(p, string(h), true, parseServer) {
				continue
			}
			if first, dup := pulled[h]; dup {
				l.errAt(p, "host %q is listed twice; first at line %d", h, l.line(first))
				continue
			}
			pulled[h] = p
			if _, ok := servers[h]; !ok {
				l.errAt(p, "pulls host %q, which is not declared in any [[server]]", h)
			}
		}
		l.nonNegative(base+".parallel", float64(b.Parallel))
		l.abs(base+".identity", b.Identity)
		l.abs(base+".known_hosts", b.KnownHosts)
		if b.Retention != nil {
			l.retention(base+".retention", *b.Retention)
		}
	}
}

// indexOf is the index in a path such as "server.3".
func indexOf(base string) int {
	var i int
	fmt.Sscanf(base[strings.LastIndexByte(base, '.')+1:], "%d", &i)
	return i
}

// validateMounts checks that no two mount points (or sockets) of one server
// are the same or one inside the other: FUSE would hide one under the
// other. Defaults count, so an explicit mount can collide with a default.
func (l *loader) validateMounts(inv *Inventory, servers map[tiers.Server]string, vms map[vmKey]string) {
	type mount struct {
		path, what, key string // key: the path of its key, for the position
	}
	byServer := map[tiers.Server][]mount{}
	for i, s := range inv.Servers {
		base := fmt.Sprintf("server.%d", i)
		if servers[s.Name] != base {
			continue // invalid or a duplicate, reported already
		}
		add := func(key, what, path string) {
			if filepath.IsAbs(path) {
				byServer[s.Name] = append(byServer[s.Name], mount{filepath.Clean(path), what, base + "." + key})
			}
		}
		add("host_mount", "the host mount", s.hostMount())
		if p := inv.partitionOf(s.Name); p != "" {
			add("remote_view", "the remote view", s.remoteView(p))
		}
		if s.HistoryMount != "" {
			add("history_mount", "the history mount", s.HistoryMount)
		}
	}
	sockets := map[tiers.Server][]mount{}
	for i, v := range inv.VMs {
		base := fmt.Sprintf("vm.%d", i)
		if vms[vmKey{v.Server, v.Name}] != base {
			continue // invalid or a duplicate, reported already
		}
		if v.export() != ExportVirtiofs && (v.Mount == "" || filepath.IsAbs(v.Mount)) {
			byServer[v.Server] = append(byServer[v.Server], mount{filepath.Clean(v.mount()), "the mount of " + l.ix.display(base), base + ".mount"})
		}
		if v.export() != ExportFUSE && (v.Socket == "" || filepath.IsAbs(v.Socket)) {
			sockets[v.Server] = append(sockets[v.Server], mount{filepath.Clean(v.socket()), "the socket of " + l.ix.display(base), base + ".socket"})
		}
	}
	check := func(ms []mount, nested bool) {
		for j := 1; j < len(ms); j++ {
			for i := 0; i < j; i++ {
				a, b := ms[i], ms[j]
				// Report at the one written later in the file.
				if l.ix.offset(l.ix.place(a.key)) > l.ix.offset(l.ix.place(b.key)) {
					a, b = b, a
				}
				switch {
				case a.path == b.path:
					l.errAt(b.key, "%s, %s, is also %s (line %d)", strings.ToUpper(b.what[:1])+b.what[1:], b.path, a.what, l.line(a.key))
				case nested && strings.HasPrefix(b.path, a.path+"/"):
					l.errAt(b.key, "%s, %s, lies inside %s, %s (line %d)", strings.ToUpper(b.what[:1])+b.what[1:], b.path, a.what, a.path, l.line(a.key))
				case nested && strings.HasPrefix(a.path, b.path+"/"):
					l.errAt(b.key, "%s, %s, contains %s, %s (line %d)", strings.ToUpper(b.what[:1])+b.what[1:], b.path, a.what, a.path, l.line(a.key))
				}
			}
		}
	}
	for _, name := range sortedKeys(byServer) {
		check(byServer[name], true)
	}
	for _, name := range sortedKeys(sockets) {
		check(sockets[name], false)
	}
}

func sortedKeys[V any](m map[tiers.Server]V) []tiers.Server {
	out := make([]tiers.Server, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
