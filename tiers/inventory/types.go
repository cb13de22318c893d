// Package inventory is the site-wide TOML file that lists servers, VMs,
// applications and backup servers: the seed's "Summary of Backup Systems"
// table as data. Every host reads the same file and acts on its own rows.
package inventory

import (
	"fmt"
	"strings"
	"time"

	"github.com/softxs/v2backup/tiers"
)

// Inventory is a loaded, validated inventory file, with every default
// filled in (each documented at its field). The file's tables are [site],
// [[server]], [[vm]], [[app]] and [[backup_server]]; an unknown key anywhere
// is an error.
type Inventory struct {
	// File is the path it was loaded from, for messages.
	File string `toml:"-"`

	Site          Site           `toml:"site"`
	Servers       []Server       `toml:"server"`
	VMs           []VM           `toml:"vm"`
	Apps          []App          `toml:"app"`
	BackupServers []BackupServer `toml:"backup_server"`
}

// Site holds the settings every host shares unless its own row overrides them.
type Site struct {
	// Name of the site, shown in status output.
	Name string `toml:"name"`
	// Partition is the backup partition, typically /v01/backup. Required.
	Partition tiers.Partition `toml:"partition"`
	// History is the directory of history files; default {partition}/history.
	History string `toml:"history"`
	// Catalog is the SQLite catalog; default {partition}/.v2backup/catalog.db.
	Catalog string `toml:"catalog"`
	// Snapshot says when the nightly snapshot runs; each key left out takes
	// its default: time 05:00, quiet 15m, deadline 2h.
	Snapshot SnapshotSchedule `toml:"snapshot"`
	// Retention says how many snapshots of each kind to keep; default 7
	// nightly, 4 weekly, 6 monthly when all three are left out (or 0).
	Retention Retention `toml:"retention"`
	// Expect holds the default expectations for every application; warn_age
	// defaults to 26h, crit_age to 50h and min_files to 1 (see
	// DefaultExpect), the others to no expectation.
	Expect Expect `toml:"expect"`
	// CopyMaxAgeDays is how many days an off-site drive may go unseen, and
	// (on a backup server) how old a host's last good pull may be, before
	// `check` warns; default 8 (a weekly rotation plus a day). Not negative.
	CopyMaxAgeDays int `toml:"copy_max_age_days"`
}

// SnapshotSchedule is the nightly snapshot's timing.
type SnapshotSchedule struct {
	// Time of day the snapshot starts waiting for backups, e.g. "05:00".
	Time Clock `toml:"time"`
	// Quiet is how long an application must have seen no write to count as
	// finished when it has no recorded job run, e.g. "15m".
	Quiet Duration `toml:"quiet"`
	// Deadline is how long after Time the snapshot is taken regardless,
	// e.g. "1h"; unfinished applications come from their last complete state.
	Deadline Duration `toml:"deadline"`
}

// Retention is how many snapshots to keep (like rsnapshot's intervals). No
// count may be negative.
type Retention struct {
	Nightly int `toml:"nightly"`
	Weekly  int `toml:"weekly"`
	Monthly int `toml:"monthly"`
}

// Expect is what a good night's backup of an application looks like.
// Zero values mean "no expectation" (the loader fills DefaultExpect's into
// the site's); counts may not be negative, and the warning age may not be
// above the critical age. `v2backup check` evaluates them (jobs/check).
type Expect struct {
	// FinishedBy is the time of day the night's backup must have finished.
	FinishedBy Clock `toml:"finished_by"`
	// MinFiles and MinMB are lower bounds for the application's live tree;
	// one MB is 2^20 bytes (what du -m and status's sizes count).
	MinFiles int64   `toml:"min_files"`
	MinMB    float64 `toml:"min_mb"`
	// MaxChangePercent bounds the change of files and of bytes between the
	// last two nightly snapshots, in percent of the earlier night.
	MaxChangePercent float64 `toml:"max_change_percent"`
	// WarnAge and CritAge bound the age of the last success; WarnAge may
	// not be above CritAge.
	WarnAge Duration `toml:"warn_age"`
	CritAge Duration `toml:"crit_age"`
}

// Server is a host that runs VMs (and perhaps applications with no VM).
// No two of its mount points (its VMs' mounts, host_mount, remote_view,
// history_mount, defaults included) may be the same or lie one inside
// another, and no two of its VMs may share a socket.
type Server struct {
	// Name is the host's FQDN. Required, unique among servers.
	Name tiers.Server `toml:"name"`
	// Partition overrides the site's partition on this host.
	Partition tiers.Partition `toml:"partition"`
	// SSH is how backup servers reach this host: user@address, default
	// "root@{name}"; SSHPort defaults to 22.
	SSH     string `toml:"ssh"`
	SSHPort int    `toml:"ssh_port"`
	// RemoteView is where the daemon mounts the read-only remote view that
	// backup servers pull; default {partition}/view.
	RemoteView string `toml:"remote_view"`
	// RemoteViewIdle is how long the remote view must go unused before it
	// moves to a newer snapshot, so a pull in progress keeps the snapshot
	// it started on; default 30s.
	RemoteViewIdle Duration `toml:"remote_view_idle"`
	// HistoryMount is where the daemon mounts the all-VM read-only history
	// for administrators; empty: not mounted.
	HistoryMount string `toml:"history_mount"`
	// HostMount is the mount point for applications with no VM; default
	// /srv/v2backup/_host.
	HostMount string `toml:"host_mount"`
	// Listen is the local address of /metrics and the status page; empty: off.
	Listen string `toml:"listen"`
}

// Export is how a VM receives its backup directory.
type Export string

// The ways a VM's directory is exported.
const (
	ExportFUSE     Export = "fuse"     // a FUSE mount on the host
	ExportVirtiofs Export = "virtiofs" // a vhost-user-fs socket for QEMU
	ExportBoth     Export = "both"
)

// VM is a virtual machine on a server.
type VM struct {
	// Name is required and unique on its server; tiers.NoVM ("_host") is
	// reserved for applications with no VM and may not be declared.
	Name tiers.VM `toml:"name"`
	// Server is the declared [[server]] that runs it. Required.
	Server tiers.Server `toml:"server"`
	// Mount is where the host mounts the VM's backup directory; default
	// /srv/v2backup/{vm}.
	Mount string `toml:"mount"`
	// Export is fuse (default), virtiofs or both.
	Export Export `toml:"export"`
	// Socket is the vhost-user-fs socket (export virtiofs or both); default
	// /run/v2backup/{vm}.sock.
	Socket string `toml:"socket"`
	// GuestDir is the well-known directory inside the VM; default /backup.
	GuestDir string `toml:"guest_dir"`
}

// AppType is the kind of application, which decides its backup job.
type AppType string

// The application types of the seed.
const (
	TypeRails     AppType = "rails"
	TypeDrawMGT   AppType = "drawmgt"
	TypeMoinMoin  AppType = "moinmoin"
	TypeGit       AppType = "git"
	TypeCVS       AppType = "cvs"
	TypeMaildir   AppType = "maildir"
	TypeWordPress AppType = "wordpress"
	TypeFiles     AppType = "files"
)

// AppTypes lists every known type, in documentation order.
var AppTypes = []AppType{TypeRails, TypeDrawMGT, TypeMoinMoin, TypeGit, TypeCVS, TypeMaildir, TypeWordPress, TypeFiles}

// App is one application: a row of the seed's summary table.
type App struct {
	// Name is the short name of command lines and history files
	// (tiers.ParseAppName). Required, unique in the file.
	Name        string `toml:"name"`
	Description string `toml:"description"`
	// Server is the declared [[server]] it runs on. Required.
	Server tiers.Server `toml:"server"`
	// VM is the VM it runs in, declared on Server; left out in the file
	// means no VM, and the loader sets tiers.NoVM.
	VM tiers.VM `toml:"vm"`
	// Path is where the application lives on its VM or server (absolute).
	Path string `toml:"path"`
	// Relpath is required; no two applications of one server and VM may
	// have the same relpath or one inside the other's.
	Relpath tiers.Relpath `toml:"relpath"`
	// Type is required: one of AppTypes.
	Type AppType `toml:"type"`
	// Status is the seed's status column (e.g. "open", "closed"); default
	// "open".
	Status string `toml:"status"`
	// Schedule is the time of day its nightly job runs, e.g. "02:30".
	Schedule Clock `toml:"schedule"`
	// KeepDumps is how many database dumps stay in the live tree (the
	// snapshots keep older ones); default 3.
	KeepDumps int `toml:"keep_dumps"`
	// Database is the database to dump, where the type does not find it in
	// the application's own configuration (drawmgt), or to override it.
	Database *Database `toml:"database"`
	// Files lists paths (relative to Path, or absolute) and exclude
	// patterns, for type files or in addition to a type's own.
	Files *Files `toml:"files"`
	// Expect overrides the site's expectations field by field: a field
	// left out (or zero) keeps the site's (see Inventory.ExpectFor).
	Expect *Expect `toml:"expect"`
}

// Database is how a job reaches an application's database.
type Database struct {
	// Adapter is "mysql" (MariaDB/MySQL) or "postgresql"; empty: what the
	// application's own configuration says. Every field set here overrides
	// that configuration.
	Adapter string `toml:"adapter"`
	Name    string `toml:"name"`
	Host    string `toml:"host"`
	// Port is 1-65535; 0 or absent: the adapter's default.
	Port int `toml:"port"`
	// Socket is the server's absolute Unix socket path, instead of Host.
	Socket string `toml:"socket"`
	User   string `toml:"user"`
	// PasswordFile holds the password; it never goes on a command line.
	PasswordFile string `toml:"password_file"`
}

// Files is a list of paths with exclude patterns (rsync syntax).
type Files struct {
	Paths   []string `toml:"paths"`
	Exclude []string `toml:"exclude"`
}

// BackupServer pulls the local tiers of hosts into its remote tier. A
// machine may be both a [[server]] and a [[backup_server]]; then it has one
// partition.
type BackupServer struct {
	// Name is the FQDN. Required, unique among backup servers.
	Name tiers.Server `toml:"name"`
	// Partition overrides the site's partition on this backup server.
	Partition tiers.Partition `toml:"partition"`
	// Pulls lists the hosts it pulls, by the name of a declared [[server]],
	// each once.
	Pulls []tiers.Server `toml:"pulls"`
	// Parallel is how many hosts it pulls at once; default 1.
	Parallel int `toml:"parallel"`
	// Identity is the ssh private key; KnownHosts the host keys it trusts.
	// Both absolute paths; empty: ssh's own defaults.
	Identity   string `toml:"identity"`
	KnownHosts string `toml:"known_hosts"`
	// RsyncOptions are added to every pull's rsync command line.
	RsyncOptions []string `toml:"rsync_options"`
	// Retention overrides the site's retention for the remote tier; absent:
	// the site's (see Inventory.RetentionOf).
	Retention *Retention `toml:"retention"`
	// Listen is the local address of /metrics and the status page.
	Listen string `toml:"listen"`
}

// Clock is a time of day, written "HH:MM" in the file.
type Clock struct {
	Hour, Minute int
	Set          bool
}

// UnmarshalText parses "HH:MM".
func (c *Clock) UnmarshalText(b []byte) error {
	s := string(b)
	var h, m int
	if n, err := fmt.Sscanf(s, "%d:%d", &h, &m); err != nil || n != 2 || h < 0 || h > 23 || m < 0 || m > 59 || len(s) != 5 {
		return fmt.Errorf("invalid time of day %q: want HH:MM, 00:00 to 23:59", s)
	}
	*c = Clock{Hour: h, Minute: m, Set: true}
	return nil
}

// MarshalText writes "HH:MM".
func (c Clock) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// String writes "HH:MM", or "" when the clock is unset.
func (c Clock) String() string {
	if !c.Set {
		return ""
	}
	return fmt.Sprintf("%02d:%02d", c.Hour, c.Minute)
}

// On is the instant of this time of day on t's date, in t's location.
func (c Clock) On(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), c.Hour, c.Minute, 0, 0, t.Location())
}

// Next is the first instant of this time of day strictly after t.
func (c Clock) Next(t time.Time) time.Time {
	n := c.On(t)
	if !n.After(t) {
		n = c.On(t.AddDate(0, 0, 1))
	}
	return n
}

// Duration is a time.Duration written like "15m" or "1h30m" in the file.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil || v < 0 {
		return fmt.Errorf("invalid duration %q: want e.g. 15m, 1h30m", string(b))
	}
	d.Duration = v
	return nil
}

// MarshalText writes a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Error is a problem in an inventory file, at a place in it.
type Error struct {
	File         string
	Line, Column int    // 1-based; 0 when unknown
	Field        string // dotted path, e.g. "app[3].relpath"
	Reason       string
}

// Error is "file:line:column: field: reason", leaving out what is unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Reason)
	return b.String()
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

// Error is one line per problem.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}
