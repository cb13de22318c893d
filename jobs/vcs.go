package jobs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/softxs/v2backup/tiers"
)

// Bundle names in the git/ directory of a backup: a bare repository
// {rel} becomes {rel}.mirror.bundle, a repository with a work tree
// {rel}.bundle (its committed history; the work tree is not kept).
const (
	GitDir             = "git"
	bundleSuffix       = ".bundle"
	mirrorBundleSuffix = ".mirror.bundle"
)

func isBareRepo(p string) bool {
	return isDir(filepath.Join(p, "objects")) && isDir(filepath.Join(p, "refs")) && fileExists(filepath.Join(p, "HEAD"))
}

func fileExists(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}

type repo struct {
	rel  string // relative to the application's path
	dir  string
	bare bool
}

// findRepos lists the repositories under root, not descending into them
// and not following symlinks.
func findRepos(root string) ([]repo, error) {
	var out []repo
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			rel = filepath.Base(root)
		}
		switch {
		case isBareRepo(p):
			out = append(out, repo{rel, p, true})
			return filepath.SkipDir
		case isDir(filepath.Join(p, ".git")):
			out = append(out, repo{rel, p, false})
			return filepath.SkipDir
		}
		return nil
	})
	return out, err
}

// git bundles every repository under the application's path with
// git bundle create --all (one consistent read of its refs), verifies each
// bundle with git bundle verify, and removes bundles of repositories that
// are gone.
func (r *run) git() error {
	var repos []repo
	if err := r.step("find repositories", func() (err error) {
		if err := sourceDir(r.app.Path); err != nil {
			return err
		}
		if repos, err = findRepos(r.app.Path); err != nil {
			return err
		}
		if len(repos) == 0 {
			return fmt.Errorf("%s: no git repository", r.app.Path)
		}
		r.toolVersion("git")
		return nil
	}); err != nil {
		return err
	}
	gitDir := filepath.Join(r.dir, GitDir)
	keep := map[string]bool{}
	for _, rp := range repos {
		name := rp.rel + bundleSuffix
		if rp.bare {
			name = rp.rel + mirrorBundleSuffix
		}
		keep[name] = true
		if err := r.step("bundle "+rp.rel, func() error { return r.bundle(rp, filepath.Join(gitDir, name)) }); err != nil {
			return err
		}
	}
	if err := r.step("remove bundles of removed repositories", func() error {
		return filepath.WalkDir(gitDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(gitDir, p)
			if strings.HasSuffix(rel, bundleSuffix) && !keep[rel] {
				r.check("removed bundle %s of a repository no longer in %s", rel, r.app.Path)
				return os.Remove(p)
			}
			return nil
		})
	}); err != nil {
		return err
	}
	return r.extraFiles()
}

func (r *run) bundle(rp repo, dst string) error {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := removeStaleTemps(dir); err != nil {
		return err
	}
	cmd, stderr := command(r.ctx, "git", "-C", rp.dir, "for-each-ref", "--count=1", "--format=%(refname)")
	out, err := cmd.Output()
	if err != nil {
		return cmdError("git for-each-ref", err, stderr)
	}
	if strings.TrimSpace(string(out)) == "" {
		r.check("git %s: empty repository (no refs), no bundle", rp.rel)
		return nil
	}
	tmp := filepath.Join(dir, ".tmp-"+filepath.Base(dst))
	defer os.Remove(tmp)
	os.Remove(tmp + ".lock")
	cmd, stderr = command(r.ctx, "git", "-C", rp.dir, "bundle", "create", "--quiet", tmp, "--all")
	if err := runCmd(cmd, stderr); err != nil {
		os.Remove(tmp + ".lock")
		return fmt.Errorf("%s: %w", rp.dir, err)
	}
	if err := fsyncFile(tmp); err != nil {
		return err
	}
	cmd, stderr = command(r.ctx, "git", "-C", rp.dir, "bundle", "verify", "--quiet", tmp)
	if err := runCmd(cmd, stderr); err != nil {
		return fmt.Errorf("bundle of %s does not verify: %w", rp.dir, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	if err := tiers.SyncDir(dir); err != nil {
		return err
	}
	r.check("git %s: bundle %s passes git bundle verify", rp.rel, strings.TrimPrefix(dst, r.dir+"/"))
	return nil
}

func fsyncFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	return nil
}

// CVS lock names (CVS's lock.c): a directory's master lock, and readers'
// and writers' lock files.
const (
	cvsMasterLock = "#cvs.lock"
	cvsReadLock   = "#cvs.rfl"
	cvsWriteLock  = "#cvs.wfl"
)

// cvs copies a CVS repository (the inventory path holds CVSROOT/) while
// holding a CVS read lock in every directory, as a CVS reader does: writers
// wait for it, and it waits for a running writer. A lock held longer than
// LockWait is reported, and nothing is copied.
func (r *run) cvs() error {
	root := r.app.Path
	if err := r.step("find repository", func() error {
		if err := sourceDir(root); err != nil {
			return err
		}
		if !isDir(filepath.Join(root, "CVSROOT")) {
			return fmt.Errorf("%s: not a CVS repository (no CVSROOT/)", root)
		}
		return nil
	}); err != nil {
		return err
	}
	var locks []string
	defer func() {
		for _, l := range locks {
			os.Remove(l)
		}
	}()
	if err := r.step("lock repository", func() (err error) {
		locks, err = r.cvsLock(root)
		return err
	}); err != nil {
		return err
	}
	r.check("cvs: read-locked %d directories", len(locks))
	if err := r.step("copy repository", func() error {
		return r.rsync(root, filepath.Join(r.dir, "cvs"), "--exclude=#cvs.*")
	}); err != nil {
		return err
	}
	return r.extraFiles()
}

// cvsLock takes a read lock in every directory of the repository, in a
// stable order, and returns the lock files it created. On failure it
// removes those it made.
func (r *run) cvsLock(root string) (locks []string, err error) {
	defer func() {
		if err != nil {
			for _, l := range locks {
				os.Remove(l)
			}
			locks = nil
		}
	}()
	var dirs []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), "#cvs.") {
				return filepath.SkipDir
			}
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(dirs)
	wait := r.o.LockWait
	if wait <= 0 {
		wait = DefaultLockWait
	}
	deadline := time.Now().Add(wait)
	host, _ := os.Hostname()
	mine := fmt.Sprintf("%s.v2backup-%s.%d", cvsReadLock, host, os.Getpid())
	poll := min(time.Second, wait/20+time.Millisecond)
	for _, d := range dirs {
		logged := false
		for {
			busy, err := tryReadLock(d, mine)
			if err != nil {
				return locks, err
			}
			if busy == "" {
				locks = append(locks, filepath.Join(d, mine))
				break
			}
			if !time.Now().Before(deadline) {
				return locks, fmt.Errorf("%s: locked by a running CVS command (%s); waited %s", d, busy, wait)
			}
			if !logged {
				r.o.log().Info("waiting for CVS lock", "app", r.app.Name, "dir", d, "lock", busy)
				r.progressf("%s: waiting for CVS lock in %s (%s)\n", r.app.Name, d, busy)
				logged = true
			}
			select {
			case <-r.ctx.Done():
				return locks, r.ctx.Err()
			case <-time.After(poll):
			}
		}
	}
	return locks, nil
}

// tryReadLock does one attempt of CVS's read lock protocol in dir: make the
// master lock directory, check no writer holds the directory, create our
// read lock file, remove the master lock. busy describes who holds it when
// the attempt failed.
func tryReadLock(dir, mine string) (busy string, err error) {
	master := filepath.Join(dir, cvsMasterLock)
	if err := os.Mkdir(master, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return describeLock(master), nil
		}
		return "", fmt.Errorf("taking CVS lock %s: %w", master, err)
	}
	defer os.Remove(master)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), cvsWriteLock) {
			return describeLock(filepath.Join(dir, e.Name())), nil
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, mine), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return "", fmt.Errorf("creating CVS read lock in %s: %w", dir, err)
	}
	return "", f.Close()
}

func describeLock(p string) string {
	fi, err := os.Stat(p)
	if err != nil {
		return filepath.Base(p)
	}
	uid := ""
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid = ", owner uid " + strconv.Itoa(int(st.Uid))
	}
	return fmt.Sprintf("%s since %s%s", filepath.Base(p), fi.ModTime().Format(time.DateTime), uid)
}
