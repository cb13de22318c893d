package runfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 29, 2, 30, 0, 123, time.UTC)
	r := Record{App: "hydro", Type: "rails", Host: "web", Status: Running, Start: start}
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}
	got, err := Read(filepath.Join(dir, Name))
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != Version || got.Status != Running || !got.Start.Equal(start) || !got.End.IsZero() {
		t.Fatalf("read %+v", got)
	}
	b, _ := os.ReadFile(filepath.Join(dir, Name))
	if strings.Contains(string(b), `"end"`) {
		t.Errorf("running record has an end: %s", b)
	}
	r.Status, r.End, r.Files, r.Bytes = OK, start.Add(time.Minute), 12, 3456
	r.Checks = []string{"dump ok"}
	r.Tools = map[string]string{"rsync": "rsync version 3"}
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}
	got, err = Read(filepath.Join(dir, Name))
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != OK || got.Files != 12 || got.Bytes != 3456 || got.Checks[0] != "dump ok" || got.Tools["rsync"] != "rsync version 3" || !got.End.Equal(r.End) {
		t.Fatalf("read %+v", got)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the run file", len(ents))
	}
}

func TestInvalid(t *testing.T) {
	start := time.Date(2026, 11, 29, 2, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		r    Record
		want string
	}{
		{Record{Status: Running, Start: start}, "app: empty"},
		{Record{App: "a", Status: Running}, "start: empty"},
		{Record{App: "a", Status: "done", Start: start}, `status "done"`},
		{Record{App: "a", Status: Running, Start: start, End: start}, "end: set"},
		{Record{App: "a", Status: OK, Start: start}, "end: empty on a ok record"},
		{Record{App: "a", Status: OK, Start: start, End: start.Add(-time.Second)}, "is before start"},
		{Record{App: "a", Status: Failed, Start: start, End: start}, "error: empty on a failed record"},
		{Record{App: "a", Status: OK, Start: start, End: start, Error: "x"}, "error/step: set on a ok record"},
		{Record{App: "a", Status: OK, Start: start, End: start, Files: -1}, "negative"},
	} {
		err := Write(t.TempDir(), c.r)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.r, err, c.want)
		}
	}
	if err := Write(filepath.Join(t.TempDir(), "missing"), Record{App: "a", Status: Running, Start: start}); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

func TestParseStrict(t *testing.T) {
	ok := `{"version":1,"app":"a","type":"git","status":"ok","start":"2026-11-29T02:00:00Z","end":"2026-11-29T02:01:00Z","files":1,"bytes":2}`
	if _, err := Parse("f", []byte(ok)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ in, want string }{
		{strings.Replace(ok, `"files"`, `"filez"`, 1), `unknown field "filez"`},
		{strings.Replace(ok, `"version":1`, `"version":2`, 1), "version 2: this v2backup reads version 1"},
		{ok + ok, "trailing data"},
		{ok + " x", "trailing data"},
		{`{"version":1,`, "unexpected EOF"},
		{strings.Replace(ok, `"status":"ok"`, `"status":"failed"`, 1), "error: empty on a failed record"},
	} {
		_, err := Parse("run.json", []byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "run file run.json") {
			t.Errorf("%s: error %v, want %q", c.in, err, c.want)
		}
	}
	if _, err := Read(filepath.Join(t.TempDir(), Name)); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(t.TempDir(), Name)
	os.WriteFile(big, make([]byte, maxSize+2), 0o644)
	if _, err := Read(big); err == nil || !strings.Contains(err.Error(), "over") {
		t.Errorf("huge file: %v", err)
	}
}
