package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/renameio/v2"
)

// LinksFile lists, at the top of an application's backup tree, the
// symlinks of the application that point out of it: absolute links
// (Capistrano's current, linked files and directories) and relative ones
// that climb out. The host daemon's mount refuses to create such links
// (nothing in a VM's tree may lead out of it), so the job records them
// here instead and Restore recreates them.
const LinksFile = ".v2backup-symlinks"

// Link is one recorded symlink: its path in the backup tree and its target.
type Link struct {
	Path   string `json:"path"`
	Target string `json:"target"`
}

type linksDoc struct {
	Version int    `json:"version"`
	Links   []Link `json:"links"`
}

// outside reports whether a link at rel (relative to the backup tree)
// with this target would point out of the tree.
func outside(rel, target string) bool {
	if path.IsAbs(target) {
		return true
	}
	p := path.Clean(path.Join(path.Dir(rel), target))
	return p == ".." || strings.HasPrefix(p, "../")
}

// outsideLinks walks src (its top-level symlink followed) and returns the
// links that would point out of the backup tree once copied to dstRel,
// leaving out the top-level names in skip.
func outsideLinks(src, dstRel string, skip map[string]bool) ([]Link, error) {
	root := strings.TrimSuffix(src, "/") + "/"
	var out []Link
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if top, _, _ := strings.Cut(rel, "/"); skip[top] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		t, err := os.Readlink(p)
		if err != nil {
			return err
		}
		bp := path.Join(dstRel, filepath.ToSlash(rel))
		if outside(bp, t) {
			out = append(out, Link{Path: bp, Target: t})
		}
		return nil
	})
	return out, err
}

// rsyncPattern escapes a path for an rsync filter rule, anchored.
func rsyncPattern(rel string) string {
	if strings.ContainsAny(rel, `*?[\`) {
		rel = strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`).Replace(rel)
	}
	return "/" + rel
}

// readLinks loads a tree's links file; a missing file is an empty list.
func readLinks(dir string) ([]Link, error) {
	b, err := os.ReadFile(filepath.Join(dir, LinksFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var doc linksDoc
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, LinksFile), err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("%s: version %d: this v2backup reads version 1", filepath.Join(dir, LinksFile), doc.Version)
	}
	for _, l := range doc.Links {
		if err := checkLinkPath(l.Path); err != nil || l.Target == "" {
			return nil, fmt.Errorf("%s: link %q -> %q: %v", filepath.Join(dir, LinksFile), l.Path, l.Target, err)
		}
	}
	return doc.Links, nil
}

// checkLinkPath accepts a clean relative path that does not climb out or
// touch v2backup's own entries.
func checkLinkPath(p string) error {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") || strings.HasPrefix(p, ".") {
		return fmt.Errorf("not a clean relative path inside the tree")
	}
	return nil
}

// recordLinks replaces the recorded links under dstRel (a path copied
// whole by this run) with links, and rewrites the links file atomically.
func (r *run) recordLinks(dstRel string, links []Link) error {
	old, err := readLinks(r.dir)
	if err != nil {
		return err
	}
	var all []Link
	for _, l := range old {
		if l.Path != dstRel && !strings.HasPrefix(l.Path, dstRel+"/") {
			all = append(all, l)
		}
	}
	all = append(all, links...)
	if len(all) == 0 && len(old) == 0 {
		return nil
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Path < all[j].Path })
	b, err := json.MarshalIndent(linksDoc{Version: 1, Links: all}, "", "  ")
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(filepath.Join(r.dir, LinksFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("recording symlinks: %w", err)
	}
	if len(links) > 0 {
		r.check("%s: %d symlink(s) pointing out recorded in %s", dstRel, len(links), LinksFile)
	}
	return nil
}

// restoreLinks recreates the recorded links under dest; an entry already
// there is left alone unless overwrite.
func restoreLinks(src, dest string, overwrite bool) (int, error) {
	links, err := readLinks(src)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range links {
		p := filepath.Join(dest, filepath.FromSlash(l.Path))
		if _, err := os.Lstat(p); err == nil {
			if !overwrite {
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				return n, err
			}
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return n, err
		}
		if err := os.Symlink(l.Target, p); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
