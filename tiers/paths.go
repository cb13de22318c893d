package tiers

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Tier is one level of backup data on a partition.
type Tier string

// The tiers a partition holds.
const (
	// Local is a host's own backups: {partition}/local/{vm}/{relpath}.
	Local Tier = "local"
	// Remote is a backup server's copies of hosts' local tiers:
	// {partition}/remote/{server}/{vm}/{relpath}.
	Remote Tier = "remote"
)

// ParseTier accepts "local" or "remote".
func ParseTier(s string) (Tier, error) {
	switch Tier(s) {
	case Local, Remote:
		return Tier(s), nil
	}
	return "", &NameError{"tier", s, `must be "local" or "remote"`}
}

// Partition is the absolute, clean path of a backup partition, typically
// /v01/backup. Every path v2backup uses lies under one.
type Partition string

// ParsePartition validates a partition path: absolute and clean.
func ParsePartition(s string) (Partition, error) {
	switch {
	case s == "":
		return "", &NameError{"partition", s, "must not be empty"}
	case !filepath.IsAbs(s):
		return "", &NameError{"partition", s, "must be an absolute path"}
	case filepath.Clean(s) != s:
		return "", &NameError{"partition", s, fmt.Sprintf("must be a clean path (%s)", filepath.Clean(s))}
	case len(s) >= MaxPath:
		return "", &NameError{"partition", s, "is over the system's path limit"}
	}
	return Partition(s), nil
}

func (p Partition) join(elem ...string) string {
	return filepath.Join(append([]string{string(p)}, elem...)...)
}

// LocalRoot is {partition}/local, the whole local tier; a backup server
// copies it to RemoteServer(server).
func (p Partition) LocalRoot() string { return p.join(string(Local)) }

// LocalVM is {partition}/local/{vm}, the backing directory of a VM's mount.
func (p Partition) LocalVM(vm VM) string { return p.join(string(Local), string(vm)) }

// Local is {partition}/local/{vm}/{relpath}, an application's local backup.
func (p Partition) Local(vm VM, rel Relpath) string {
	return p.join(string(Local), string(vm), string(rel))
}

// RemoteRoot is {partition}/remote.
func (p Partition) RemoteRoot() string { return p.join(string(Remote)) }

// RemoteServer is {partition}/remote/{server}: a copy of that server's
// whole {partition}/local.
func (p Partition) RemoteServer(s Server) string { return p.join(string(Remote), string(s)) }

// Remote is {partition}/remote/{server}/{vm}/{relpath}.
func (p Partition) Remote(s Server, vm VM, rel Relpath) string {
	return p.join(string(Remote), string(s), string(vm), string(rel))
}

// TierRoot is {partition}/{tier}.
func (p Partition) TierRoot(t Tier) string { return p.join(string(t)) }

// SnapshotDir is {partition}/snapshots/{tier}, which holds one hard-link
// tree per snapshot of that tier.
func (p Partition) SnapshotDir(t Tier) string { return p.join("snapshots", string(t)) }

// Snapshot is {partition}/snapshots/{tier}/{name}.
func (p Partition) Snapshot(t Tier, name string) string {
	return p.join("snapshots", string(t), name)
}

// SnapshotLocal is where an application lives inside a local-tier snapshot:
// {partition}/snapshots/local/{name}/{vm}/{relpath}.
func (p Partition) SnapshotLocal(name string, vm VM, rel Relpath) string {
	return p.join("snapshots", string(Local), name, string(vm), string(rel))
}

// HistoryDir is the default directory of monitoring history files,
// {partition}/history; the inventory may name another.
func (p Partition) HistoryDir() string { return p.join("history") }

// StateDir is {partition}/.v2backup: the catalog, locks and staging trees.
func (p Partition) StateDir() string { return p.join(".v2backup") }

// CatalogPath is the default catalog database, {partition}/.v2backup/catalog.db.
func (p Partition) CatalogPath() string { return p.join(".v2backup", "catalog.db") }

// StagingDir is where a pull from server is assembled before it replaces
// RemoteServer(server): {partition}/.v2backup/staging/{server}.
func (p Partition) StagingDir(s Server) string { return p.join(".v2backup", "staging", string(s)) }

// TierPath is a path relative to a tier root, as the catalog stores it:
// "{vm}/{relpath}" for the local tier.
func TierPath(vm VM, rel Relpath) string { return string(vm) + "/" + string(rel) }

// SnapshotLayout is the time layout of snapshot names: sortable, no colons
// (they break rsync's host:path syntax and Windows/FAT USB drives).
const SnapshotLayout = "2006-01-02T150405"

// SnapshotName names a snapshot taken at t, in t's location.
func SnapshotName(t time.Time) string { return t.Format(SnapshotLayout) }

// ParseSnapshotName returns the time a snapshot name stands for, in loc.
func ParseSnapshotName(name string, loc *time.Location) (time.Time, error) {
	t, err := time.ParseInLocation(SnapshotLayout, name, loc)
	if err != nil || strings.Contains(name, ":") {
		return time.Time{}, &NameError{"snapshot", name, "must look like " + SnapshotLayout + " (e.g. 2026-11-28T050000)"}
	}
	return t, nil
}

// HistoryFile is the seed's monitoring file name for an application's backup
// on day t: backup-{name}-{yyyymmdd}.
func HistoryFile(name string, t time.Time) string {
	return "backup-" + name + "-" + t.Format("20060102")
}

// ShippedCatalogName is the file name of a host's catalog in its remote
// view (beside SHA256SUMS and SNAPSHOT.json), and so in every backup
// server's copy of that view. No VM name can take it (VM names are lower
// case with no dot).
const ShippedCatalogName = "CATALOG.db"

// HostCatalog is where a backup server keeps the catalog of host s that
// came with its last good pull: {partition}/remote/{s}/CATALOG.db.
func (p Partition) HostCatalog(s Server) string {
	return p.join(string(Remote), string(s), ShippedCatalogName)
}
