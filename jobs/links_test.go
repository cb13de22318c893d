package jobs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/softxs/v2backup/tiers/inventory"
)

func TestOutside(t *testing.T) {
	for _, c := range []struct {
		rel, target string
		want        bool
	}{
		{"current", "/home/v2/rails/x-app/releases/1", true},
		{"a/b/l", "../../x", false},
		{"a/b/l", "../../../x", true},
		{"l", "..", true},
		{"l", "sub/../../x", true},
		{"a/l", "f", false},
	} {
		if got := outside(c.rel, c.target); got != c.want {
			t.Errorf("outside(%q, %q) = %v", c.rel, c.target, got)
		}
	}
	if p := rsyncPattern("a/b*[1]?.txt"); p != `/a/b\*\[1]\?.txt` {
		t.Errorf("pattern %q", p)
	}
}

// TestLinksFile backs up a tree with links pointing out, one with
// wildcard characters in its name, and restores them.
func TestLinksFile(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "app")
	writeFiles(t, src, map[string]string{"data/f.txt": "f", "data/star*[x].txt": "s"})
	symlink(t, "/etc/hostname", filepath.Join(src, "data/abs"))
	symlink(t, "../../outside", filepath.Join(src, "data/up"))
	symlink(t, "/etc/passwd", filepath.Join(src, "data/l*[1]"))
	symlink(t, "f.txt", filepath.Join(src, "data/in"))
	app := &inventory.App{Name: "l", Type: inventory.TypeFiles, Path: src, Relpath: "l.softxs.ch",
		Files: &inventory.Files{Paths: []string{"data"}}}
	res, err := Backup(context.Background(), app, Options{Target: filepath.Join(root, "b")})
	if err != nil {
		t.Fatal(err)
	}
	got := tree(t, res.Dir, under(".v2backup-job", LinksFile))
	if got["data/in"] != "link f.txt" || got["data/star*[x].txt"] == "" || got["data/abs"] != "" || got["data/l*[1]"] != "" {
		t.Errorf("backup tree %v", got)
	}
	links, err := readLinks(res.Dir)
	if err != nil || len(links) != 3 {
		t.Fatalf("links %v %v", links, err)
	}
	dest := filepath.Join(root, "r")
	if _, err := Restore(context.Background(), app, RestoreOptions{Source: res.Dir, Dest: dest}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, "restored links", tree(t, src, nil), tree(t, dest, nil))
	// Links removed from the source disappear from the record.
	os.Remove(filepath.Join(src, "data/abs"))
	if _, err := Backup(context.Background(), app, Options{Target: filepath.Join(root, "b")}); err != nil {
		t.Fatal(err)
	}
	if links, _ := readLinks(res.Dir); len(links) != 2 {
		t.Errorf("links after removal %v", links)
	}

	for _, c := range []struct{ content, want string }{
		{`{"version":2,"links":[]}`, "version 2"},
		{`{"version":1,"links":[{"path":"../x","target":"/y"}]}`, `link "../x"`},
		{`{"version":1,"links":[{"path":".v2backup-job","target":"/y"}]}`, "not a clean relative path"},
		{`{"version":1,"links":[{"path":"a","target":""}]}`, `link "a" -> ""`},
		{`{"version":1,"extra":1}`, "unknown field"},
	} {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, LinksFile), []byte(c.content), 0o644)
		if _, err := readLinks(d); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.content, err, c.want)
		}
		if _, err := Restore(context.Background(), app, RestoreOptions{Source: d, Dest: filepath.Join(t.TempDir(), "out")}); err == nil || !strings.Contains(err.Error(), "l: restore: recreate symlinks") {
			t.Errorf("restore with a bad links file: %v", err)
		}
	}
}
