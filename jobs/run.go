package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/softxs/v2backup/jobs/runfile"
	"github.com/softxs/v2backup/tiers/inventory"
)

// run is one backup job in progress.
type run struct {
	ctx   context.Context
	app   *inventory.App
	o     *Options
	dir   string     // {target}/{relpath}
	mu    sync.Mutex // guards rec.Checks and tools: a dump is verified while files are copied
	rec   runfile.Record
	tools map[string]string
}

// stepError carries the failed step's name up to Backup.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// step runs f as the named step, logging it and showing it on a terminal.
func (r *run) step(name string, f func() error) error {
	if err := r.ctx.Err(); err != nil {
		return &stepError{name, err}
	}
	r.progressf("%s: %s\n", r.app.Name, name)
	t0 := time.Now()
	if err := f(); err != nil {
		var se *stepError
		if errors.As(err, &se) {
			return err
		}
		return &stepError{name, err}
	}
	r.o.log().Info("step done", "app", r.app.Name, "step", name, "seconds", time.Since(t0).Seconds())
	return nil
}

func (r *run) check(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rec.Checks = append(r.rec.Checks, fmt.Sprintf(format, args...))
}

func (r *run) progressf(format string, args ...any) {
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, format, args...)
	}
}

func (r *run) runType() error {
	switch r.app.Type {
	case inventory.TypeRails:
		return r.rails()
	case inventory.TypeDrawMGT:
		return r.drawmgt()
	case inventory.TypeMoinMoin:
		return r.moinmoin()
	case inventory.TypeGit:
		return r.git()
	case inventory.TypeCVS:
		return r.cvs()
	case inventory.TypeMaildir:
		return r.maildir()
	case inventory.TypeWordPress:
		return r.wordpress()
	case inventory.TypeFiles:
		return r.files("")
	}
	return &stepError{"start", fmt.Errorf("application type %q has no backup job (known: %v)", r.app.Type, inventory.AppTypes)}
}

// tailBuffer keeps the last max bytes written to it: a child's stderr.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// childEnv is the environment of a child: ours, without credentials a
// parent might have set, with a stable locale for messages, plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MYSQL_PWD", "PGPASSWORD", "PGPASSFILE", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "LC_ALL", "LANG":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LC_ALL=C")
	return append(env, extra...)
}

// command prepares a child with the stable environment, its stderr kept
// for error messages.
func command(ctx context.Context, prog string, args ...string) (*exec.Cmd, *tailBuffer) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = childEnv()
	stderr := &tailBuffer{max: 4096}
	cmd.Stderr = stderr
	cmd.WaitDelay = 10 * time.Second
	return cmd, stderr
}

// cmdError names the program, how it ended and what it said.
func cmdError(prog string, err error, stderr *tailBuffer) error {
	msg := stderr.String()
	if msg == "" {
		return fmt.Errorf("%s: %w", prog, err)
	}
	return fmt.Errorf("%s: %w: %s", prog, err, lastLines(msg, 6))
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// runCmd runs a prepared command and returns a descriptive error.
func runCmd(cmd *exec.Cmd, stderr *tailBuffer) error {
	if err := cmd.Run(); err != nil {
		return cmdError(filepath.Base(cmd.Path), err, stderr)
	}
	return nil
}

// versions caches tool version lines for the process.
var versions sync.Map

// toolVersion records prog's version line (first line of --version) in the
// run record, once per process.
func (r *run) toolVersion(prog string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := versions.Load(prog); ok {
		r.tools[prog] = v.(string)
		return
	}
	out, err := exec.CommandContext(r.ctx, prog, "--version").Output()
	v := "unknown"
	if err == nil {
		v, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	versions.Store(prog, v)
	r.tools[prog] = v
}

// firstTool is the first of the programs found in PATH.
func firstTool(progs ...string) (string, error) {
	for _, p := range progs {
		if _, err := exec.LookPath(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("none of %s is installed (not in PATH)", strings.Join(progs, ", "))
}

// sourceDir checks that a source directory exists and is a directory,
// following a symlink at its top only.
func sourceDir(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("source directory %s: %w", p, pe.Err)
		}
		return fmt.Errorf("source directory %s: %w", p, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("source directory %s: not a directory", p)
	}
	return nil
}

// rsync exit codes that matter.
const rsyncVanished = 24 // some source files vanished during the copy

// rsync mirrors src (a directory; its top-level symlink is followed) into
// dst with rsync -a --delete: symlinks inside are copied as symlinks, each
// file replaced atomically. The app's exclude patterns apply.
func (r *run) rsync(src, dst string, extra ...string) error {
	if err := sourceDir(src); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	// --modify-window=-1: same-second rewrites of same-size files are copied.
	args := []string{"-a", "--numeric-ids", "--delete", "--modify-window=-1"}
	args = append(args, extra...)
	if r.app.Files != nil {
		for _, x := range r.app.Files.Exclude {
			args = append(args, "--exclude="+x)
		}
	}
	// Links pointing out of the tree are recorded, not copied (LinksFile).
	dstRel, err := filepath.Rel(r.dir, dst)
	if err != nil || dstRel == ".." || strings.HasPrefix(dstRel, "../") {
		return fmt.Errorf("copy destination %s is outside %s", dst, r.dir)
	}
	skip := map[string]bool{}
	for _, x := range extra {
		if n, ok := strings.CutPrefix(x, "--exclude=/"); ok && !strings.ContainsAny(strings.TrimSuffix(n, "/"), "/*?[") {
			skip[strings.TrimSuffix(n, "/")] = true
		}
	}
	links, err := outsideLinks(src, filepath.ToSlash(dstRel), skip)
	if err != nil {
		return fmt.Errorf("listing symlinks of %s: %w", src, err)
	}
	if len(links) > 0 {
		f, err := os.CreateTemp("", "v2backup-exclude-")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		for _, l := range links {
			fmt.Fprintln(f, rsyncPattern(strings.TrimPrefix(strings.TrimPrefix(l.Path, filepath.ToSlash(dstRel)), "/")))
		}
		if err := f.Close(); err != nil {
			return err
		}
		args = append(args, "--exclude-from="+f.Name())
	}
	if err := r.rsyncRaw(append(args, strings.TrimSuffix(src, "/")+"/", strings.TrimSuffix(dst, "/")+"/"), src); err != nil {
		return err
	}
	return r.recordLinks(filepath.ToSlash(dstRel), links)
}

// rsyncRaw runs rsync with args; what names the source in messages.
func (r *run) rsyncRaw(args []string, what string) error {
	r.toolVersion("rsync")
	if r.o.Progress != nil {
		args = append([]string{"--info=progress2"}, args...)
	}
	cmd, stderr := command(r.ctx, "rsync", args...)
	if r.o.Progress != nil {
		cmd.Stdout = r.o.Progress
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == rsyncVanished {
		// A live tree: files removed while being copied are gone anyway.
		r.check("rsync %s: some files vanished during the copy", what)
		return nil
	}
	if err != nil {
		return cmdError("rsync", err, stderr)
	}
	return nil
}

// copyFile copies one file or symlink (not following it) to dst, which
// must have the same base name. rsync is given dst's directory, never dst
// itself: a dst that is a symlink to a directory (a Rails current link
// copied last night) would otherwise be followed and written through.
func (r *run) copyFile(src, dst string) error {
	if filepath.Base(src) != filepath.Base(dst) {
		return fmt.Errorf("copying %s to %s: names differ", src, dst)
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("source file %s: %w", src, errors.Unwrap(err))
	}
	dstRel, err := filepath.Rel(r.dir, dst)
	if err != nil || strings.HasPrefix(dstRel, "../") {
		return fmt.Errorf("copy destination %s is outside %s", dst, r.dir)
	}
	dstRel = filepath.ToSlash(dstRel)
	if fi.Mode()&os.ModeSymlink != 0 {
		t, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if outside(dstRel, t) {
			return r.recordLinks(dstRel, []Link{{Path: dstRel, Target: t}})
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := r.rsyncRaw([]string{"-a", "--numeric-ids", src, filepath.Dir(dst) + "/"}, src); err != nil {
		return err
	}
	return r.recordLinks(dstRel, nil)
}

// removeStaleTemps removes .tmp-* entries a failed earlier run left in dir.
func removeStaleTemps(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
