package sums

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func write(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFormatIsWhatSha256sumChecks(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{"web/a.txt": "a", "web/odd\\name": "b", "web/new\nline": "c", "b": ""}
	write(t, root, files)
	var ents []Entry
	for p, c := range files {
		ents = append(ents, Entry{Path: p, SHA256: sum(c)})
	}
	if err := WriteFile(root, ents); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sha256sum", "-c", "--quiet", SumsName)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v: %s", err, out)
	}
	back, err := ReadFile(filepath.Join(root, SumsName))
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ents, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	if !slices.Equal(back, ents) {
		t.Errorf("round trip:\n got %q\nwant %q", back, ents)
	}
	// and sha256sum's own output parses
	out, err := exec.Command("sh", "-c", "cd "+root+" && sha256sum -b web/a.txt b").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Parse(strings.NewReader(string(out)), "sha256sum output"); err != nil || len(got) != 2 {
		t.Errorf("parse of sha256sum -b output: %v, %v", got, err)
	}
}

func TestParseErrorsNameFileAndLine(t *testing.T) {
	h := sum("x")
	cases := map[string]string{
		"short line":  h + "  a\nshort\n",
		"upper hex":   strings.ToUpper(h) + "  a\n",
		"absolute":    h + "  /etc/passwd\n",
		"climbs out":  h + "  ../x\n",
		"unclean":     h + "  a//b\n",
		"twice":       h + "  a\n" + h + "  a\n",
		"bad escape":  "\\" + h + "  a\\tb\n",
		"lone escape": "\\" + h + "  a\\\n",
		"one space":   h + " a\n",
	}
	for name, text := range cases {
		_, err := Parse(strings.NewReader(text), "M")
		if err == nil || !strings.HasPrefix(err.Error(), "M:") {
			t.Errorf("%s: err %v", name, err)
		}
	}
	if _, err := Format([]Entry{{Path: "a", SHA256: "zz"}}); err == nil {
		t.Error("Format accepted a bad checksum")
	}
	if _, err := Format([]Entry{{Path: "a", SHA256: h}, {Path: "a", SHA256: h}}); err == nil {
		t.Error("Format accepted a path twice")
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("ReadFile of a missing file succeeded")
	}
}

func TestVerifyFindsEveryProblem(t *testing.T) {
	root := t.TempDir()
	write(t, root, map[string]string{"ok": "ok", "changed": "new", "extra": "x", "SHA256SUMS": "ignored", "dir/f": "f"})
	os.Symlink("/etc/passwd", filepath.Join(root, "link"))
	os.Symlink("/etc/passwd", filepath.Join(root, "listedlink"))
	want := []Entry{{"ok", sum("ok")}, {"changed", sum("old")}, {"missing", sum("m")}, {"dir/f", sum("f")}, {"listedlink", sum("root:x")}}
	files, err := Verify(context.Background(), root, want, Options{Ignore: []string{"SHA256SUMS"}, Workers: 3})
	var me *MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("err = %v", err)
	}
	var got []string
	for _, p := range me.Problems {
		got = append(got, p.Path+": "+strings.Fields(p.What)[0])
	}
	wantProbs := []string{"changed: SHA-256", "extra: is", "listedlink: is", "missing: is"}
	if !slices.Equal(got, wantProbs) {
		t.Errorf("problems = %q, want %q", got, wantProbs)
	}
	if !strings.Contains(err.Error(), "4 problem(s)") || !strings.Contains(err.Error(), "listedlink: is a symlink") {
		t.Errorf("message: %v", err)
	}
	if len(files) != 3 {
		t.Errorf("hashed %d files, want 3 (ok, changed, dir/f)", len(files))
	}

	good := []Entry{{"ok", sum("ok")}, {"changed", sum("new")}, {"extra", sum("x")}, {"dir/f", sum("f")}}
	if _, err := Verify(context.Background(), root, good, Options{Ignore: []string{"SHA256SUMS"}}); err != nil {
		t.Errorf("a matching tree: %v", err)
	}
	all, err := Hash(context.Background(), root, Options{Ignore: []string{"SHA256SUMS"}})
	if err != nil || len(all) != 4 || all[0].SHA256 != sum(map[string]string{"changed": "new", "dir/f": "f", "extra": "x", "ok": "ok"}[all[0].Path]) {
		t.Errorf("Hash = %+v, %v", all, err)
	}
	if _, err := Verify(context.Background(), filepath.Join(root, "nope"), nil, Options{}); err == nil {
		t.Error("Verify of a missing root succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Verify(ctx, root, good, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestDescription(t *testing.T) {
	dir := t.TempDir()
	d := Description{Server: "zg-3.softxs.ch", Snapshot: "2026-11-28T050000", Files: 2, Bytes: 3, Manifest: SumsName}
	if err := WriteDescription(dir, d); err != nil {
		t.Fatal(err)
	}
	back, err := ReadDescription(filepath.Join(dir, DescName))
	if err != nil || back != d {
		t.Errorf("round trip %+v, %v", back, err)
	}
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"server": ""}`), 0o644)
	if _, err := ReadDescription(filepath.Join(dir, "bad.json")); err == nil || !strings.Contains(err.Error(), "bad.json") {
		t.Errorf("empty server: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "junk.json"), []byte(`{`), 0o644)
	if _, err := ReadDescription(filepath.Join(dir, "junk.json")); err == nil {
		t.Error("junk accepted")
	}
}
