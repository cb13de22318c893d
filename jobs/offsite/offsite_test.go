package offsite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/pull/sums"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/snapshot"
)

const host tiers.Server = "zg-3.softxs.ch"

type fixture struct {
	part  tiers.Partition
	db    *catalog.DB
	clock time.Time
}

func newFixture(t *testing.T, files map[string]string) *fixture {
	f := &fixture{part: tiers.Partition(t.TempDir()), clock: time.Date(2026, 11, 28, 5, 0, 0, 0, time.Local)}
	db, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f.db = db
	f.write(t, files)
	f.snapshot(t)
	return f
}

func (f *fixture) write(t *testing.T, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(f.part.LocalRoot(), p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.Remove(full)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) snapshot(t *testing.T) string {
	t.Helper()
	name := snapshot.Name(f.clock)
	f.clock = f.clock.Add(24 * time.Hour)
	if _, err := snapshot.Create(context.Background(), snapshot.Options{
		Source: f.part.LocalRoot(), SnapDir: f.part.SnapshotDir(tiers.Local), Name: name,
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := snapshot.UpdateLatest(f.part.SnapshotDir(tiers.Local)); err != nil {
		t.Fatal(err)
	}
	return name
}

func (f *fixture) opts(drive string) Options {
	return Options{Drive: drive, Partition: f.part, DB: f.db, Sources: []Source{{host, tiers.Local}},
		Now: func() time.Time { return f.clock }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

var day1 = map[string]string{
	"web/demo.softxs.ch/hydro/db/dump.sql": "CREATE TABLE t;\n",
	"web/demo.softxs.ch/hydro/shared/big":  strings.Repeat("b", 50000),
	"intern/wiki.softxs.ch/pages/Front":    "front page\n",
}

func treeSums(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		s := sha256.Sum256(b)
		rel, _ := filepath.Rel(root, p)
		out[rel] = hex.EncodeToString(s[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sha256sumC(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("sha256sum", "-c", "--quiet", sums.SumsName)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c in %s: %v: %s", dir, err, out)
	}
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

func TestCopyLocalTierToADirectory(t *testing.T) {
	f := newFixture(t, day1)
	drive := t.TempDir()
	res, err := Copy(context.Background(), f.opts(drive))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(drive, "v2backup", string(host), "local")
	if len(res.Copies) != 1 || res.Copies[0].Dir != dir || res.Copies[0].Files != 3 || res.Copies[0].Snapshot != "2026-11-28T050000" {
		t.Fatalf("result = %+v", res)
	}
	for p, c := range day1 {
		if b, err := os.ReadFile(filepath.Join(dir, p)); string(b) != c {
			t.Errorf("%s on the drive: %q, %v", p, b, err)
		}
	}
	sha256sumC(t, dir)
	desc, err := sums.ReadDescription(filepath.Join(dir, sums.DescName))
	if err != nil || desc.Server != string(host) || desc.Snapshot != "2026-11-28T050000" || desc.Files != 3 {
		t.Errorf("description = %+v, %v", desc, err)
	}
	// Not a mount point: a generated ID, kept on the drive.
	id, err := os.ReadFile(filepath.Join(drive, "v2backup", "DRIVE-ID"))
	if err != nil || !res.Drive.Generated || strings.TrimSpace(string(id)) != res.Drive.UUID {
		t.Errorf("drive = %+v, DRIVE-ID %q, %v", res.Drive, id, err)
	}
	if _, err := snapshot.ReadHistory(filepath.Join(drive, "v2backup", "history", "backup-offsite+zg-3.softxs.ch-20261128")); err != nil {
		t.Error(err)
	}
	if b, err := os.ReadFile(filepath.Join(drive, "v2backup", "CONTENTS.json")); err != nil || !strings.Contains(string(b), `"snapshot": "2026-11-28T050000"`) {
		t.Errorf("CONTENTS.json: %s, %v", b, err)
	}

	// The next rotation: only what changed is written, the rest linked.
	big := filepath.Join(dir, "web/demo.softxs.ch/hydro/shared/big")
	before := ino(t, big)
	f.write(t, map[string]string{"intern/wiki.softxs.ch/pages/Front": "front page v2\n"})
	f.snapshot(t)
	res2, err := Copy(context.Background(), f.opts(drive))
	if err != nil {
		t.Fatal(err)
	}
	if res2.Drive.UUID != res.Drive.UUID || res2.Drive.MediaID != res.Drive.MediaID {
		t.Errorf("the drive changed identity: %+v then %+v", res.Drive, res2.Drive)
	}
	if ino(t, big) != before {
		t.Errorf("an unchanged file was copied again")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "intern/wiki.softxs.ch/pages/Front")); string(b) != "front page v2\n" {
		t.Errorf("changed file: %q", b)
	}
	sha256sumC(t, dir)

	st, err := Status(context.Background(), f.db)
	if err != nil || len(st) != 1 || len(st[0].Holds) != 1 || st[0].Holds[0].Snapshot != "2026-11-29T050000" {
		t.Fatalf("status = %+v, %v", st, err)
	}
	var out bytes.Buffer
	WriteStatus(&out, st)
	if !strings.Contains(out.String(), "2026-11-29T050000") || !strings.Contains(out.String(), res.Drive.UUID) {
		t.Errorf("status table:\n%s", out.String())
	}
}

func TestCopyRemoteTierAndRefuseABadCopy(t *testing.T) {
	f := newFixture(t, day1)
	// A backup server's remote tier snapshot, as a pull leaves it.
	snapDir := f.part.SnapshotDir(tiers.Remote)
	src := filepath.Join(snapDir, "2026-11-28T060000", string(host))
	var ents []sums.Entry
	for p, c := range day1 {
		full := filepath.Join(src, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte(c), 0o644)
		s := sha256.Sum256([]byte(c))
		ents = append(ents, sums.Entry{Path: p, SHA256: hex.EncodeToString(s[:])})
	}
	if err := sums.WriteFile(src, ents); err != nil {
		t.Fatal(err)
	}
	sums.WriteDescription(src, sums.Description{Server: string(host), Snapshot: "2026-11-28T050000", Files: 3})
	o := f.opts(t.TempDir())
	o.Sources = []Source{{host, tiers.Remote}}
	res, err := Copy(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	dir := res.Copies[0].Dir
	sha256sumC(t, dir)
	want := treeSums(t, dir)
	copies, _ := f.db.Copies(context.Background(), 0)
	if len(copies) != 1 || copies[0].Tier != tiers.Remote || copies[0].Snapshot != "2026-11-28T050000" || copies[0].VerifiedAt.IsZero() {
		t.Errorf("copies = %+v", copies)
	}

	// A newer remote snapshot whose file does not match its manifest (bit
	// rot on the backup server): the drive keeps the previous copy. (With
	// the same size and mtime, rsync would link the previous, good copy
	// instead, and the drive would be right anyway.)
	src2 := filepath.Join(snapDir, "2026-11-29T060000", string(host))
	os.MkdirAll(filepath.Dir(src2), 0o755)
	if out, err := exec.Command("cp", "-a", src, src2).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(src2, "web/demo.softxs.ch/hydro/db/dump.sql"), []byte("CREATE TABLE rot;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sums.WriteDescription(src2, sums.Description{Server: string(host), Snapshot: "2026-11-29T050000", Files: 3})
	res2, err := Copy(context.Background(), o)
	var de *DriveError
	if !errors.As(err, &de) || de.Problem != "failed" || de.Step != "verifying" || !strings.Contains(err.Error(), "previous copy from 2026-11-28T050000 kept") ||
		!strings.Contains(err.Error(), "dump.sql") {
		t.Fatalf("err = %v, res %+v", err, res2)
	}
	if got := treeSums(t, dir); !maps.Equal(got, want) {
		t.Errorf("previous copy changed")
	}
	if _, err := os.Stat(filepath.Join(o.Drive, "v2backup", ".staging", string(host))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed copy left on the drive: %v", err)
	}
}

// loopDrive makes a small ext4 filesystem with a label, loop-mounted like
// a USB drive, unmounted in t.Cleanup.
func loopDrive(t *testing.T, size, label string) string {
	mnt, _ := loopDriveDev(t, size, label)
	return mnt
}

// loopDriveDev is loopDrive that also returns the ext4 device's sysfs
// directory; the filesystem turns read-only on its first error.
func loopDriveDev(t *testing.T, size, label string) (mnt, sysfs string) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	mnt = filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	for _, c := range [][]string{{"truncate", "-s", size, img}, {"mkfs.ext4", "-q", "-m", "0", "-L", label, img}, {"mount", "-o", "loop,errors=remount-ro", img, mnt}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%q: %v: %s (this test needs root and loop devices)", c, err, out)
		}
	}
	t.Cleanup(func() { unmount(t, mnt) })
	src, err := exec.Command("findmnt", "-no", "SOURCE", "--mountpoint", mnt).Output()
	if err != nil {
		t.Fatalf("findmnt %s: %v", mnt, err)
	}
	return mnt, filepath.Join("/sys/fs/ext4", filepath.Base(strings.TrimSpace(string(src))))
}

func tmpfsDrive(t *testing.T, size string) string {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s (this test needs root)", err, out)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

func unmount(t *testing.T, mnt string) {
	if err := syscall.Unmount(mnt, 0); err != nil {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	}
}

func TestCopyToAFullDriveKeepsThePreviousCopy(t *testing.T) {
	f := newFixture(t, day1)
	drive := loopDrive(t, "4M", "OFFSITE1")
	res, err := Copy(context.Background(), f.opts(drive))
	if err != nil {
		t.Fatal(err)
	}
	if res.Drive.Generated || res.Drive.Label != "OFFSITE1" || len(res.Drive.UUID) != 36 {
		t.Errorf("a real filesystem: drive = %+v", res.Drive)
	}
	dir := res.Copies[0].Dir
	want := treeSums(t, dir)

	// Day 2 does not fit.
	f.write(t, map[string]string{"web/demo.softxs.ch/hydro/shared/huge": strings.Repeat("h", 8<<20)})
	f.snapshot(t)
	_, err = Copy(context.Background(), f.opts(drive))
	var de *DriveError
	if !errors.As(err, &de) || de.Problem != "no space left" {
		t.Fatalf("err = %v", err)
	}
	wantMsg := fmt.Sprintf("drive %s: no space left while copying local tier of zg-3.softxs.ch (snapshot 2026-11-29T050000); previous copy from 2026-11-28T050000 kept", drive)
	if !strings.HasPrefix(err.Error(), wantMsg) {
		t.Errorf("message:\n got %s\nwant %s", err, wantMsg)
	}
	if got := treeSums(t, dir); !maps.Equal(got, want) {
		t.Errorf("previous copy changed")
	}
	sha256sumC(t, dir)
	if _, err := os.Stat(filepath.Join(drive, "v2backup", ".staging", string(host))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the failed copy still fills the drive: %v", err)
	}
	copies, _ := f.db.Copies(context.Background(), 0)
	if len(copies) != 1 {
		t.Errorf("a failed copy was recorded: %+v", copies)
	}
}

func TestCopyToADriveTurningReadOnly(t *testing.T) {
	f := newFixture(t, day1)
	// A loop-mounted ext4 that turns read-only on an error, as a failing
	// USB drive does; the error is triggered through ext4's own test hook
	// (a plain "remount,ro" is refused while rsync has files open).
	drive, sysfs := loopDriveDev(t, "64M", "OFFSITE2")
	res, err := Copy(context.Background(), f.opts(drive))
	if err != nil {
		t.Fatal(err)
	}
	dir := res.Copies[0].Dir
	want := treeSums(t, dir)

	more := map[string]string{}
	for i := range 30 {
		more[fmt.Sprintf("web/demo.softxs.ch/hydro/releases/r%02d", i)] = strings.Repeat(fmt.Sprint(i), 100000)
	}
	f.write(t, more)
	f.snapshot(t)
	o := f.opts(drive)
	o.extraArgs = []string{"--bwlimit=500"}
	var remounted atomic.Bool
	o.started = func(_ Source, staging string, _ int) {
		go func() {
			deadline := time.Now().Add(time.Minute)
			for time.Now().Before(deadline) {
				n := 0
				filepath.WalkDir(staging, func(p string, d fs.DirEntry, err error) error {
					if err == nil && d.Type().IsRegular() {
						n++
					}
					return nil
				})
				if n >= 3 {
					err := os.WriteFile(filepath.Join(sysfs, "trigger_fs_error"), []byte("1"), 0o200)
					if err != nil {
						t.Errorf("turning %s read-only: %v", drive, err)
					}
					remounted.Store(err == nil)
					return
				}
				time.Sleep(5 * time.Millisecond) // polling, with a deadline
			}
		}()
	}
	_, err = Copy(context.Background(), o)
	var de *DriveError
	if !remounted.Load() || !errors.As(err, &de) || de.Problem != "read-only" || !strings.Contains(err.Error(), "turned read-only while copying") ||
		!strings.Contains(err.Error(), "previous copy from 2026-11-28T050000 kept") {
		t.Fatalf("remounted %v, err = %v", remounted.Load(), err)
	}
	if got := treeSums(t, dir); !maps.Equal(got, want) {
		t.Errorf("previous copy changed")
	}
	sha256sumC(t, dir)
}

func TestCopyToAFullTmpfs(t *testing.T) {
	f := newFixture(t, day1)
	drive := tmpfsDrive(t, "1m")
	if _, err := Copy(context.Background(), f.opts(drive)); err != nil {
		t.Fatal(err)
	}
	f.write(t, map[string]string{"web/demo.softxs.ch/hydro/shared/huge": strings.Repeat("h", 2<<20)})
	f.snapshot(t)
	_, err := Copy(context.Background(), f.opts(drive))
	var de *DriveError
	if !errors.As(err, &de) || de.Problem != "no space left" || de.Previous != "2026-11-28T050000" {
		t.Fatalf("err = %v", err)
	}
	sha256sumC(t, filepath.Join(drive, "v2backup", string(host), "local"))
}

func TestCopyToAReadOnlyDrive(t *testing.T) {
	f := newFixture(t, day1)
	drive := tmpfsDrive(t, "1m")
	if out, err := exec.Command("mount", "-o", "remount,ro", drive).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v: %s", err, out)
	}
	_, err := Copy(context.Background(), f.opts(drive))
	var de *DriveError
	if !errors.As(err, &de) || de.Problem != "read-only" || !strings.Contains(err.Error(), "turned read-only while preparing the drive") {
		t.Fatalf("err = %v", err)
	}
}

func TestDriveErrorWhenTheDriveIsGone(t *testing.T) {
	gone := filepath.Join(t.TempDir(), "unplugged")
	err := driveError(gone, "copying", "local tier of x.y", syscall.EIO, "2026-11-28T050000")
	var de *DriveError
	if !errors.As(err, &de) || de.Problem != "gone" || !strings.Contains(err.Error(), "gone (unplugged or unmounted?) while copying local tier of x.y; previous copy from 2026-11-28T050000 kept") {
		t.Errorf("err = %v", err)
	}
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("cause not wrapped: %v", err)
	}
	other := driveError(t.TempDir(), "copying", "x", errors.New("boom"), "")
	os.MkdirAll(filepath.Join(gone), 0o755)
	if !strings.Contains(other.Error(), "there was no previous copy") {
		t.Errorf("err = %v", other)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	f := newFixture(t, day1)
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	cases := []struct {
		edit func(*Options)
		want string
	}{
		{func(o *Options) { o.Drive = "usb" }, "must be an absolute path"},
		{func(o *Options) { o.Drive = "/nonexistent/usb" }, "is it mounted?"},
		{func(o *Options) { o.Drive = file }, "is not a directory"},
		{func(o *Options) { o.Partition = "rel" }, "partition"},
		{func(o *Options) { o.DB = nil }, "no catalog"},
		{func(o *Options) { o.Sources = nil }, "nothing to copy"},
		{func(o *Options) { o.Sources = []Source{{"X", tiers.Local}} }, "invalid server"},
		{func(o *Options) { o.Sources = []Source{{host, "both"}} }, "invalid tier"},
		{func(o *Options) { o.Sources = []Source{{host, tiers.Local}, {host, tiers.Remote}} }, "chosen twice"},
		{func(o *Options) { o.Sources = []Source{{host, tiers.Remote}} }, "no snapshot in"},
	}
	for _, c := range cases {
		o := f.opts(t.TempDir())
		c.edit(&o)
		if _, err := Copy(context.Background(), o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want %q", err, c.want)
		}
	}
	// A damaged DRIVE-ID is reported, not replaced.
	drive := t.TempDir()
	os.MkdirAll(filepath.Join(drive, "v2backup"), 0o755)
	os.WriteFile(filepath.Join(drive, "v2backup", "DRIVE-ID"), []byte("garbage\n"), 0o644)
	if _, err := Copy(context.Background(), f.opts(drive)); err == nil || !strings.Contains(err.Error(), "is not a drive ID") {
		t.Errorf("bad DRIVE-ID: %v", err)
	}
	// Another copy to the same drive is running.
	drive2 := t.TempDir()
	os.MkdirAll(filepath.Join(drive2, "v2backup"), 0o755)
	unlock, err := snapshot.TryLock(filepath.Join(drive2, "v2backup", ".lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := Copy(context.Background(), f.opts(drive2)); err == nil || !strings.Contains(err.Error(), "in use by another copy") {
		t.Errorf("locked drive: %v", err)
	}
}

func TestStatusOrdersDrivesByTheAgeOfTheirData(t *testing.T) {
	f := newFixture(t, day1)
	older, newer, empty := t.TempDir(), t.TempDir(), t.TempDir()
	if _, err := Copy(context.Background(), f.opts(older)); err != nil {
		t.Fatal(err)
	}
	f.snapshot(t)
	if _, err := Copy(context.Background(), f.opts(newer)); err != nil {
		t.Fatal(err)
	}
	if _, err := Identify(empty); err != nil {
		t.Fatal(err)
	}
	d, _ := Identify(empty)
	f.db.SeenMedium(context.Background(), "spare", d.UUID, f.clock)
	st, err := Status(context.Background(), f.db)
	if err != nil || len(st) != 3 {
		t.Fatalf("status = %+v, %v", st, err)
	}
	if len(st[0].Holds) != 0 || st[1].Medium.Label != filepath.Base(older) || st[2].Medium.Label != filepath.Base(newer) {
		t.Errorf("order: %s, %s, %s", st[0].Medium.Label, st[1].Medium.Label, st[2].Medium.Label)
	}
	var out bytes.Buffer
	if err := WriteStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 4 || !strings.Contains(lines[1], "spare") {
		t.Errorf("table:\n%s", out.String())
	}
}
