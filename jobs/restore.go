package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/softxs/v2backup/jobs/runfile"
	"github.com/softxs/v2backup/tiers/inventory"
)

// RestoreOptions says what to restore, from where, to where.
type RestoreOptions struct {
	// Source is the directory holding the application's backup tree: in a
	// snapshot ({partition}/snapshots/local/{snap}/{vm}/{relpath} on a
	// host, /backup/.history/{snap}/{relpath} in a VM) or the live backup.
	Source string
	// Dest is where the application's files go. It must not exist or be
	// empty, unless Overwrite.
	Dest string
	// Overwrite allows a non-empty Dest (files are replaced, none deleted)
	// and a MariaDB database that already has tables.
	Overwrite bool
	// Database, when set, is the database the newest dump is loaded into
	// (created if missing), so an instance can be restored or duplicated.
	Database string
	// Conn overrides, field by field, how to reach the database server;
	// by default it is the application's own (its restored database.yml or
	// wp-config.php, or the inventory).
	Conn *inventory.Database
	// Getenv resolves ENV[...] in database.yml; nil means os.Getenv.
	Getenv func(string) string
	// Progress receives progress lines (a terminal); nil means quiet.
	Progress io.Writer
	// Logger receives one line per step; nil discards.
	Logger *slog.Logger
}

// RestoreResult is what a restore brought back.
type RestoreResult struct {
	// Files and Bytes count the regular files written to Dest.
	Files, Bytes int64
	// Repos lists the git repositories recreated from bundles.
	Repos []string
	// Dump is the dump loaded into Database; empty when none was.
	Dump     string
	Database string
}

// Restore brings an application's files back from its backup tree into
// Dest, and loads the newest database dump into the named database. Files
// are copied with rsync -a: symlinks are copied as symlinks, never
// followed out of Source. Git bundles become repositories again; a Rails
// tree's absolute links into its installation directory are made relative
// so the copy stands on its own.
func Restore(ctx context.Context, app *inventory.App, o RestoreOptions) (*RestoreResult, error) {
	fail := func(step string, err error) (*RestoreResult, error) {
		return nil, &Error{App: app.Name, Step: "restore: " + step, Err: err}
	}
	if o.Source == "" || o.Dest == "" {
		return fail("start", errors.New("need a source and a destination directory"))
	}
	if err := sourceDir(o.Source); err != nil {
		return fail("start", err)
	}
	if !o.Overwrite {
		if ents, err := os.ReadDir(o.Dest); err == nil && len(ents) > 0 {
			return fail("start", fmt.Errorf("destination %s is not empty (%s, ...); choose a new directory or overwrite", o.Dest, ents[0].Name()))
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail("start", err)
		}
	}
	if err := os.MkdirAll(o.Dest, 0o755); err != nil {
		return fail("start", err)
	}
	ro := &Options{Getenv: o.Getenv, Progress: o.Progress, Logger: o.Logger}
	r := &run{ctx: ctx, app: app, o: ro, dir: o.Dest, tools: map[string]string{}}
	res := &RestoreResult{}
	// Everything but v2backup's own entries and, for git, the bundles.
	args := []string{"-a", "--numeric-ids", "--exclude=/" + runfile.Name, "--exclude=/" + LinksFile, "--exclude=.tmp-*", "--exclude=/.history"}
	if app.Type == inventory.TypeGit {
		args = append(args, "--exclude=/"+GitDir+"/")
	}
	if err := r.rsyncRaw(append(args, strings.TrimSuffix(o.Source, "/")+"/", strings.TrimSuffix(o.Dest, "/")+"/"), o.Source); err != nil {
		return fail("copy files", err)
	}
	if _, err := restoreLinks(o.Source, o.Dest, o.Overwrite); err != nil {
		return fail("recreate symlinks", err)
	}
	if app.Type == inventory.TypeGit {
		repos, err := restoreBundles(ctx, filepath.Join(o.Source, GitDir), o.Dest)
		res.Repos = repos
		if err != nil {
			return fail("recreate git repositories", err)
		}
	}
	if app.Type == inventory.TypeRails {
		if err := relinkRails(o.Dest); err != nil {
			return fail("relink Capistrano links", err)
		}
	}
	if o.Database != "" {
		c, err := restoreConn(app, o)
		if err != nil {
			return fail("find database settings", err)
		}
		dump, err := NewestDump(filepath.Join(o.Source, DumpDir))
		if err != nil {
			return fail("find database dump", err)
		}
		r.progressf("%s: loading %s into %s\n", app.Name, filepath.Base(dump), c)
		if err := loadDump(ctx, dump, c, o.Overwrite); err != nil {
			return fail("load database "+c.Name, err)
		}
		res.Dump, res.Database = dump, c.Name
	}
	var err error
	res.Files, res.Bytes, err = countTree(o.Dest)
	if err != nil {
		return fail("count files", err)
	}
	return res, nil
}

// restoreConn is where a restore loads the dump: the application's own
// settings read from the restored tree (so a restore works on a new
// machine), then the inventory's, then o.Conn; the name is o.Database.
func restoreConn(app *inventory.App, o RestoreOptions) (*conn, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var c *conn
	var err error
	switch app.Type {
	case inventory.TypeRails:
		c, err = railsConn(o.Dest, app, getenv)
	case inventory.TypeWordPress:
		var cfg string
		if cfg, err = inside(o.Dest, filepath.Join(o.Dest, "wp-config.php")); err == nil {
			if c, err = wordpressDatabase(cfg); err == nil {
				err = c.override(app.Database, "the inventory's app "+app.Name+" database")
			}
		}
	default:
		if app.Database == nil && o.Conn == nil {
			return nil, fmt.Errorf("no database settings: none in the inventory ([app.database]) nor in the restore's options")
		}
		c = &conn{}
		err = c.override(app.Database, "the inventory's app "+app.Name+" database")
		if err == nil && c.Adapter == "" {
			c.Adapter = AdapterMySQL
		}
	}
	if err != nil {
		return nil, err
	}
	if err := c.override(o.Conn, "the restore's database options"); err != nil {
		return nil, err
	}
	c.Name = o.Database
	return c, c.validate()
}

// restoreBundles clones every bundle under dir into dest: mirror bundles
// as bare repositories, others with a work tree checked out.
func restoreBundles(ctx context.Context, dir, dest string) ([]string, error) {
	var repos []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") || !strings.HasSuffix(p, bundleSuffix) {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		var args []string
		switch {
		case strings.HasSuffix(rel, mirrorBundleSuffix):
			rel = strings.TrimSuffix(rel, mirrorBundleSuffix)
			args = []string{"clone", "--quiet", "--mirror", p, filepath.Join(dest, rel)}
		default:
			rel = strings.TrimSuffix(rel, bundleSuffix)
			args = []string{"clone", "--quiet", p, filepath.Join(dest, rel)}
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dest, rel)), 0o755); err != nil {
			return err
		}
		cmd, stderr := command(ctx, "git", args...)
		if err := runCmd(cmd, stderr); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		// The bundle was only the way back: no remote pointing at it.
		cmd, stderr = command(ctx, "git", "-C", filepath.Join(dest, rel), "remote", "remove", "origin")
		if err := runCmd(cmd, stderr); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dest, rel), err)
		}
		repos = append(repos, rel)
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) && len(repos) == 0 {
		return nil, fmt.Errorf("%s: no git bundles", dir)
	}
	return repos, err
}

// relinkRails makes a restored Capistrano tree stand on its own:
// Capistrano's links are absolute (current -> /home/v2/rails/x-app/releases/R,
// releases/R/config/database.yml -> .../shared/config/database.yml), so every
// absolute link into the original installation directory, taken from
// current's target, becomes a relative link inside dest.
func relinkRails(dest string) error {
	cur := filepath.Join(dest, "current")
	target, err := os.Readlink(cur)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if !filepath.IsAbs(target) || filepath.Base(filepath.Dir(target)) != "releases" {
		return nil
	}
	if rel := filepath.Join("releases", filepath.Base(target)); !isDir(filepath.Join(dest, rel)) {
		return fmt.Errorf("%s -> %s: release %s is not in the backup", cur, target, rel)
	}
	orig := filepath.Dir(filepath.Dir(target))
	return filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		l, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(l, orig+"/") {
			return err
		}
		rel, err := filepath.Rel(filepath.Dir(p), filepath.Join(dest, strings.TrimPrefix(l, orig+"/")))
		if err != nil {
			return err
		}
		tmp := filepath.Join(filepath.Dir(p), ".tmp-link-"+d.Name())
		os.Remove(tmp)
		if err := os.Symlink(rel, tmp); err != nil {
			return err
		}
		return os.Rename(tmp, p)
	})
}
