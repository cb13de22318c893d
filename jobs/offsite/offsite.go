// Package offsite copies chosen tiers to a mounted removable drive, verifies
// the copy, and records in the catalog which drive holds which data from
// when, so a rotation of drives can be followed.
//
// Layout on the drive, the same whatever machine wrote it:
//
//	DIR/v2backup/{server}/local/{vm}/{relpath}/...   a server's local tier
//	DIR/v2backup/{server}/local/SHA256SUMS            its manifest (sha256sum -c)
//	DIR/v2backup/{server}/local/SNAPSHOT.json         which snapshot it is
//	DIR/v2backup/history/backup-offsite+{server}-{yyyymmdd}
//	DIR/v2backup/CONTENTS.json                        what the drive holds
//	DIR/v2backup/DRIVE-ID                             only for a drive with no filesystem UUID
//
// A host copies its own local tier (its latest local snapshot); a backup
// server copies the hosts it pulls (their copies in its latest remote-tier
// snapshot), which are the same data: both land in {server}/local.
//
// Each copy is written beside the previous one (DIR/v2backup/.staging,
// unchanged files hard-linked from the previous copy), verified against
// the manifest, and only then exchanged with it. A drive that fills up, is
// unplugged or turns read-only mid-copy keeps its previous copy, and the
// error says so.
package offsite

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/google/renameio/v2"
	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/pull/sums"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/snapshot"
	"golang.org/x/sys/unix"
)

// Root is the directory on the drive that holds everything v2backup writes.
const Root = "v2backup"

// Source is one tier to copy.
type Source struct {
	Server tiers.Server
	// Tier is Local for this machine's own local tier, Remote for a host
	// this backup server pulls.
	Tier tiers.Tier
}

func (s Source) String() string { return string(s.Tier) + " tier of " + string(s.Server) }

// Options configures Copy.
type Options struct {
	// Drive is the drive's mount point (or a directory standing in for it).
	Drive string
	// Partition is this machine's backup partition.
	Partition tiers.Partition
	Sources   []Source
	DB        *catalog.DB
	// Label overrides the drive's filesystem label in the catalog.
	Label string
	// Rsync is the program; empty: "rsync" from PATH.
	Rsync  string
	Now    func() time.Time
	Logger *slog.Logger

	// started, if set, is told about each rsync process, and extraArgs
	// go on its command line (tests slow it down to act mid-copy).
	started   func(src Source, staging string, pid int)
	extraArgs []string
}

// Copied is one verified copy on the drive.
type Copied struct {
	Source   Source
	Snapshot string // the data's snapshot (the host's snapshot name)
	Dir      string // DIR/v2backup/{server}/local
	Files    int64
	Bytes    int64
	CopyID   int64
}

// Result is what Copy did.
type Result struct {
	Drive  Drive
	Copies []Copied
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) log() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

func (o *Options) check() error {
	if o.Drive == "" || !filepath.IsAbs(o.Drive) {
		return fmt.Errorf("offsite: drive %q must be an absolute path", o.Drive)
	}
	if _, err := tiers.ParsePartition(string(o.Partition)); err != nil {
		return fmt.Errorf("offsite: %w", err)
	}
	if o.DB == nil {
		return errors.New("offsite: no catalog given")
	}
	if len(o.Sources) == 0 {
		return errors.New("offsite: nothing to copy (no tier or server chosen)")
	}
	seen := map[tiers.Server]bool{}
	for _, s := range o.Sources {
		if _, err := tiers.ParseServer(string(s.Server)); err != nil {
			return fmt.Errorf("offsite: %w", err)
		}
		if _, err := tiers.ParseTier(string(s.Tier)); err != nil {
			return fmt.Errorf("offsite: %s: %w", s.Server, err)
		}
		if seen[s.Server] {
			return fmt.Errorf("offsite: %s chosen twice; the drive holds one copy of each server", s.Server)
		}
		seen[s.Server] = true
	}
	st, err := os.Stat(o.Drive)
	if err != nil {
		return fmt.Errorf("offsite: drive %s: %w (is it mounted?)", o.Drive, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("offsite: drive %s is not a directory", o.Drive)
	}
	return nil
}

// Copy copies every source to the drive in turn. It stops at the first
// failure (a full or vanished drive would fail the rest too); copies made
// before it stay recorded.
func Copy(ctx context.Context, o Options) (*Result, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	base := filepath.Join(o.Drive, Root)
	if err := os.MkdirAll(filepath.Join(base, ".staging"), 0o755); err != nil {
		return nil, driveError(o.Drive, stepPrepare, "", err, "")
	}
	unlock, err := snapshot.TryLock(filepath.Join(base, ".lock"))
	if err != nil {
		return nil, fmt.Errorf("offsite: drive %s is in use by another copy: %w", o.Drive, err)
	}
	defer unlock()
	drive, err := Identify(o.Drive)
	if err != nil {
		return nil, err
	}
	if o.Label != "" {
		drive.Label = o.Label
	}
	res := &Result{Drive: drive}
	m, err := o.DB.SeenMedium(ctx, drive.Label, drive.UUID, o.now())
	if err != nil {
		return res, err
	}
	res.Drive.MediaID = m.ID
	for _, src := range o.Sources {
		c, err := o.copyOne(ctx, base, src, &res.Drive)
		if err != nil {
			return res, err
		}
		res.Copies = append(res.Copies, c)
	}
	return res, nil
}

// source finds what to copy: an immutable snapshot, never the live tier.
func (o *Options) source(ctx context.Context, src Source) (dir, snap string, manifest []sums.Entry, err error) {
	switch src.Tier {
	case tiers.Local:
		latest, ok, err := snapshot.Latest(o.Partition.SnapshotDir(tiers.Local))
		if err != nil {
			return "", "", nil, err
		}
		if !ok {
			return "", "", nil, fmt.Errorf("offsite: %s: no snapshot in %s yet", src, o.Partition.SnapshotDir(tiers.Local))
		}
		manifest, err := o.localManifest(ctx, src.Server, latest)
		return latest.Path, latest.Name, manifest, err
	default:
		snapDir := o.Partition.SnapshotDir(tiers.Remote)
		latest, ok, err := snapshot.Latest(snapDir)
		if err != nil {
			return "", "", nil, err
		}
		if !ok {
			return "", "", nil, fmt.Errorf("offsite: %s: no snapshot in %s yet (pull first)", src, snapDir)
		}
		dir := filepath.Join(latest.Path, string(src.Server))
		desc, err := sums.ReadDescription(filepath.Join(dir, sums.DescName))
		if err != nil {
			return "", "", nil, fmt.Errorf("offsite: %s in snapshot %s: %w", src, latest.Name, err)
		}
		manifest, err := sums.ReadFile(filepath.Join(dir, sums.SumsName))
		if err != nil {
			return "", "", nil, fmt.Errorf("offsite: %s in snapshot %s: %w", src, latest.Name, err)
		}
		return dir, desc.Snapshot, manifest, nil
	}
}

// localManifest is the local snapshot's manifest from the catalog, or, if
// the catalog lacks it or some of its hashes, the snapshot hashed now.
func (o *Options) localManifest(ctx context.Context, server tiers.Server, snap snapshot.Info) ([]sums.Entry, error) {
	cs, err := o.DB.SnapshotByName(ctx, tiers.Local, string(server), snap.Name)
	if err == nil {
		var out []sums.Entry
		complete := true
		err = o.DB.WalkManifest(ctx, cs.ID, "", func(e catalog.ManifestEntry) error {
			if e.SHA256 == "" {
				complete = false
			}
			out = append(out, sums.Entry{Path: e.Path, SHA256: e.SHA256})
			return nil
		})
		if err != nil {
			return nil, err
		}
		if complete {
			return out, nil
		}
	} else if !errors.Is(err, catalog.ErrNotFound) {
		return nil, err
	}
	o.log().Info("offsite: hashing the snapshot, the catalog has no complete manifest of it", "snapshot", snap.Path)
	files, err := sums.Hash(ctx, snap.Path, sums.Options{})
	if err != nil {
		return nil, err
	}
	return sums.Entries(files), nil
}

func (o *Options) copyOne(ctx context.Context, base string, src Source, drive *Drive) (Copied, error) {
	c := Copied{Source: src, Dir: filepath.Join(base, string(src.Server), string(tiers.Local))}
	dir, snap, manifest, err := o.source(ctx, src)
	if err != nil {
		return c, err
	}
	c.Snapshot = snap
	what := fmt.Sprintf("%s (snapshot %s)", src, snap)
	staging := filepath.Join(base, ".staging", string(src.Server))
	previous := previousDate(c.Dir)
	fail := func(step string, err error) (Copied, error) {
		derr := driveError(o.Drive, step, what, err, previous)
		// Free the drive; the previous copy is not under staging.
		if rerr := os.RemoveAll(staging); rerr != nil {
			o.log().Warn("offsite: could not remove the failed copy", "dir", staging, "err", rerr)
		}
		return c, derr
	}
	hasCurrent, err := isDir(c.Dir)
	if err != nil {
		return fail("copying", err)
	}
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return fail("copying", err)
	}
	if err := os.MkdirAll(filepath.Dir(c.Dir), 0o755); err != nil {
		return fail("copying", err)
	}
	if err := o.rsync(ctx, src, dir, staging, c.Dir, hasCurrent); err != nil {
		return fail("copying", err)
	}
	if src.Tier == tiers.Local {
		// A local tier has no manifest files of its own: write them, so
		// every copy on a drive can be checked with sha256sum -c alone.
		var n, b int64
		for _, e := range manifest {
			n++
			if st, err := os.Lstat(filepath.Join(staging, e.Path)); err == nil {
				b += st.Size()
			}
		}
		if err := sums.WriteFile(staging, manifest); err != nil {
			return fail("writing the manifest", err)
		}
		if err := sums.WriteDescription(staging, sums.Description{Server: string(src.Server), Snapshot: snap,
			Time: snapTime(snap), Files: n, Bytes: b, Manifest: sums.SumsName}); err != nil {
			return fail("writing the manifest", err)
		}
	}
	// A pulled host's copy carries the host's catalog (CATALOG.db, checked
	// against SNAPSHOT.json by the pull): it goes along, unlisted.
	files, err := sums.Verify(ctx, staging, manifest, sums.Options{Ignore: []string{sums.SumsName, sums.DescName, tiers.ShippedCatalogName}})
	if err != nil {
		return fail("verifying", err)
	}
	for _, f := range files {
		c.Files++
		c.Bytes += f.Size
	}
	if err := exchange(staging, c.Dir, hasCurrent); err != nil {
		return fail("switching to the new copy", err)
	}
	if hasCurrent {
		if err := os.RemoveAll(staging); err != nil {
			o.log().Warn("offsite: could not remove the replaced copy", "dir", staging, "err", err)
		}
	}

	now := o.now()
	id, err := o.DB.RecordCopy(ctx, catalog.Copy{MediaID: drive.MediaID, Server: string(src.Server), Tier: src.Tier,
		Snapshot: snap, At: now, Files: c.Files, Bytes: c.Bytes, VerifiedAt: now})
	if err != nil {
		return c, err
	}
	c.CopyID = id
	h := snapshot.History{App: "offsite+" + string(src.Server), Server: string(src.Server), VM: "", Relpath: "",
		Snapshot: snap, Status: snapshot.StatusComplete, Files: c.Files, Bytes: c.Bytes, Changed: 0,
		Note: fmt.Sprintf("%s copied to drive %s (%s) and verified", src, drive.Label, drive.UUID), Written: now}
	// The copy is in place and recorded; what fails now only needs saying.
	err = os.MkdirAll(filepath.Join(base, "history"), 0o755)
	if err == nil {
		err = snapshot.WriteHistory(filepath.Join(base, "history"), h)
	}
	if err == nil {
		err = writeContents(base, c, now)
	}
	if err != nil {
		return c, fmt.Errorf("drive %s: %s copied and verified, but: %w", o.Drive, what, err)
	}
	o.log().Info("offsite: copied", "drive", o.Drive, "server", src.Server, "snapshot", snap, "files", c.Files, "bytes", c.Bytes)
	return c, nil
}

func snapTime(name string) string {
	t, err := tiers.ParseSnapshotName(name, time.Local)
	if err != nil {
		return ""
	}
	return t.Format(time.RFC3339)
}

// previousDate is the snapshot of the copy at dir, for messages.
func previousDate(dir string) string {
	d, err := sums.ReadDescription(filepath.Join(dir, sums.DescName))
	if err != nil {
		return ""
	}
	return d.Snapshot
}

func isDir(p string) (bool, error) {
	st, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !st.IsDir() {
		return false, fmt.Errorf("%s is not a directory", p)
	}
	return true, nil
}

func (o *Options) rsync(ctx context.Context, src Source, from, staging, current string, hasCurrent bool) error {
	bin := o.Rsync
	if bin == "" {
		bin = "rsync"
	}
	// No -H: the manifest lists paths, and hard links inside a snapshot
	// are rare; --link-dest makes unchanged files links to the previous
	// copy, so a rotation writes only what changed.
	// --modify-window=-1: same-second rewrites of same-size files are copied.
	args := []string{"-a", "--delete", "--numeric-ids", "--modify-window=-1"}
	if hasCurrent {
		args = append(args, "--link-dest="+current)
	}
	args = append(args, o.extraArgs...)
	args = append(args, from+"/", staging+"/")
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	if o.started != nil {
		o.started(src, staging, cmd.Process.Pid)
	}
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &rsyncError{err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return nil
}

type rsyncError struct {
	err    error
	stderr string
}

func (e *rsyncError) Error() string {
	lines := strings.Split(e.stderr, "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return fmt.Sprintf("rsync: %v: %s", e.err, strings.Join(lines, " | "))
}

// exchange puts the verified staging tree in place of the current copy
// atomically (see the pull package for why RENAME_EXCHANGE), after making
// the data durable.
func exchange(staging, current string, hasCurrent bool) error {
	fd, err := unix.Open(staging, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Syncfs(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("syncfs %s: %w", staging, err)
	}
	if hasCurrent {
		err = unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, current, unix.RENAME_EXCHANGE)
	} else {
		err = unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, current, unix.RENAME_NOREPLACE)
	}
	if err != nil {
		return fmt.Errorf("moving %s to %s: %w", staging, current, err)
	}
	for _, d := range []string{filepath.Dir(current), filepath.Dir(staging)} {
		fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Fsync(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("fsync %s: %w", d, err)
		}
	}
	return nil
}

const stepPrepare = "preparing the drive"

// DriveError is a failed copy onto a drive, diagnosed.
type DriveError struct {
	Drive string
	// Problem is "no space left", "read-only", "gone" or "failed".
	Problem  string
	Step     string // "copying", "verifying", ...
	What     string // the source being copied
	Previous string // snapshot of the copy kept on the drive, "" if none
	Err      error
}

func (e *DriveError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "drive %s: ", e.Drive)
	doing := e.Step
	if e.What != "" {
		doing += " " + e.What
	}
	switch e.Problem {
	case "no space left":
		fmt.Fprintf(&b, "no space left while %s", doing)
	case "read-only":
		fmt.Fprintf(&b, "turned read-only while %s", doing)
	case "gone":
		fmt.Fprintf(&b, "gone (unplugged or unmounted?) while %s", doing)
	default:
		fmt.Fprintf(&b, "%s failed", doing)
	}
	if e.Previous != "" {
		fmt.Fprintf(&b, "; previous copy from %s kept", e.Previous)
	} else {
		b.WriteString("; there was no previous copy")
	}
	fmt.Fprintf(&b, " (%v)", e.Err)
	return b.String()
}

func (e *DriveError) Unwrap() error { return e.Err }

// driveError looks at the drive to say why a step failed: the message of
// a tool is not enough (rsync may only report a broken pipe).
func driveError(drive, step, what string, err error, previous string) error {
	e := &DriveError{Drive: drive, Problem: "failed", Step: step, What: what, Previous: previous, Err: err}
	msg := err.Error()
	var st unix.Statfs_t
	serr := unix.Statfs(drive, &st)
	switch {
	case serr != nil || (step != stepPrepare && !sameMount(drive)):
		e.Problem = "gone"
	case errors.Is(err, syscall.EROFS) || strings.Contains(msg, "Read-only file system") || st.Flags&unix.ST_RDONLY != 0:
		e.Problem = "read-only"
	case errors.Is(err, syscall.ENOSPC) || strings.Contains(msg, "No space left on device") || st.Bavail == 0:
		e.Problem = "no space left"
	}
	return e
}

// sameMount reports whether drive is still there as a directory.
func sameMount(drive string) bool {
	st, err := os.Stat(filepath.Join(drive, Root))
	return err == nil && st.IsDir()
}

// Contents is DIR/v2backup/CONTENTS.json: what the drive holds, readable
// without the catalog (a drive found in a drawer).
type Contents struct {
	Copies []ContentsEntry `json:"copies"`
}

// ContentsEntry is one server's copy on the drive.
type ContentsEntry struct {
	Server   string    `json:"server"`
	Tier     string    `json:"from_tier"`
	Snapshot string    `json:"snapshot"`
	Copied   time.Time `json:"copied"`
	Files    int64     `json:"files"`
	Bytes    int64     `json:"bytes"`
}

func writeContents(base string, c Copied, at time.Time) error {
	p := filepath.Join(base, "CONTENTS.json")
	var cur Contents
	if b, err := os.ReadFile(p); err == nil {
		json.Unmarshal(b, &cur) // a damaged file is rewritten
	}
	out := cur.Copies[:0]
	for _, e := range cur.Copies {
		if e.Server != string(c.Source.Server) {
			out = append(out, e)
		}
	}
	out = append(out, ContentsEntry{Server: string(c.Source.Server), Tier: string(c.Source.Tier), Snapshot: c.Snapshot,
		Copied: at.UTC(), Files: c.Files, Bytes: c.Bytes})
	sort.Slice(out, func(i, j int) bool { return out[i].Server < out[j].Server })
	b, _ := json.MarshalIndent(Contents{Copies: out}, "", "  ")
	return renameio.WriteFile(p, append(b, '\n'), 0o644, renameio.WithTempDir(base))
}

// Drive identifies a drive.
type Drive struct {
	Dir   string
	UUID  string // filesystem UUID, or the generated ID in DRIVE-ID
	Label string // filesystem label, or the directory's name
	// Generated is true when the ID comes from DIR/v2backup/DRIVE-ID: the
	// directory is not a mount point, or its filesystem has no UUID.
	Generated bool
	MediaID   int64 // the catalog's id, once recorded
}

// Identify names the drive mounted at dir: its filesystem UUID and label
// (findmnt), or, for a directory that is not a mount point or a
// filesystem without UUID (tmpfs), an ID generated once and kept in
// DIR/v2backup/DRIVE-ID.
func Identify(dir string) (Drive, error) {
	d := Drive{Dir: dir}
	out, err := exec.Command("findmnt", "-J", "-o", "TARGET,UUID,LABEL", "--mountpoint", dir).Output()
	if err == nil {
		var fm struct {
			Filesystems []struct {
				Target string  `json:"target"`
				UUID   *string `json:"uuid"`
				Label  *string `json:"label"`
			} `json:"filesystems"`
		}
		if json.Unmarshal(out, &fm) == nil && len(fm.Filesystems) > 0 {
			f := fm.Filesystems[0]
			if f.UUID != nil {
				d.UUID = *f.UUID
			}
			if f.Label != nil {
				d.Label = *f.Label
			}
		}
	}
	if d.Label == "" {
		d.Label = filepath.Base(dir)
	}
	if d.UUID != "" {
		return d, nil
	}
	idFile := filepath.Join(dir, Root, "DRIVE-ID")
	b, err := os.ReadFile(idFile)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if len(id) != 36 || strings.Trim(id, "0123456789abcdef-") != "" {
			return d, fmt.Errorf("offsite: %s: %q is not a drive ID (want a lower-case UUID)", idFile, id)
		}
		d.UUID, d.Generated = id, true
		return d, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return d, fmt.Errorf("offsite: %w", err)
	}
	var r [16]byte
	rand.Read(r[:])
	r[6] = r[6]&0x0f | 0x40 // version 4
	r[8] = r[8]&0x3f | 0x80 // variant 10
	h := hex.EncodeToString(r[:])
	id := h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	if err := os.MkdirAll(filepath.Dir(idFile), 0o755); err != nil {
		return d, driveError(dir, stepPrepare, "", err, "")
	}
	if err := renameio.WriteFile(idFile, []byte(id+"\n"), 0o644); err != nil {
		return d, driveError(dir, "writing "+idFile, "", err, "")
	}
	d.UUID, d.Generated = id, true
	return d, nil
}
