package jobs

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/softxs/v2backup/jobs/runfile"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// refs lists a repository's refs with their objects, and HEAD.
func refs(t *testing.T, dir string) string {
	t.Helper()
	return runT(t, dir, "git", "for-each-ref", "--format=%(objectname) %(refname)") + runT(t, dir, "git", "symbolic-ref", "HEAD")
}

func TestGit(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	repos := filepath.Join(root, "git")
	work := filepath.Join(root, "work")
	os.MkdirAll(work, 0o755)
	runT(t, work, "git", "init", "-q", "-b", "main")
	writeFiles(t, work, map[string]string{"README": "v1\n", "src/a.c": "int main(){}\n"})
	runT(t, work, "git", "add", ".")
	runT(t, work, "git", "commit", "-q", "-m", "first")
	runT(t, work, "git", "tag", "-a", "v1.0", "-m", "release 1.0")
	runT(t, work, "git", "checkout", "-q", "-b", "feature")
	writeFiles(t, work, map[string]string{"src/b.c": "void b(){}\n"})
	runT(t, work, "git", "add", ".")
	runT(t, work, "git", "commit", "-q", "-m", "feature")
	runT(t, work, "git", "tag", "light")
	runT(t, work, "git", "checkout", "-q", "main")
	os.MkdirAll(repos, 0o755)
	runT(t, repos, "git", "clone", "-q", "--bare", work, "proj.git")
	runT(t, filepath.Join(repos, "proj.git"), "git", "fetch", "-q", work, "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*")
	os.MkdirAll(filepath.Join(repos, "group"), 0o755)
	runT(t, filepath.Join(repos, "group"), "git", "clone", "-q", work, "checkout")
	runT(t, repos, "git", "init", "-q", "--bare", "empty.git")
	writeFiles(t, repos, map[string]string{"README.txt": "not a repository"})

	app := &inventory.App{Name: "git", Type: inventory.TypeGit, Path: repos, Relpath: "git.softxs.ch"}
	target := filepath.Join(root, "backup")
	res, err := Backup(ctx, app, Options{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"git proj.git: bundle git/proj.git.mirror.bundle passes git bundle verify",
		"git group/checkout: bundle git/group/checkout.bundle passes git bundle verify",
		"git empty.git: empty repository (no refs), no bundle"} {
		if !strings.Contains(strings.Join(res.Record.Checks, "\n"), want) {
			t.Errorf("checks %q lack %q", res.Record.Checks, want)
		}
	}
	dest := filepath.Join(root, "restored")
	rr, err := Restore(ctx, app, RestoreOptions{Source: res.Dir, Dest: dest})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rr.Repos, ",") != "group/checkout,proj.git" {
		t.Errorf("restored repositories %v", rr.Repos)
	}
	if want, got := refs(t, filepath.Join(repos, "proj.git")), refs(t, filepath.Join(dest, "proj.git")); want != got {
		t.Errorf("proj.git refs differ:\n%s\n---\n%s", want, got)
	}
	runT(t, filepath.Join(dest, "proj.git"), "git", "fsck", "--strict")
	if b, err := os.ReadFile(filepath.Join(dest, "group/checkout/src/a.c")); err != nil || string(b) != "int main(){}\n" {
		t.Errorf("restored work tree: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dest, "git")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundles copied into the restore: %v", err)
	}

	// A removed repository's bundle goes; a damaged repository fails the
	// job and leaves the previous bundle.
	os.RemoveAll(filepath.Join(repos, "group"))
	if _, err := Backup(ctx, app, Options{Target: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(res.Dir, "git/group/checkout.bundle")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale bundle kept: %v", err)
	}
	before := tree(t, res.Dir, under(runfile.Name))
	objs, _ := filepath.Glob(filepath.Join(repos, "proj.git/objects/pack/*.pack"))
	loose, _ := filepath.Glob(filepath.Join(repos, "proj.git/objects/??/*"))
	for _, f := range append(objs, loose...) {
		os.Truncate(f, 10)
	}
	_, err = Backup(ctx, app, Options{Target: target})
	var je *Error
	if !errors.As(err, &je) || je.Step != "bundle proj.git" {
		t.Fatalf("bundling a damaged repository: %v", err)
	}
	kept(t, before, tree(t, res.Dir, under(runfile.Name)))
	noTemps(t, res.Dir)
}

// cvsRepo makes a CVS repository with one imported module.
func cvsRepo(t *testing.T, root string) (repo string) {
	repo = filepath.Join(root, "cvsroot")
	runT(t, root, "cvs", "-d", repo, "init")
	src := filepath.Join(root, "import")
	writeFiles(t, src, map[string]string{"main.c": "int main(){return 0;}\n", "doc/readme.txt": "hello\n"})
	runT(t, src, "cvs", "-d", repo, "import", "-m", "initial", "project", "softxs", "start")
	return repo
}

// waitHandler signals when a log record with the message arrives.
type waitHandler struct {
	msg  string
	once sync.Once
	ch   chan struct{}
}

func (h *waitHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *waitHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}
func (h *waitHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *waitHandler) WithGroup(string) slog.Handler      { return h }

func TestCVS(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	repo := cvsRepo(t, root)
	app := &inventory.App{Name: "cvs", Type: inventory.TypeCVS, Path: repo, Relpath: "cvs.softxs.ch"}
	target := filepath.Join(root, "backup")
	res, err := Backup(ctx, app, Options{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	sameTree(t, "cvs backup", tree(t, repo, nil), tree(t, filepath.Join(res.Dir, "cvs"), nil))
	if ls, _ := filepath.Glob(filepath.Join(repo, "*", "#cvs.*")); len(ls) > 0 {
		t.Errorf("locks left in the repository: %v", ls)
	}
	before := tree(t, res.Dir, under(runfile.Name))

	// A running CVS command's lock: waited for, then reported.
	lock := filepath.Join(repo, "project", "#cvs.lock")
	os.Mkdir(lock, 0o755)
	_, err = Backup(ctx, app, Options{Target: target, LockWait: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "cvs: lock repository: "+filepath.Join(repo, "project")+": locked by a running CVS command (#cvs.lock since") ||
		!strings.Contains(err.Error(), "waited 300ms") {
		t.Fatalf("locked repository: %v", err)
	}
	kept(t, before, tree(t, res.Dir, under(runfile.Name)))
	if ls, _ := filepath.Glob(filepath.Join(repo, "*", "#cvs.rfl*")); len(ls) > 0 {
		t.Errorf("read locks left after a failed run: %v", ls)
	}
	// A writer's lock file also makes it wait.
	os.Remove(lock)
	wfl := filepath.Join(repo, "project", "doc", "#cvs.wfl.otherhost.4242")
	os.WriteFile(wfl, nil, 0o644)
	if _, err = Backup(ctx, app, Options{Target: target, LockWait: 100 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "#cvs.wfl.otherhost.4242") {
		t.Fatalf("write-locked directory: %v", err)
	}
	// The lock goes away while the job waits: the job goes on.
	os.Remove(wfl)
	os.Mkdir(lock, 0o755)
	h := &waitHandler{msg: "waiting for CVS lock", ch: make(chan struct{})}
	done := make(chan error)
	go func() {
		_, err := Backup(ctx, app, Options{Target: target, LockWait: 5 * time.Minute, Logger: slog.New(h)})
		done <- err
	}()
	<-h.ch
	os.Remove(lock)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Restore, and check out from the restored repository.
	dest := filepath.Join(root, "restored")
	if _, err := Restore(ctx, app, RestoreOptions{Source: res.Dir, Dest: dest}); err != nil {
		t.Fatal(err)
	}
	co := filepath.Join(root, "co")
	os.MkdirAll(co, 0o755)
	runT(t, co, "cvs", "-d", filepath.Join(dest, "cvs"), "checkout", "project")
	if b, err := os.ReadFile(filepath.Join(co, "project/doc/readme.txt")); err != nil || string(b) != "hello\n" {
		t.Errorf("checked out from the restore: %q, %v", b, err)
	}
}

func TestMaildir(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	mail := filepath.Join(root, "Maildir")
	writeFiles(t, mail, map[string]string{
		"cur/1700000000.M1P1.host:2,S":       "From: a\n\nseen\n",
		"new/1700000001.M2P1.host":           "From: b\n\nnew\n",
		"tmp/1700000002.M3P1.host":           "half delivered",
		".Sent/cur/1700000003.M4P1.host:2,S": "From: me\n\nsent\n",
		".Sent/maildirfolder":                "",
		"dovecot.index.cache":                "cache",
	})
	os.MkdirAll(filepath.Join(mail, ".Sent/new"), 0o700)
	os.MkdirAll(filepath.Join(mail, ".Sent/tmp"), 0o700)
	app := &inventory.App{Name: "mail", Type: inventory.TypeMaildir, Path: mail, Relpath: "mail.softxs.ch/info"}
	res, err := Backup(ctx, app, Options{Target: filepath.Join(root, "backup")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(res.Record.Checks, "\n"), "maildir: 2 mailbox(es) copied") {
		t.Errorf("checks %q", res.Record.Checks)
	}
	dest := filepath.Join(root, "restored")
	if _, err := Restore(ctx, app, RestoreOptions{Source: res.Dir, Dest: dest}); err != nil {
		t.Fatal(err)
	}
	want := tree(t, mail, func(rel string) bool {
		return rel == "dovecot.index.cache" || rel == ".Sent/maildirfolder" || strings.HasPrefix(rel, "tmp/")
	})
	sameTree(t, "restored Maildir", want, tree(t, filepath.Join(dest, "maildir"), nil))

	// Not a Maildir: reported.
	empty := filepath.Join(root, "empty")
	os.MkdirAll(empty, 0o755)
	bad := &inventory.App{Name: "nomail", Type: inventory.TypeMaildir, Path: empty, Relpath: "mail.softxs.ch/none"}
	if _, err := Backup(ctx, bad, Options{Target: filepath.Join(root, "backup")}); err == nil || !strings.Contains(err.Error(), "nomail: check mailboxes: "+empty+": no mailbox") {
		t.Errorf("empty maildir: %v", err)
	}
}

func TestMoinMoin(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	wiki := filepath.Join(root, "wiki")
	writeFiles(t, wiki, map[string]string{
		"data/pages/FrontPage/current":                 "00000002\n",
		"data/pages/FrontPage/revisions/00000001":      "= Welcome =\n",
		"data/pages/FrontPage/revisions/00000002":      "= Welcome! =\n",
		"data/pages/FrontPage/cache/text_html":         "<h1>",
		"data/pages/FrontPage/attachments/plan.pdf":    "pdf",
		"data/pages/FrontPage/edit-log":                "log",
		"data/user/1700000000.12.345":                  "name=admin\n",
		"data/cache/wikiconfig/data":                   "pickle",
		"data/event-log":                               "events",
		"wikiconfig.py":                                "sitename = 'SoftXS'\n",
		"underlay/pages/HelpContents/revisions/000001": "help",
	})
	app := &inventory.App{Name: "wiki", Type: inventory.TypeMoinMoin, Path: wiki, Relpath: "wiki.softxs.ch",
		Files: &inventory.Files{Paths: []string{"wikiconfig.py"}}}
	res, err := Backup(ctx, app, Options{Target: filepath.Join(root, "backup")})
	if err != nil {
		t.Fatal(err)
	}
	// Listed files come along under files/.
	if b, err := os.ReadFile(filepath.Join(res.Dir, "files/wikiconfig.py")); err != nil || string(b) != "sitename = 'SoftXS'\n" {
		t.Errorf("listed file: %q %v", b, err)
	}
	want := tree(t, filepath.Join(wiki, "data"), under("cache", "pages/FrontPage/cache"))
	sameTree(t, "wiki data", want, tree(t, filepath.Join(res.Dir, "data"), nil))
	dest := filepath.Join(root, "restored")
	if _, err := Restore(ctx, app, RestoreOptions{Source: res.Dir, Dest: dest}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, "restored wiki data", want, tree(t, filepath.Join(dest, "data"), nil))

	os.RemoveAll(filepath.Join(wiki, "data"))
	if _, err := Backup(ctx, app, Options{Target: filepath.Join(root, "backup")}); err == nil ||
		!strings.Contains(err.Error(), "wiki: copy data: source directory "+filepath.Join(wiki, "data")+": no such file or directory") {
		t.Errorf("missing data directory: %v", err)
	}
}

func TestFiles(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	home := filepath.Join(root, "home/app")
	etc := filepath.Join(root, "etc/app")
	writeFiles(t, home, map[string]string{"conf/app.ini": "x=1", "conf/app.ini.tmp": "junk", "data/a.txt": "a", "notes.txt": "n"})
	writeFiles(t, etc, map[string]string{"site.conf": "s", "site.conf.tmp": "junk"})
	app := &inventory.App{Name: "misc", Type: inventory.TypeFiles, Path: home, Relpath: "misc.softxs.ch",
		Files: &inventory.Files{Paths: []string{"conf", "data", "notes.txt", etc}, Exclude: []string{"*.tmp"}}}
	res, err := Backup(ctx, app, Options{Target: filepath.Join(root, "backup")})
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(root, "restored")
	if _, err := Restore(ctx, app, RestoreOptions{Source: res.Dir, Dest: dest}); err != nil {
		t.Fatal(err)
	}
	noTmp := func(rel string) bool { return strings.HasSuffix(rel, ".tmp") }
	sameTree(t, "restored home files", tree(t, home, noTmp), tree(t, dest, under(strings.Split(strings.TrimPrefix(root, "/"), "/")[0])))
	sameTree(t, "restored absolute path", tree(t, etc, noTmp), tree(t, filepath.Join(dest, strings.TrimPrefix(etc, "/")), nil))

	for _, c := range []struct {
		paths []string
		want  string
	}{
		{nil, "misc: find application: type files needs [app.files] paths"},
		{[]string{"conf", "conf/app.ini"}, `files paths "conf" and "conf/app.ini" overlap`},
		{[]string{".hidden"}, `files path ".hidden": a top-level name starting with '.' is reserved`},
		{[]string{"nosuch"}, "misc: copy " + filepath.Join(home, "nosuch") + ": source directory " + filepath.Join(home, "nosuch") + ": no such file or directory"},
	} {
		bad := *app
		bad.Files = &inventory.Files{Paths: c.paths}
		if _, err := Backup(ctx, &bad, Options{Target: filepath.Join(root, "backup2")}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("paths %q: error %v, want %q", c.paths, err, c.want)
		}
	}
}

func TestUnknownTypeAndTarget(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	app := &inventory.App{Name: "x", Type: "svn", Path: root, Relpath: "x.softxs.ch"}
	_, err := Backup(ctx, app, Options{Target: filepath.Join(root, "b")})
	if err == nil || !strings.Contains(err.Error(), `x: start: application type "svn" has no backup job`) {
		t.Errorf("unknown type: %v", err)
	}
	if rec := readRun(t, filepath.Join(root, "b/x.softxs.ch")); rec.Status != runfile.Failed || rec.Step != "start" {
		t.Errorf("run file %+v", rec)
	}
	if _, err := Backup(ctx, app, Options{}); err == nil || !strings.Contains(err.Error(), "no target directory") {
		t.Errorf("no target: %v", err)
	}
	bad := *app
	bad.Relpath = "../escape"
	if _, err := Backup(ctx, &bad, Options{Target: root}); err == nil || !strings.Contains(err.Error(), `invalid relpath "../escape"`) {
		t.Errorf("bad relpath: %v", err)
	}
	// A target that cannot be created.
	os.WriteFile(filepath.Join(root, "file"), nil, 0o644)
	if _, err := Backup(ctx, app, Options{Target: filepath.Join(root, "file")}); err == nil || !strings.Contains(err.Error(), "x: create backup directory") {
		t.Errorf("unwritable target: %v", err)
	}
	// A cancelled context stops the job and records the failure.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	ok := &inventory.App{Name: "y", Type: inventory.TypeMoinMoin, Path: root, Relpath: "y.softxs.ch"}
	if _, err := Backup(cctx, ok, Options{Target: filepath.Join(root, "b")}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Fatal(err)
	}
}

// TestBackupAll runs every job even when one fails, and reports the failure.
func TestBackupAll(t *testing.T) {
	root := t.TempDir()
	var apps []*inventory.App
	for _, n := range []string{"a", "b", "c"} {
		p := filepath.Join(root, n)
		if n != "b" {
			writeFiles(t, p, map[string]string{"data/pages/P/current": n})
		}
		apps = append(apps, &inventory.App{Name: n, Type: inventory.TypeMoinMoin, Path: p, Relpath: tiers.Relpath(n + ".softxs.ch")})
	}
	res, err := BackupAll(context.Background(), apps, Options{Target: filepath.Join(root, "backup")})
	if len(res) != 3 || res[0].Err != nil || res[1].Err == nil || res[2].Err != nil {
		t.Fatalf("results %+v", res)
	}
	if err == nil || !strings.HasPrefix(err.Error(), "b: copy data: source directory") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %v", err)
	}
	var je *Error
	if !errors.As(err, &je) || je.App != "b" {
		t.Errorf("error %v is not b's *Error", err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res, err := BackupAll(cctx, apps, Options{Target: filepath.Join(root, "backup")}); len(res) != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v %v", res, err)
	}
}
