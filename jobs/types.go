package jobs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/softxs/v2backup/tiers/inventory"
)

// CapistranoDir is the Capistrano installation directory of a Rails app
// whose inventory path is p: p itself when it holds current/ and releases/,
// else {p}-app (the seed's layout: /home/v2/rails/{name} links to
// {name}-app/current/public).
func CapistranoDir(p string) (string, error) {
	var tried []string
	for _, d := range []string{p, strings.TrimSuffix(p, "/") + "-app"} {
		if isDir(filepath.Join(d, "releases")) && exists(filepath.Join(d, "current")) {
			return d, nil
		}
		tried = append(tried, d)
	}
	return "", fmt.Errorf("no Capistrano layout (releases/ and current) in %s", strings.Join(tried, " or "))
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// Files left out of shared/: logs, pid files and sockets.
var railsSharedExcludes = []string{"--exclude=/var", "--exclude=/log/", "--exclude=pids/", "--exclude=*.log",
	"--exclude=*.pid", "--exclude=/tmp/sockets/"}

// railsConn finds a Rails app's production database in dir's
// current/config/database.yml, with the inventory's overrides.
func railsConn(dir string, app *inventory.App, getenv func(string) string) (*conn, error) {
	yml, err := inside(dir, filepath.Join(dir, "current", "config", "database.yml"))
	if err != nil {
		return nil, err
	}
	c, err := railsDatabase(yml, getenv)
	if err != nil {
		return nil, err
	}
	if err := c.override(app.Database, "the inventory's app "+app.Name+" database"); err != nil {
		return nil, err
	}
	return c, nil
}

func (r *run) rails() error {
	var dir string
	var c *conn
	if err := r.step("find application", func() (err error) {
		if dir, err = CapistranoDir(r.app.Path); err != nil {
			return err
		}
		c, err = railsConn(dir, r.app, r.o.getenv)
		return err
	}); err != nil {
		return err
	}
	if err := r.withDump(c, func() error { return r.railsFiles(dir) }); err != nil {
		return err
	}
	return r.extraFiles()
}

// railsFiles copies releases/, current, shared/ and the data directory.
func (r *run) railsFiles(dir string) error {
	if err := r.step("copy releases", func() error {
		return r.rsync(filepath.Join(dir, "releases"), filepath.Join(r.dir, "releases"))
	}); err != nil {
		return err
	}
	if err := r.step("copy current", func() error {
		return r.copyFile(filepath.Join(dir, "current"), filepath.Join(r.dir, "current"))
	}); err != nil {
		return err
	}
	shared := filepath.Join(dir, "shared")
	if err := r.step("copy shared", func() error {
		return r.rsync(shared, filepath.Join(r.dir, "shared"), railsSharedExcludes...)
	}); err != nil {
		return err
	}
	if !exists(filepath.Join(shared, "var")) {
		return nil
	}
	// The data directory on the HD: its symlink is followed, once.
	return r.step("copy shared/var", func() error {
		src := filepath.Join(shared, "var")
		if err := sourceDir(src); err != nil {
			if l, lerr := os.Readlink(src); lerr == nil {
				return fmt.Errorf("%w (%s is a symlink to %s)", err, src, l)
			}
			return err
		}
		return r.rsync(src, filepath.Join(r.dir, "shared", "var"))
	})
}

// drawmgt: its var directory (the inventory path, or {path}/var) and its
// MySQL database, given in the inventory.
func (r *run) drawmgt() error {
	varDir := r.app.Path
	if filepath.Base(varDir) != "var" {
		varDir = filepath.Join(varDir, "var")
	}
	c := &conn{}
	if r.app.Database == nil {
		return &stepError{"find application", fmt.Errorf("drawmgt needs [app.database] in the inventory (adapter, name, user, password_file)")}
	}
	if err := c.override(r.app.Database, "the inventory's app "+r.app.Name+" database"); err != nil {
		return &stepError{"find application", err}
	}
	if c.Adapter == "" {
		c.Adapter = AdapterMySQL
	}
	if err := r.withDump(c, func() error {
		return r.step("copy var", func() error { return r.rsync(varDir, filepath.Join(r.dir, "var")) })
	}); err != nil {
		return err
	}
	return r.extraFiles()
}

// moinmoin: data/ (pages, user, ...) and a top-level user/ if any; every
// cache directory left out.
func (r *run) moinmoin() error {
	data := filepath.Join(r.app.Path, "data")
	if err := r.step("copy data", func() error {
		return r.rsync(data, filepath.Join(r.dir, "data"), "--exclude=cache/")
	}); err != nil {
		return err
	}
	if isDir(filepath.Join(r.app.Path, "user")) {
		if err := r.step("copy user", func() error {
			return r.rsync(filepath.Join(r.app.Path, "user"), filepath.Join(r.dir, "user"), "--exclude=cache/")
		}); err != nil {
			return err
		}
	}
	return r.extraFiles()
}

// maildir: cur/ and new/ of each mailbox (Maildir++ folders included); every
// directory is kept so tmp/ exists on restore, its content is not.
func (r *run) maildir() error {
	if err := r.step("copy mailboxes", func() error {
		return r.rsync(r.app.Path, filepath.Join(r.dir, "maildir"),
			"--include=*/", "--include=cur/**", "--include=new/**", "--exclude=*")
	}); err != nil {
		return err
	}
	if err := r.step("check mailboxes", func() error {
		n := 0
		err := filepath.WalkDir(filepath.Join(r.dir, "maildir"), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "cur" && isDir(filepath.Join(filepath.Dir(p), "new")) {
				n++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s: no mailbox (a directory with cur/ and new/)", r.app.Path)
		}
		r.check("maildir: %d mailbox(es) copied", n)
		return nil
	}); err != nil {
		return err
	}
	return r.extraFiles()
}

// wordpress: the database named in wp-config.php, wp-content/ and
// wp-config.php itself (needed to bring the instance back).
func (r *run) wordpress() error {
	var c *conn
	if err := r.step("find application", func() error {
		cfg, err := inside(r.app.Path, filepath.Join(r.app.Path, "wp-config.php"))
		if err != nil {
			return err
		}
		if c, err = wordpressDatabase(cfg); err != nil {
			return err
		}
		return c.override(r.app.Database, "the inventory's app "+r.app.Name+" database")
	}); err != nil {
		return err
	}
	if err := r.withDump(c, func() error {
		if err := r.step("copy wp-content", func() error {
			return r.rsync(filepath.Join(r.app.Path, "wp-content"), filepath.Join(r.dir, "wp-content"), "--exclude=/cache/")
		}); err != nil {
			return err
		}
		return r.step("copy wp-config.php", func() error {
			return r.copyFile(filepath.Join(r.app.Path, "wp-config.php"), filepath.Join(r.dir, "wp-config.php"))
		})
	}); err != nil {
		return err
	}
	return r.extraFiles()
}

// files: the listed paths, each to the same relative place (absolute paths
// outside the application's path lose their leading '/').
func (r *run) files(prefix string) error {
	if r.app.Files == nil || len(r.app.Files.Paths) == 0 {
		if prefix != "" {
			return nil
		}
		return &stepError{"find application", errors.New("type files needs [app.files] paths in the inventory")}
	}
	type item struct{ src, dst string }
	var items []item
	seen := map[string]string{}
	for _, p := range r.app.Files.Paths {
		src := p
		if !filepath.IsAbs(src) {
			src = filepath.Join(r.app.Path, p)
		}
		src = filepath.Clean(src)
		rel, err := filepath.Rel(r.app.Path, src)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			rel = strings.TrimPrefix(src, "/")
		}
		if rel == "." {
			rel = ""
		}
		if rel != "" && strings.HasPrefix(filepath.Base(rel), ".") && filepath.Dir(rel) == "." && prefix == "" {
			return &stepError{"find application", fmt.Errorf("files path %q: a top-level name starting with '.' is reserved for v2backup", p)}
		}
		dst := filepath.Join(r.dir, prefix, rel)
		for other, op := range seen {
			if dst == other || strings.HasPrefix(dst, other+"/") || strings.HasPrefix(other, dst+"/") {
				return &stepError{"find application", fmt.Errorf("files paths %q and %q overlap in the backup", op, p)}
			}
		}
		seen[dst] = p
		items = append(items, item{src, dst})
	}
	for _, it := range items {
		if err := r.step("copy "+it.src, func() error {
			fi, err := os.Stat(it.src)
			if err == nil && !fi.IsDir() {
				return r.copyFile(it.src, it.dst)
			}
			return r.rsync(it.src, it.dst)
		}); err != nil {
			return err
		}
	}
	return nil
}

// extraFiles copies an application's listed paths, for types other than
// files, under files/.
func (r *run) extraFiles() error {
	if r.app.Files == nil || len(r.app.Files.Paths) == 0 {
		return nil
	}
	return r.files("files")
}
