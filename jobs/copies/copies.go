// Package copies answers "where are the copies of this application from
// that night": the host's local snapshot, each backup server's remote
// copy, each off-site drive, with the files, bytes, digest and last
// verification of each.
//
// A night is a snapshot of the host's local tier. The host's catalog
// (its own on the host, the one shipped with the last pull on a backup
// server) lists its local snapshots and its drives; the catalog of a
// backup server lists its pulls (which host snapshot each copied, into
// which remote-tier snapshot) and its own drives. The digest
// (catalog.AppDigest) is computed from each place's manifest with paths
// relative to the application's directory, so equal digests mean the
// same files with the same content.
package copies

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// Kind is where a copy lives.
type Kind string

// Kinds of copies.
const (
	// Local is the host's own snapshot of its local tier.
	Local Kind = "local"
	// Remote is a backup server's copy, in a snapshot of its remote tier.
	Remote Kind = "remote"
	// Drive is an off-site drive's copy of one of those snapshots.
	Drive Kind = "drive"
)

// Copy is one copy of an application's night.
type Copy struct {
	Kind Kind `json:"kind"`
	// Where is the host (Local), the backup server (Remote) or the
	// drive's label (Drive).
	Where string `json:"where"`
	// DriveUUID is the drive's filesystem UUID (Drive only).
	DriveUUID string `json:"drive_uuid,omitempty"`
	// Server, Tier and Snapshot name the snapshot that holds the copy:
	// the host's local-tier snapshot, or the backup server's remote-tier
	// snapshot; for a drive, the snapshot as the drive's copy was
	// recorded (a host's own local snapshot, or on a backup server the
	// pulled host and its snapshot name).
	Server   string     `json:"server"`
	Tier     tiers.Tier `json:"tier"`
	Snapshot string     `json:"snapshot"`
	// State is how the application entered that snapshot: complete, or
	// carried from an earlier state.
	State  catalog.AppState `json:"state"`
	Files  int64            `json:"files"`
	Bytes  int64            `json:"bytes"`
	Digest string           `json:"digest"`
	// Unhashed counts files whose checksum the manifest lacks.
	Unhashed int64 `json:"unhashed,omitempty"`
	// VerifiedAt is when every file of the copy was last checked against
	// its checksum: the last `v2backup verify` of the whole snapshot for a
	// host's own snapshot, the end of the pull (or a later verify of the
	// remote snapshot) for a backup server's copy, the copy's verification
	// for a drive; zero = never verified.
	VerifiedAt time.Time `json:"verified_at,omitzero"`
}

// Night is one night of an application and its copies.
type Night struct {
	// Snapshot is the host's local-tier snapshot of that night.
	Snapshot string `json:"snapshot"`
	// Day is the night's date, YYYY-MM-DD, in the inventory's zone.
	Day    string `json:"day"`
	Copies []Copy `json:"copies"`
	// Mismatch is set when two copies have different digests.
	Mismatch bool `json:"mismatch,omitempty"`
}

// Options says what to look up.
type Options struct {
	Inventory *inventory.Inventory
	// App is the application's name in the inventory.
	App string
	// At selects the nights: "" every night known, a day (2026-11-28) or
	// a snapshot name (2026-11-28T050000).
	At string
	// HostDB is the application's host's catalog: its own on the host,
	// the shipped one on a backup server; nil if there is none yet.
	HostDB *catalog.DB
	// Own is the catalog of this machine, for its pulls and drives; nil
	// or the same as HostDB on the host itself.
	Own *catalog.DB
	// Location is the zone of days and snapshot names; nil = time.Local.
	Location *time.Location
}

// Errors Find wraps, for callers that map them to exit codes.
var (
	// ErrNoCopy: no copy exists of the night asked.
	ErrNoCopy = errors.New("no copy")
	// ErrUnknownApp: the inventory has no such application.
	ErrUnknownApp = errors.New("unknown application")
	// ErrBadAt: At is neither a day nor a snapshot name.
	ErrBadAt = errors.New("bad night")
)

// Find lists the nights of o.App selected by o.At, newest first, each
// with its copies. An unknown application or a malformed At is an error,
// as is At naming a night with no copy (wrapping ErrNoCopy).
func Find(ctx context.Context, o Options) ([]Night, error) {
	app, ok := o.Inventory.App(o.App)
	if !ok {
		return nil, fmt.Errorf("%s: no application %q (see v2backup inventory): %w", o.Inventory.File, o.App, ErrUnknownApp)
	}
	loc := o.Location
	if loc == nil {
		loc = time.Local
	}
	match, err := selector(o.At, loc)
	if err != nil {
		return nil, err
	}
	host := string(app.Server)
	localPrefix := tiers.TierPath(app.VM, app.Relpath) // the loader set NoVM
	f := finder{o: o, app: o.App, digests: map[digestKey]catalog.Digest{}}

	nights := map[string]*Night{}
	night := func(name string) *Night {
		n := nights[name]
		if n == nil {
			day := ""
			if t, err := tiers.ParseSnapshotName(name, loc); err == nil {
				day = t.Format(time.DateOnly)
			}
			n = &Night{Snapshot: name, Day: day}
			nights[name] = n
		}
		return n
	}

	// The host's own snapshots, and its drives.
	if o.HostDB != nil {
		hist, err := o.HostDB.AppHistory(ctx, tiers.Local, host, o.App)
		if err != nil {
			return nil, err
		}
		for _, h := range hist {
			if !match(h.Snapshot.Name) {
				continue
			}
			c, err := f.copyOf(ctx, o.HostDB, h, localPrefix)
			if err != nil {
				return nil, err
			}
			c.Kind, c.Where = Local, host
			if c.VerifiedAt, err = o.HostDB.SnapshotVerified(ctx, h.Snapshot.ID); err != nil {
				return nil, err
			}
			n := night(h.Snapshot.Name)
			n.Copies = append(n.Copies, c)
			drives, err := f.drivesOf(ctx, o.HostDB, tiers.Local, host, h.Snapshot.Name, c)
			if err != nil {
				return nil, err
			}
			n.Copies = append(n.Copies, drives...)
		}
	}

	// This backup server's copies of the host, and their drives.
	if o.Own != nil && o.Own != o.HostDB {
		pulls, err := o.Own.PullsOfHostSnapshot(ctx, host, "")
		if err != nil {
			return nil, err
		}
		seen, drivesDone := map[string]bool{}, map[string]bool{}
		for _, p := range pulls {
			if !match(p.HostSnapshot) || p.RemoteSnapshot == "" {
				continue
			}
			key := p.BackupServer + "/" + p.RemoteSnapshot
			if seen[key] {
				continue
			}
			seen[key] = true
			rs, err := o.Own.SnapshotByName(ctx, tiers.Remote, p.BackupServer, p.RemoteSnapshot)
			if errors.Is(err, catalog.ErrNotFound) {
				continue // pruned by retention: that copy is gone
			}
			if err != nil {
				return nil, err
			}
			sa, ok, err := o.Own.AppInSnapshot(ctx, rs.ID, o.App)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			c, err := f.copyOf(ctx, o.Own, sa, host+"/"+localPrefix)
			if err != nil {
				return nil, err
			}
			c.Kind, c.Where, c.VerifiedAt = Remote, p.BackupServer, p.End
			// A later `verify` of the remote snapshot is a later check.
			if at, err := o.Own.SnapshotVerified(ctx, rs.ID); err != nil {
				return nil, err
			} else if at.After(c.VerifiedAt) {
				c.VerifiedAt = at
			}
			n := night(p.HostSnapshot)
			n.Copies = append(n.Copies, c)
			if drivesDone[p.HostSnapshot] {
				continue
			}
			// A backup server's drive copy of a host is recorded under the
			// host and its snapshot (jobs/offsite); it was taken from the
			// newest remote copy of that snapshot, listed first here.
			drivesDone[p.HostSnapshot] = true
			drives, err := f.drivesOf(ctx, o.Own, tiers.Remote, host, p.HostSnapshot, c)
			if err != nil {
				return nil, err
			}
			n.Copies = append(n.Copies, drives...)
		}
	}

	out := make([]Night, 0, len(nights))
	for _, n := range nights {
		sort.SliceStable(n.Copies, func(i, j int) bool { return kindOrder(n.Copies[i].Kind) < kindOrder(n.Copies[j].Kind) })
		for _, c := range n.Copies[1:] {
			if c.Digest != n.Copies[0].Digest {
				n.Mismatch = true
			}
		}
		out = append(out, *n)
	}
	slices.SortFunc(out, func(a, b Night) int { return strings.Compare(b.Snapshot, a.Snapshot) })
	if len(out) == 0 && o.At != "" {
		return nil, fmt.Errorf("application %s: no copy of the night %s (%w)", o.App, o.At, ErrNoCopy)
	}
	return out, nil
}

func kindOrder(k Kind) int {
	switch k {
	case Local:
		return 0
	case Remote:
		return 1
	}
	return 2
}

// selector returns whether a snapshot name is a night At asks for.
func selector(at string, loc *time.Location) (func(string) bool, error) {
	if at == "" {
		return func(string) bool { return true }, nil
	}
	if _, err := tiers.ParseSnapshotName(at, loc); err == nil {
		return func(name string) bool { return name == at }, nil
	}
	if _, err := time.ParseInLocation(time.DateOnly, at, loc); err == nil {
		// Snapshot names start with their day, in the same zone.
		return func(name string) bool { return len(name) > len(at) && name[:len(at)] == at && name[len(at)] == 'T' }, nil
	}
	return nil, fmt.Errorf("--at %q: must be a day (2026-11-28) or a snapshot name (2026-11-28T050000): %w", at, ErrBadAt)
}

type digestKey struct {
	db *catalog.DB
	id int64
}

type finder struct {
	o       Options
	app     string
	digests map[digestKey]catalog.Digest
}

// copyOf fills a copy from an application's entry in a snapshot.
func (f *finder) copyOf(ctx context.Context, db *catalog.DB, sa catalog.SnapshotApp, prefix string) (Copy, error) {
	c := Copy{Server: sa.Snapshot.Server, Tier: sa.Snapshot.Tier, Snapshot: sa.Snapshot.Name, State: sa.State,
		Files: sa.Files, Bytes: sa.Bytes}
	key := digestKey{db, sa.Snapshot.ID}
	d, ok := f.digests[key]
	if !ok {
		sha, stored, err := db.StoredAppDigest(ctx, sa.Snapshot.ID, f.app)
		if err != nil {
			return c, err
		}
		if stored {
			d = catalog.Digest{SHA256: sha, Files: sa.Files, Bytes: sa.Bytes}
		} else if d, err = db.AppDigest(ctx, sa.Snapshot.ID, prefix); err != nil {
			return c, err
		}
		f.digests[key] = d
	}
	c.Digest, c.Unhashed = d.SHA256, d.Unhashed
	return c, nil
}

// drivesOf lists the off-site copies db records of snapshot name of tier
// on server, as copies of c.
func (f *finder) drivesOf(ctx context.Context, db *catalog.DB, tier tiers.Tier, server, name string, c Copy) ([]Copy, error) {
	mcs, err := db.CopiesOfSnapshot(ctx, tier, server, name)
	if err != nil {
		return nil, err
	}
	var out []Copy
	for _, mc := range mcs {
		d := c
		d.Kind, d.Where, d.DriveUUID, d.VerifiedAt = Drive, mc.Medium.Label, mc.Medium.FSUUID, mc.Copy.VerifiedAt
		d.Server, d.Tier, d.Snapshot = mc.Copy.Server, mc.Copy.Tier, mc.Copy.Snapshot
		out = append(out, d)
	}
	return out, nil
}
