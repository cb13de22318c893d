package inventory

import (
	"cmp"
	"path/filepath"
	"slices"
	"time"

	"github.com/softxs/v2backup/tiers"
)

// Defaults the loader fills in; types.go documents each at its field.
const (
	DefaultMountDir  = "/srv/v2backup"
	DefaultSocketDir = "/run/v2backup"
	DefaultGuestDir  = "/backup"
	DefaultKeepDumps = 3
	DefaultParallel  = 1
	DefaultStatus    = "open"
	DefaultSSHUser   = "root"
	DefaultSSHPort   = 22
)

// DefaultExpect is the site's expectations where the file leaves a field
// out: a success at most 26h old (a nightly backup plus two hours of slack)
// warns after that and is critical after 50h (two missed nights), and a
// live tree with no file is critical.
var DefaultExpect = Expect{MinFiles: 1, WarnAge: Duration{26 * time.Hour}, CritAge: Duration{50 * time.Hour}}

// DefaultCopyMaxAgeDays is Site.CopyMaxAgeDays when left out.
const DefaultCopyMaxAgeDays = 8

// DefaultRetention is the site's retention when the file sets none of it.
var DefaultRetention = Retention{Nightly: 7, Weekly: 4, Monthly: 6}

// The nightly snapshot's defaults.
var (
	DefaultSnapshotTime     = Clock{Hour: 5, Minute: 0, Set: true}
	DefaultSnapshotQuiet    = Duration{15 * time.Minute}
	DefaultSnapshotDeadline = Duration{2 * time.Hour}
)

func (v *VM) mount() string {
	if v.Mount != "" {
		return v.Mount
	}
	return filepath.Join(DefaultMountDir, string(v.Name))
}

func (v *VM) socket() string {
	if v.Socket != "" {
		return v.Socket
	}
	return filepath.Join(DefaultSocketDir, string(v.Name)+".sock")
}

func (v *VM) export() Export {
	if v.Export != "" {
		return v.Export
	}
	return ExportFUSE
}

func (s *Server) hostMount() string {
	if s.HostMount != "" {
		return s.HostMount
	}
	return filepath.Join(DefaultMountDir, string(tiers.NoVM))
}

func (s *Server) remoteView(p tiers.Partition) string {
	if s.RemoteView != "" {
		return s.RemoteView
	}
	return filepath.Join(string(p), "view")
}

// applyDefaults completes a validated inventory.
func (inv *Inventory) applyDefaults() {
	st := &inv.Site.Snapshot
	if !st.Time.Set {
		st.Time = DefaultSnapshotTime
	}
	if st.Quiet.Duration == 0 {
		st.Quiet = DefaultSnapshotQuiet
	}
	if st.Deadline.Duration == 0 {
		st.Deadline = DefaultSnapshotDeadline
	}
	if inv.Site.Retention == (Retention{}) {
		inv.Site.Retention = DefaultRetention
	}
	inv.Site.Expect = inv.Site.Expect.withDefaults()
	if inv.Site.CopyMaxAgeDays == 0 {
		inv.Site.CopyMaxAgeDays = DefaultCopyMaxAgeDays
	}
	for i := range inv.Servers {
		s := &inv.Servers[i]
		s.HostMount = s.hostMount()
		s.RemoteView = s.remoteView(inv.Partition(s.Name))
		if s.SSH == "" {
			s.SSH = DefaultSSHUser + "@" + string(s.Name)
		}
		if s.SSHPort == 0 {
			s.SSHPort = DefaultSSHPort
		}
	}
	for i := range inv.VMs {
		v := &inv.VMs[i]
		v.Mount = v.mount()
		v.Socket = v.socket()
		v.Export = v.export()
		if v.GuestDir == "" {
			v.GuestDir = DefaultGuestDir
		}
	}
	for i := range inv.Apps {
		a := &inv.Apps[i]
		if a.VM == "" {
			a.VM = tiers.NoVM
		}
		if a.KeepDumps == 0 {
			a.KeepDumps = DefaultKeepDumps
		}
		if a.Status == "" {
			a.Status = DefaultStatus
		}
	}
	for i := range inv.BackupServers {
		if inv.BackupServers[i].Parallel == 0 {
			inv.BackupServers[i].Parallel = DefaultParallel
		}
	}
}

// App is the application of that name.
func (inv *Inventory) App(name string) (*App, bool) {
	for i := range inv.Apps {
		if inv.Apps[i].Name == name {
			return &inv.Apps[i], true
		}
	}
	return nil, false
}

// Server is the host of that name.
func (inv *Inventory) Server(name tiers.Server) (*Server, bool) {
	for i := range inv.Servers {
		if inv.Servers[i].Name == name {
			return &inv.Servers[i], true
		}
	}
	return nil, false
}

// VM is the VM of that name on server.
func (inv *Inventory) VM(server tiers.Server, vm tiers.VM) (*VM, bool) {
	for i := range inv.VMs {
		if v := &inv.VMs[i]; v.Server == server && v.Name == vm {
			return v, true
		}
	}
	return nil, false
}

// BackupServer is the backup server of that name.
func (inv *Inventory) BackupServer(name tiers.Server) (*BackupServer, bool) {
	for i := range inv.BackupServers {
		if inv.BackupServers[i].Name == name {
			return &inv.BackupServers[i], true
		}
	}
	return nil, false
}

// IsHost reports whether name is declared as a [[server]].
func (inv *Inventory) IsHost(name tiers.Server) bool {
	_, ok := inv.Server(name)
	return ok
}

// IsBackupServer reports whether name is declared as a [[backup_server]].
func (inv *Inventory) IsBackupServer(name tiers.Server) bool {
	_, ok := inv.BackupServer(name)
	return ok
}

// VMsOn lists the VMs declared on server, sorted by name. Applications with
// no VM (tiers.NoVM) have no entry here.
func (inv *Inventory) VMsOn(server tiers.Server) []VM {
	var out []VM
	for _, v := range inv.VMs {
		if v.Server == server {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b VM) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// AppsOn lists the applications of vm on server (vm "" means every
// application of the server, tiers.NoVM those with no VM), sorted by VM
// then relpath: the order of their trees on disk.
func (inv *Inventory) AppsOn(server tiers.Server, vm tiers.VM) []App {
	var out []App
	for _, a := range inv.Apps {
		if a.Server == server && (vm == "" || a.VM == vm) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b App) int {
		return cmp.Or(cmp.Compare(a.VM, b.VM), cmp.Compare(a.Relpath, b.Relpath))
	})
	return out
}

// Partition is the backup partition of a host or backup server: its own
// partition key, else the site's.
func (inv *Inventory) Partition(name tiers.Server) tiers.Partition {
	if p := inv.partitionOf(name); p != "" {
		return p
	}
	return inv.Site.Partition
}

// partitionOf is Partition, or "" where the file's partitions are not valid
// (during validation).
func (inv *Inventory) partitionOf(name tiers.Server) tiers.Partition {
	valid := func(p tiers.Partition) bool {
		_, err := tiers.ParsePartition(string(p))
		return err == nil
	}
	if s, ok := inv.Server(name); ok && s.Partition != "" {
		if valid(s.Partition) {
			return s.Partition
		}
		return ""
	}
	if b, ok := inv.BackupServer(name); ok && b.Partition != "" {
		if valid(b.Partition) {
			return b.Partition
		}
		return ""
	}
	if valid(inv.Site.Partition) {
		return inv.Site.Partition
	}
	return ""
}

// HistoryDir is where name writes its monitoring history files: the site's
// history key, else {partition}/history of that machine.
func (inv *Inventory) HistoryDir(name tiers.Server) string {
	if inv.Site.History != "" {
		return inv.Site.History
	}
	return inv.Partition(name).HistoryDir()
}

// CatalogPath is name's SQLite catalog: the site's catalog key, else
// {partition}/.v2backup/catalog.db of that machine.
func (inv *Inventory) CatalogPath(name tiers.Server) string {
	if inv.Site.Catalog != "" {
		return inv.Site.Catalog
	}
	return inv.Partition(name).CatalogPath()
}

// RetentionOf is the retention of a backup server's remote tier: its own,
// else the site's.
func (inv *Inventory) RetentionOf(name tiers.Server) Retention {
	if b, ok := inv.BackupServer(name); ok && b.Retention != nil {
		return *b.Retention
	}
	return inv.Site.Retention
}

// withDefaults fills DefaultExpect's fields that e leaves out.
func (e Expect) withDefaults() Expect {
	d := DefaultExpect
	if e.MinFiles == 0 {
		e.MinFiles = d.MinFiles
	}
	if e.WarnAge.Duration == 0 {
		e.WarnAge = d.WarnAge
	}
	if e.CritAge.Duration == 0 {
		e.CritAge = d.CritAge
	}
	return e
}

// ExpectFor is what a good night of app looks like: the site's expectations
// with each field the application sets replacing the site's.
func (inv *Inventory) ExpectFor(app *App) Expect {
	e := inv.Site.Expect
	o := app.Expect
	if o == nil {
		return e
	}
	if o.FinishedBy.Set {
		e.FinishedBy = o.FinishedBy
	}
	if o.MinFiles != 0 {
		e.MinFiles = o.MinFiles
	}
	if o.MinMB != 0 {
		e.MinMB = o.MinMB
	}
	if o.MaxChangePercent != 0 {
		e.MaxChangePercent = o.MaxChangePercent
	}
	if o.WarnAge.Duration != 0 {
		e.WarnAge = o.WarnAge
	}
	if o.CritAge.Duration != 0 {
		e.CritAge = o.CritAge
	}
	return e
}
