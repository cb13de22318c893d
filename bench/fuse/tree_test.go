package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeTree writes n files of increasing size in a few directories, plus a symlink.
func makeTree(t *testing.T, n int) string {
	t.Helper()
	root := t.TempDir()
	for i := 0; i < n; i++ {
		d := filepath.Join(root, fmt.Sprintf("d%d", i%3))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d", i)), []byte(strings.Repeat("x", i)), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("d0", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestStatTree(t *testing.T) {
	root := makeTree(t, 10)
	st, err := statTree(root)
	if err != nil {
		t.Fatal(err)
	}
	want := treeStats{Files: 10, Dirs: 4, Symlinks: 1, Bytes: 45}
	if st != want || st.entries() != 15 {
		t.Errorf("statTree = %v, want %v", st, want)
	}
	if _, err := statTree(filepath.Join(root, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing root: %v", err)
	}
}

func TestStageSourceAll(t *testing.T) {
	src := makeTree(t, 200)
	dst := filepath.Join(t.TempDir(), "src")
	tree, err := stageSource(context.Background(), src, dst, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tree.stats.Files != 200 || tree.stats.Symlinks != 1 || len(tree.sample) != 3 {
		t.Errorf("staged %v, sample %v", tree.stats, tree.sample)
	}
	if err := tree.warm(); err != nil {
		t.Error(err)
	}
	if err := tree.verifyCopy(src); err != nil {
		t.Errorf("the source itself: %v", err)
	}
}

func TestStageSourceLimit(t *testing.T) {
	src := makeTree(t, 10)
	dst := filepath.Join(t.TempDir(), "src")
	tree, err := stageSource(context.Background(), src, dst, 4)
	if err != nil {
		t.Fatal(err)
	}
	// Walk order: d0/f000 d0/f003 d0/f006 d0/f009 -> 0+3+6+9 bytes.
	if want := (treeStats{Files: 4, Dirs: 2, Bytes: 18}); tree.stats != want {
		t.Errorf("staged %v, want %v", tree.stats, want)
	}
}

func TestStageSourceErrors(t *testing.T) {
	ctx := context.Background()
	src := makeTree(t, 3)
	dst := filepath.Join(t.TempDir(), "src")
	for _, tc := range []struct {
		src   string
		limit int
		want  string
	}{
		{src, 4, "-tree-files 4: -src " + src + " has only 3 regular files"},
		{filepath.Join(src, "nope"), 0, "-src: stat"},
		{filepath.Join(src, "d0", "f000"), 0, "not a directory"},
		{t.TempDir(), 0, "no regular files"},
	} {
		if _, err := stageSource(ctx, tc.src, dst, tc.limit); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("stageSource(%s, %d) = %v, want %q", tc.src, tc.limit, err, tc.want)
		}
	}
	// rsync failing (unwritable destination parent) names the command.
	if _, err := stageSource(ctx, src, "/proc/no/such/dir", 0); err == nil || !strings.Contains(err.Error(), "rsync -a") {
		t.Errorf("rsync into /proc: %v", err)
	}
}

func TestVerifyCopy(t *testing.T) {
	src := makeTree(t, 200)
	tree, err := stageSource(context.Background(), src, filepath.Join(t.TempDir(), "src"), 0)
	if err != nil {
		t.Fatal(err)
	}
	sampled := tree.sample[1] // d1/f097: 97 bytes
	for _, tc := range []struct {
		name   string
		damage func(dst string) error
		want   string
	}{
		{"intact", func(string) error { return nil }, ""},
		{"missing file", func(dst string) error { return os.Remove(filepath.Join(dst, "d2", "f005")) }, "incomplete"},
		{"short file", func(dst string) error { return os.Truncate(filepath.Join(dst, "d2", "f005"), 1) }, "incomplete"},
		{"garbled content", func(dst string) error {
			p := filepath.Join(dst, sampled)
			info, _ := os.Stat(p)
			if err := os.WriteFile(p, []byte(strings.Repeat("y", int(info.Size()))), 0o640); err != nil {
				return err
			}
			return os.Chtimes(p, info.ModTime(), info.ModTime())
		}, "content differs"},
		{"mtime lost", func(dst string) error {
			return os.Chtimes(filepath.Join(dst, sampled), time.Now(), time.Unix(1, 0))
		}, "mtime"},
		{"mode lost", func(dst string) error { return os.Chmod(filepath.Join(dst, sampled), 0o600) }, "mode"},
		{"missing sample", func(dst string) error {
			p := filepath.Join(dst, sampled)
			return os.Rename(p, p+".x")
		}, "no such file"},
	} {
		dst := filepath.Join(t.TempDir(), "copy")
		if out, err := exec.Command("cp", "-a", tree.root, dst).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v: %s", err, out)
		}
		if err := tc.damage(dst); err != nil {
			t.Fatal(err)
		}
		err := tree.verifyCopy(dst)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: verifyCopy = %v, want %q", tc.name, err, tc.want)
		}
	}
}
