package pull

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/pull/sums"
	"github.com/softxs/v2backup/jobs/sshtest"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/snapshot"
)

var day1 = map[string]string{
	"web/demo.softxs.ch/hydro/db/hydro-20261128.sql": "CREATE TABLE t;\n",
	"web/demo.softxs.ch/hydro/shared/config.yml":     "a: 1\n",
	"web/demo.softxs.ch/hydro/shared/big.bin":        strings.Repeat("x", 100000),
	"intern/wiki.softxs.ch/data/pages/Front/rev":     "00000001\n",
}

func mustRun(t *testing.T, o Options) *Report {
	t.Helper()
	rep, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	return rep
}

func TestPullVerifySnapshotHistoryAndLinks(t *testing.T) {
	s := sshtest.StartT(t)
	h := newHost(t, hostA, day1)
	db := openDB(t)
	o := options(t, s, db, h)

	// Applications keep writing to the live tier while the pull runs;
	// the view shows the snapshot, so the pull sees none of it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := filepath.Join(h.part.LocalRoot(), "web/demo.softxs.ch/hydro/shared/log.txt")
			os.WriteFile(p, []byte(strings.Repeat("w", i%5000)), 0o644)
		}
	}()
	rep, err := Run(context.Background(), o)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	r := rep.Results[0]
	if !r.OK() || r.Snapshot != "2026-11-28T050000" || r.Files != 4 || r.Bytes != int64(len(strings.Join(slicesOf(day1), ""))) {
		t.Fatalf("result = %+v", r)
	}
	cur := o.Partition.RemoteServer(hostA)
	got := treeSums(t, cur)
	for p, c := range day1 {
		b, err := os.ReadFile(filepath.Join(cur, p))
		if err != nil || string(b) != c {
			t.Errorf("%s: %q, %v; want %q", p, b, err, c)
		}
	}
	if _, ok := got["web/demo.softxs.ch/hydro/shared/log.txt"]; ok {
		t.Errorf("the pull copied a file written after the snapshot")
	}
	// The copy carries its manifest: sha256sum -c works on the backup server.
	if out, err := exec.Command("sh", "-c", "cd "+cur+" && sha256sum -c --quiet SHA256SUMS").CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c in %s: %v: %s", cur, err, out)
	}
	if _, err := os.Stat(o.Partition.StagingDir(hostA)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("staging left after a good pull: %v", err)
	}

	// Catalog: the pull and the remote tier's snapshot with hashes.
	pulls, err := db.Pulls(context.Background(), string(hostA), 0)
	if err != nil || len(pulls) != 1 {
		t.Fatalf("pulls: %v, %v", pulls, err)
	}
	if p := pulls[0]; p.Result != catalog.RunOK || p.Snapshot != "2026-11-28T050000" || p.Files != 4 || p.BackupServer != string(backup) || p.ID != r.PullID {
		t.Errorf("pull record = %+v", p)
	}
	if rep.Snapshot == "" {
		t.Fatal("no remote snapshot")
	}
	snap, err := db.SnapshotByName(context.Background(), tiers.Remote, string(backup), rep.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	hashes := map[string]string{}
	db.WalkManifest(context.Background(), snap.ID, "", func(e catalog.ManifestEntry) error {
		hashes[e.Path] = e.SHA256
		return nil
	})
	for p := range day1 {
		want := strings.Fields(got[p])[0]
		if hashes[string(hostA)+"/"+p] != want {
			t.Errorf("catalog manifest of %s: %q, want %q", p, hashes[string(hostA)+"/"+p], want)
		}
	}
	if _, err := os.Stat(filepath.Join(o.Partition.Snapshot(tiers.Remote, rep.Snapshot), string(hostA), "web/demo.softxs.ch/hydro/shared/config.yml")); err != nil {
		t.Errorf("remote snapshot tree: %v", err)
	}

	// History files: the host and each application.
	hist, err := snapshot.ReadHistory(filepath.Join(o.HistoryDir, "backup-hydro-20261128"))
	if err != nil {
		t.Fatal(err)
	}
	if hist.Status != snapshot.StatusComplete || hist.Files != 3 || hist.Changed != 3 || hist.Server != string(hostA) {
		t.Errorf("hydro history = %+v", hist)
	}
	hh, err := snapshot.ReadHistory(filepath.Join(o.HistoryDir, "backup-zg-3.softxs.ch-20261128"))
	if err != nil || hh.Files != 4 || hh.Bytes != r.Bytes {
		t.Errorf("host history = %+v, %v", hh, err)
	}

	// Day 2: one file changed, one added; the rest become hard links to
	// the previous copy (and its snapshot).
	unchanged := filepath.Join(cur, "web/demo.softxs.ch/hydro/shared/big.bin")
	before := ino(t, unchanged)
	writeTree(t, h.part.LocalRoot(), map[string]string{
		"web/demo.softxs.ch/hydro/shared/config.yml": "a: 2\n",
		"intern/wiki.softxs.ch/data/pages/New/rev":   "00000001\n",
	})
	os.Remove(filepath.Join(h.part.LocalRoot(), "web/demo.softxs.ch/hydro/shared/log.txt"))
	h.waitView(t, h.snapshot(t))
	o.Now = clock(time.Date(2026, 11, 29, 6, 0, 0, 0, time.Local))
	rep2 := mustRun(t, o)
	if r := rep2.Results[0]; r.Snapshot != "2026-11-29T050000" || r.Files != 5 || r.Hashed != 2 {
		t.Fatalf("day 2 result = %+v (want 5 files, 2 of them read: the changed and the new)", r)
	}
	if ino(t, unchanged) != before {
		t.Errorf("unchanged file was copied again, not linked (inode %d, was %d)", ino(t, unchanged), before)
	}
	if b, _ := os.ReadFile(filepath.Join(cur, "web/demo.softxs.ch/hydro/shared/config.yml")); string(b) != "a: 2\n" {
		t.Errorf("changed file: %q", b)
	}
	old := filepath.Join(o.Partition.Snapshot(tiers.Remote, rep.Snapshot), string(hostA), "web/demo.softxs.ch/hydro/shared/config.yml")
	if b, _ := os.ReadFile(old); string(b) != "a: 1\n" {
		t.Errorf("the first remote snapshot changed: %q", b)
	}
	hist2, err := snapshot.ReadHistory(filepath.Join(o.HistoryDir, "backup-hydro-20261129"))
	if err != nil || hist2.Changed != 1 || hist2.Files != 3 {
		t.Errorf("day 2 hydro history = %+v, %v", hist2, err)
	}
	wiki2, err := snapshot.ReadHistory(filepath.Join(o.HistoryDir, "backup-wiki-20261129"))
	if err != nil || wiki2.Changed != 1 || wiki2.Files != 2 {
		t.Errorf("day 2 wiki history = %+v, %v", wiki2, err)
	}
	// FullVerify reads every file again.
	o.FullVerify = true
	o.Now = clock(time.Date(2026, 11, 29, 7, 0, 0, 0, time.Local))
	if r := mustRun(t, o).Results[0]; r.Hashed != 5 {
		t.Errorf("full verify read %d files, want 5", r.Hashed)
	}
}

func slicesOf(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// goodCopy pulls day 1 and returns the copy's content for later checks.
func goodCopy(t *testing.T, o Options) map[string]string {
	t.Helper()
	mustRun(t, o)
	return treeSums(t, o.Partition.RemoteServer(o.Hosts[0].Server))
}

func TestPullRefusesWhatTheManifestContradicts(t *testing.T) {
	s := sshtest.StartT(t)
	h := newHost(t, hostA, day1)
	db := openDB(t)
	o := options(t, s, db, h)
	want := goodCopy(t, o)

	// Day 2's manifest lies about one file (as if the byte on disk had
	// rotted after hashing): the view serves it from its state directory.
	writeTree(t, h.part.LocalRoot(), map[string]string{"web/demo.softxs.ch/hydro/shared/config.yml": "a: 2\n"})
	name := snapshot.Name(h.clock)
	ents := []map[string]any{}
	for p, c := range day1 {
		if p == "web/demo.softxs.ch/hydro/shared/config.yml" {
			c = "a: 2\n"
		}
		sum := sumOf(c)
		if strings.HasSuffix(p, "big.bin") {
			sum = sumOf(c + "rot")
		}
		ents = append(ents, map[string]any{"Path": p, "SHA256": sum, "Size": len(c)})
	}
	writeJSON(t, filepath.Join(h.state, "remoteview-"+name+".manifest.json"), ents)
	h.waitView(t, h.snapshot(t))

	o.Now = clock(time.Date(2026, 11, 29, 6, 0, 0, 0, time.Local))
	rep, err := Run(context.Background(), o)
	if err == nil {
		t.Fatal("a pull that does not match its manifest succeeded")
	}
	r := rep.Results[0]
	var me *sums.MismatchError
	if r.Step != StepVerify || !errors.As(r.Err, &me) || len(me.Problems) != 1 || me.Problems[0].Path != "web/demo.softxs.ch/hydro/shared/big.bin" {
		t.Fatalf("result = step %s, err %v", r.Step, r.Err)
	}
	if !strings.Contains(err.Error(), "zg-3.softxs.ch") || !strings.Contains(err.Error(), "big.bin") {
		t.Errorf("error does not name the host and file: %v", err)
	}
	if got := treeSums(t, o.Partition.RemoteServer(hostA)); !maps.Equal(got, want) {
		t.Errorf("the last good copy changed:\n got %v\nwant %v", got, want)
	}
	pulls, _ := db.Pulls(context.Background(), string(hostA), 1)
	if len(pulls) != 1 || pulls[0].Result != catalog.RunFailed || !strings.Contains(pulls[0].Error, "big.bin") || pulls[0].Snapshot != name {
		t.Errorf("failed pull record = %+v", pulls)
	}
	hist, err := snapshot.ReadHistory(filepath.Join(o.HistoryDir, "backup-hydro-20261129"))
	if err != nil || hist.Status != snapshot.StatusFailed || hist.Files != 3 || !strings.Contains(hist.Note, "last good copy kept") {
		t.Errorf("history after a refused pull = %+v, %v", hist, err)
	}
}

func TestPullKilledRsyncKeepsLastGoodCopy(t *testing.T) {
	s := sshtest.StartT(t)
	h := newHost(t, hostA, day1)
	db := openDB(t)
	o := options(t, s, db, h)
	want := goodCopy(t, o)

	big := map[string]string{}
	for i := range 20 {
		big[filepath.Join("web/demo.softxs.ch/hydro/releases", string(rune('a'+i))+".bin")] = strings.Repeat(string(rune('a'+i)), 200000)
	}
	writeTree(t, h.part.LocalRoot(), big)
	h.waitView(t, h.snapshot(t))

	// rsync is slowed down so that it is surely killed half way.
	slow := o
	slow.Now = clock(time.Date(2026, 11, 29, 6, 0, 0, 0, time.Local))
	slow.RsyncOptions = []string{"--bwlimit=400"}
	staging := o.Partition.StagingDir(hostA)
	var killed atomic.Bool
	slow.started = func(_ tiers.Server, pid int) {
		go func() {
			deadline := time.Now().Add(time.Minute)
			for time.Now().Before(deadline) {
				n := 0
				filepath.WalkDir(staging, func(p string, d fs.DirEntry, err error) error {
					if err == nil && d.Type().IsRegular() {
						n++
					}
					return nil
				})
				if n >= 3 {
					killed.Store(syscall.Kill(pid, syscall.SIGKILL) == nil)
					return
				}
				time.Sleep(5 * time.Millisecond) // polling, with a deadline
			}
		}()
	}
	rep, err := Run(context.Background(), slow)
	if err == nil || !killed.Load() {
		t.Fatalf("killed pull: err %v, killed %v", err, killed.Load())
	}
	r := rep.Results[0]
	var re *RsyncError
	if r.Step != StepRsync || !errors.As(r.Err, &re) || re.Signal != "killed" {
		t.Fatalf("result: step %s, err %v", r.Step, r.Err)
	}
	if got := treeSums(t, o.Partition.RemoteServer(hostA)); !maps.Equal(got, want) {
		t.Errorf("the last good copy changed after a killed pull:\n got %v\nwant %v", got, want)
	}

	// The next pull reuses the staging tree and completes.
	again := o
	again.Now = clock(time.Date(2026, 11, 29, 7, 0, 0, 0, time.Local))
	rep2 := mustRun(t, again)
	if r := rep2.Results[0]; r.Files != int64(len(day1)+len(big)) {
		t.Errorf("after the retry: %+v", r)
	}
}

func TestPullRefusesChangedHostKey(t *testing.T) {
	s := sshtest.StartT(t)
	h := newHost(t, hostA, day1)
	o := options(t, s, openDB(t), h)
	wrong, err := s.WrongKnownHosts()
	if err != nil {
		t.Fatal(err)
	}
	o.KnownHosts = wrong
	rep, err := Run(context.Background(), o)
	if err == nil {
		t.Fatal("pull with a wrong host key succeeded")
	}
	var re *RsyncError
	if r := rep.Results[0]; r.Step != StepRsync || !errors.As(r.Err, &re) || !re.HostKey() {
		t.Fatalf("result: step %s, err %v", r.Step, r.Err)
	}
	// rsync exits 255 or 12 depending on whether it sees ssh's exit or the
	// closed pipe first; the message is what tells.
	if (re.Code != 255 && re.Code != 12) || !strings.Contains(err.Error(), "ssh refused the host key of zg-3.softxs.ch") {
		t.Errorf("error: code %d, %v", re.Code, err)
	}
	if _, err := os.Stat(o.Partition.RemoteServer(hostA)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused pull created the copy: %v", err)
	}
	if rep.Snapshot != "" {
		t.Errorf("a remote snapshot was taken with no good pull: %s", rep.Snapshot)
	}
}

func TestPullTwoHostsInParallel(t *testing.T) {
	s := sshtest.StartT(t)
	a := newHost(t, hostA, day1)
	b := newHost(t, hostB, map[string]string{"_host/odin.softxs.ch/git/repo.bundle": "bundle"})
	db := openDB(t)
	o := options(t, s, db, a, b)
	o.Hosts[1].Apps = []App{{Name: "git", VM: tiers.NoVM, Relpath: "odin.softxs.ch/git"}}
	o.Parallel = 2
	rep := mustRun(t, o)
	for i, want := range []int64{4, 1} {
		if r := rep.Results[i]; !r.OK() || r.Files != want {
			t.Errorf("host %d: %+v", i, r)
		}
	}
	if b, err := os.ReadFile(filepath.Join(o.Partition.RemoteServer(hostB), "_host/odin.softxs.ch/git/repo.bundle")); string(b) != "bundle" {
		t.Errorf("odin's copy: %q, %v", b, err)
	}
	pulls, _ := db.Pulls(context.Background(), "", 0)
	if len(pulls) != 2 {
		t.Errorf("pull records: %+v", pulls)
	}
	if _, err := os.Stat(filepath.Join(o.HistoryDir, "backup-git-20261128")); err != nil {
		t.Error(err)
	}
}

func TestPullRefusesTheViewOfAnotherServer(t *testing.T) {
	s := sshtest.StartT(t)
	h := newHost(t, hostA, day1)
	o := options(t, s, openDB(t), h)
	o.Hosts[0].Server = hostB // zg-3's view configured for odin
	rep, err := Run(context.Background(), o)
	if err == nil {
		t.Fatal("pulled another server's view")
	}
	if r := rep.Results[0]; r.Step != StepManifest || !strings.Contains(r.Err.Error(), `view of "zg-3.softxs.ch", not of odin.softxs.ch`) {
		t.Errorf("result: %s %v", r.Step, r.Err)
	}
}

func TestPullRefusesWhileAnotherPullRuns(t *testing.T) {
	db := openDB(t)
	part := tiers.Partition(t.TempDir())
	os.MkdirAll(part.StateDir(), 0o700)
	unlock, err := snapshot.TryLock(filepath.Join(part.StateDir(), "pull-"+string(hostA)+".lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	o := Options{BackupServer: backup, Partition: part, DB: db, Hosts: []Host{{Server: hostA, SSH: "root@127.0.0.1", View: "/v01/backup/view"}}}
	rep, err := Run(context.Background(), o)
	if err == nil || rep.Results[0].Step != StepLock || !strings.Contains(err.Error(), "another pull of zg-3.softxs.ch is running") {
		t.Fatalf("err %v", err)
	}
}

func TestPullUnreachableHost(t *testing.T) {
	s := sshtest.StartT(t)
	o := Options{BackupServer: backup, Partition: tiers.Partition(t.TempDir()), DB: openDB(t),
		Identity: s.Identity, KnownHosts: s.KnownHosts,
		Hosts: []Host{{Server: hostA, SSH: "root@127.0.0.1", Port: 1, View: "/v01/backup/view"}}}
	rep, err := Run(context.Background(), o)
	var re *RsyncError
	if err == nil || !errors.As(rep.Results[0].Err, &re) || !strings.Contains(re.Meaning, "ssh could not connect to zg-3.softxs.ch") {
		t.Fatalf("err %v", err)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	db := openDB(t)
	good := Options{BackupServer: backup, Partition: "/v01/backup", DB: db,
		Hosts: []Host{{Server: hostA, SSH: "root@zg-3.softxs.ch", View: "/v01/backup/view"}}}
	cases := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"backup server", func(o *Options) { o.BackupServer = "Backup" }, "backup server"},
		{"partition", func(o *Options) { o.Partition = "v01" }, "partition"},
		{"catalog", func(o *Options) { o.DB = nil }, "no catalog"},
		{"parallel", func(o *Options) { o.Parallel = -1 }, "parallel -1"},
		{"inplace", func(o *Options) { o.RsyncOptions = []string{"--inplace"} }, `"--inplace" is not allowed`},
		{"link-dest", func(o *Options) { o.RsyncOptions = []string{"--link-dest=/x"} }, `"--link-dest=/x" is not allowed`},
		{"host name", func(o *Options) { o.Hosts[0].Server = "zg-3" }, "host: invalid server"},
		{"twice", func(o *Options) { o.Hosts = append(o.Hosts, o.Hosts[0]) }, "listed twice"},
		{"ssh", func(o *Options) { o.Hosts[0].SSH = "root@x:y" }, "ssh destination"},
		{"view", func(o *Options) { o.Hosts[0].View = "view" }, "remote view \"view\""},
		{"port", func(o *Options) { o.Hosts[0].Port = 70000 }, "port 70000"},
	}
	for _, c := range cases {
		o := good
		o.Hosts = append([]Host(nil), good.Hosts...)
		c.edit(&o)
		if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
	}
}

func TestRsyncExitMeanings(t *testing.T) {
	for code, want := range map[int]string{23: "partial transfer", 255: "ssh", 12: "protocol data stream", 99: "unknown"} {
		if got := RsyncExitMeaning(code); !strings.Contains(got, want) {
			t.Errorf("%d: %q", code, got)
		}
	}
}

func TestSSHCommandQuotes(t *testing.T) {
	o := Options{Identity: "/keys/my key", KnownHosts: "/etc/kh"}
	got := o.sshCommand(Host{Port: 2222})
	want := "ssh -p 2222 -i '/keys/my key' -o IdentitiesOnly=yes -o UserKnownHostsFile=/etc/kh -o StrictHostKeyChecking=yes -o BatchMode=yes"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestPullCancelledMidway(t *testing.T) {
	s := sshtest.StartT(t)
	big := map[string]string{}
	for i := range 10 {
		big[filepath.Join("web/demo.softxs.ch/hydro/releases", string(rune('a'+i)))] = strings.Repeat("z", 200000)
	}
	h := newHost(t, hostA, big)
	o := options(t, s, openDB(t), h)
	o.RsyncOptions = []string{"--bwlimit=200"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o.started = func(tiers.Server, int) { cancel() }
	rep, err := Run(ctx, o)
	if err == nil || rep.Results[0].Step != StepRsync || !errors.Is(rep.Results[0].Err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(o.Partition.RemoteServer(hostA)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a cancelled first pull left a copy: %v", err)
	}
	// The failure is on record even though the context was cancelled.
	if pulls, _ := o.DB.Pulls(context.Background(), string(hostA), 0); len(pulls) != 1 || pulls[0].Result != catalog.RunFailed {
		t.Errorf("pulls = %+v", pulls)
	}
}
