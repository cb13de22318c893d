package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// treeStats summarizes a directory tree, to check that a copy is complete.
type treeStats struct {
	Files    int   `json:"files"`
	Dirs     int   `json:"dirs"` // including the root
	Symlinks int   `json:"symlinks"`
	Other    int   `json:"other"`
	Bytes    int64 `json:"bytes"` // sum of the regular files' sizes
}

// entries is what `find ROOT` prints: one line per entry, root included.
func (s treeStats) entries() int { return s.Files + s.Dirs + s.Symlinks + s.Other }

func (s treeStats) String() string {
	return fmt.Sprintf("%d files, %d dirs, %d symlinks, %d other, %d bytes", s.Files, s.Dirs, s.Symlinks, s.Other, s.Bytes)
}

// statTree walks root without following symlinks.
func statTree(root string) (treeStats, error) {
	var s treeStats
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch t := d.Type(); {
		case t.IsDir():
			s.Dirs++
		case t.IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			s.Files++
			s.Bytes += info.Size()
		case t&fs.ModeSymlink != 0:
			s.Symlinks++
		default:
			s.Other++
		}
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("walk %s: %w", root, err)
	}
	return s, nil
}

// sourceTree is the staged copy of -src that rsync and cp copy.
type sourceTree struct {
	root   string
	stats  treeStats
	sample []string // relative paths of regular files whose bytes, mode and mtime are compared
}

// sampleEvery picks about 1% of the files for a byte-for-byte comparison:
// enough that a mount dropping or garbling data cannot pass, cheap enough
// not to matter next to the copy.
const sampleEvery = 97

// stageSource copies the first limit regular files of src (all when limit
// is 0, in lexical walk order) to dst with rsync -a, so every contender
// copies the same tree from the same disk.
func stageSource(ctx context.Context, src, dst string, limit int) (*sourceTree, error) {
	info, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("-src: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("-src %s: not a directory", src)
	}
	args := []string{"-a"}
	if limit > 0 {
		var list bytes.Buffer
		n := 0
		err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			rel, err := filepath.Rel(src, path)
			if err != nil {
				return err
			}
			list.WriteString(rel)
			list.WriteByte(0)
			if n++; n == limit {
				return fs.SkipAll
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("-src %s: %w", src, err)
		}
		if n < limit {
			return nil, fmt.Errorf("-tree-files %d: -src %s has only %d regular files", limit, src, n)
		}
		listPath := dst + ".list"
		if err := os.WriteFile(listPath, list.Bytes(), 0o644); err != nil {
			return nil, err
		}
		args = append(args, "--from0", "--files-from="+listPath)
	}
	args = append(args, src+"/", dst+"/")
	if out, err := exec.CommandContext(ctx, "rsync", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("staging %s into %s: rsync %s: %v: %s", src, dst, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	st, err := statTree(dst)
	if err != nil {
		return nil, err
	}
	if st.Files == 0 {
		return nil, fmt.Errorf("-src %s: no regular files to copy", src)
	}
	t := &sourceTree{root: dst, stats: st}
	n := 0
	err = filepath.WalkDir(dst, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		if n%sampleEvery == 0 {
			rel, _ := filepath.Rel(dst, path)
			t.sample = append(t.sample, rel)
		}
		n++
		return nil
	})
	return t, err
}

// warm reads every file of the tree so copies start from a warm source,
// whatever the previous workload did to the page cache.
func (t *sourceTree) warm() error {
	return filepath.WalkDir(t.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(io.Discard, f)
		return err
	})
}

// verifyCopy checks that dst holds a complete copy of the source: the same
// counts and bytes, and for the sampled files the same content, mode and
// mtime (rsync -a and cp -a both preserve them).
func (t *sourceTree) verifyCopy(dst string) error {
	st, err := statTree(dst)
	if err != nil {
		return err
	}
	if st != t.stats {
		return fmt.Errorf("copy %s incomplete: has %v, source %s has %v", dst, st, t.root, t.stats)
	}
	for _, rel := range t.sample {
		if err := sameFile(filepath.Join(t.root, rel), filepath.Join(dst, rel)); err != nil {
			return err
		}
	}
	return nil
}

func sameFile(want, got string) error {
	wi, err := os.Lstat(want)
	if err != nil {
		return err
	}
	gi, err := os.Lstat(got)
	if err != nil {
		return err
	}
	if wi.Mode() != gi.Mode() {
		return fmt.Errorf("%s: mode %v, source %s has %v", got, gi.Mode(), want, wi.Mode())
	}
	if !wi.ModTime().Equal(gi.ModTime()) {
		return fmt.Errorf("%s: mtime %v, source %s has %v", got, gi.ModTime(), want, wi.ModTime())
	}
	wb, err := os.ReadFile(want)
	if err != nil {
		return err
	}
	gb, err := os.ReadFile(got)
	if err != nil {
		return err
	}
	if !bytes.Equal(wb, gb) {
		return fmt.Errorf("%s: content differs from source %s (%d vs %d bytes)", got, want, len(gb), len(wb))
	}
	return nil
}
