package roview

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/softxs/v2backup/tiers"
)

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func errorsIs(err error, target error) bool { return errors.Is(err, target) }

func TestToErrno(t *testing.T) {
	for _, c := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{&os.PathError{Op: "open", Path: "/x", Err: syscall.ENOENT}, syscall.ENOENT},
		{syscall.EACCES, syscall.EACCES},
		{&os.PathError{Op: "open", Path: "/x", Err: syscall.ELOOP}, syscall.EIO},
		{syscall.EXDEV, syscall.EIO},
		{syscall.EBADMSG, syscall.EIO},
		{errors.New("something else"), syscall.EIO},
	} {
		if got := toErrno(discardLog(), "test", c.err); got != c.want {
			t.Errorf("toErrno(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestSnapshotsListsCompleteOnesOnly(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"2026-11-28T050000/":           "",
		"2026-11-27T050000/":           "",
		".building-2026-11-29T050000/": "",
		".deleting-2026-11-01T050000/": "",
		"2026-11-30T05:00:00/":         "",
		"junk/":                        "",
		"2026-11-26T050000":            "a file, not a snapshot",
		"latest":                       "->2026-11-28T050000",
		"2026-11-25T050000":            "->2026-11-28T050000",
	})
	got, err := Snapshots(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"2026-11-27T050000", "2026-11-28T050000"}; !slices.Equal(got, want) {
		t.Errorf("Snapshots = %q, want %q", got, want)
	}
	got, err = Snapshots(filepath.Join(dir, "missing"))
	if err != nil || got != nil {
		t.Errorf("Snapshots(missing) = %q, %v; want nothing, no error", got, err)
	}
	_, err = Snapshots(filepath.Join(dir, "2026-11-26T050000"))
	if err == nil || !strings.Contains(err.Error(), "2026-11-26T050000") {
		t.Errorf("Snapshots(a file) = %v, want an error naming it", err)
	}
}

func TestNewHistoryInvalidVM(t *testing.T) {
	h := NewHistory(t.TempDir(), "../intern", func() []string { return nil }).(*snapList)
	h.log = discardLog()
	if _, errno := h.Readdir(context.Background()); errno != syscall.EIO {
		t.Errorf("Readdir = %v, want EIO", errno)
	}
	var out fuse.EntryOut
	if _, errno := h.Lookup(context.Background(), "latest", &out); errno != syscall.EIO {
		t.Errorf("Lookup = %v, want EIO", errno)
	}
}

func TestHistChildren(t *testing.T) {
	apps := []tiers.Relpath{"a.ch", "a.ch.b/x", "a.ch/x", "a.ch/x/y", "b.ch/z/w"}
	got := histChildren(apps, nil)
	var names []string
	for _, c := range got {
		names = append(names, c.name)
	}
	if want := []string{"a.ch", "a.ch.b", "b.ch"}; !slices.Equal(names, want) {
		t.Errorf("top = %q, want %q", names, want)
	}
	if got[0].leaf != "a.ch" || len(got[0].apps) != 3 {
		t.Errorf("a.ch = %+v, want a leaf holding 3 apps", got[0])
	}
	sub := histChildren(apps, []string{"b.ch"})
	if len(sub) != 1 || sub[0].name != "z" || sub[0].leaf != "" {
		t.Errorf("b.ch = %+v, want one intermediate z", sub)
	}
}

func TestSHA256SUMSFormat(t *testing.T) {
	h := strings.Repeat("ab", 32)
	out, err := FormatSHA256SUMS([]ManifestEntry{
		{Path: "web/b.ch/z", SHA256: h, Size: 1},
		{Path: "web/a.ch/back\\slash", SHA256: h, Size: 2},
		{Path: "web/a.ch/new\nline", SHA256: h, Size: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "\\" + h + "  web/a.ch/back\\\\slash\n" + "\\" + h + "  web/a.ch/new\\nline\n" + h + "  web/b.ch/z\n"
	if string(out) != want {
		t.Errorf("SHA256SUMS =\n%s\nwant\n%s", out, want)
	}
	for _, c := range []struct {
		e    []ManifestEntry
		want string
	}{
		{[]ManifestEntry{{Path: "web/x", SHA256: "ABCD"}}, `"web/x": SHA256 "ABCD"`},
		{[]ManifestEntry{{Path: "web/x", SHA256: strings.ToUpper(h)}}, "lower-case"},
		{[]ManifestEntry{{Path: "/etc/passwd", SHA256: h}}, `"/etc/passwd": path`},
		{[]ManifestEntry{{Path: "../x", SHA256: h}}, `"../x": path`},
		{[]ManifestEntry{{Path: "web/./x", SHA256: h}}, `"web/./x": path`},
		{[]ManifestEntry{{Path: "web/x", SHA256: h, Size: -1}}, "negative size"},
		{[]ManifestEntry{{Path: "web/x", SHA256: h}, {Path: "web/x", SHA256: h}}, "listed twice"},
	} {
		_, err := FormatSHA256SUMS(c.e)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("FormatSHA256SUMS(%+v) = %v, want an error with %q", c.e, err, c.want)
		}
	}
}

func TestHashSnapshot(t *testing.T) {
	dir := t.TempDir()
	makeSnapshot(t, dir, "2026-11-28T050000", map[string]string{
		"web/a.ch/f":    "hello\n",
		"web/a.ch/link": "->f",
		"web/a.ch/d/":   "",
	})
	got, err := HashSnapshot(dir, "2026-11-28T050000")
	if err != nil {
		t.Fatal(err)
	}
	want := []ManifestEntry{{Path: "web/a.ch/f", SHA256: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03", Size: 6}}
	if !slices.Equal(got, want) {
		t.Errorf("HashSnapshot = %+v, want %+v", got, want)
	}
	if _, err := HashSnapshot(dir, "latest"); err == nil || !strings.Contains(err.Error(), `"latest"`) {
		t.Errorf("HashSnapshot(latest) = %v, want an error naming it", err)
	}
	if _, err := HashSnapshot(dir, "2026-11-29T050000"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("HashSnapshot(missing) = %v, want ENOENT", err)
	}
}
