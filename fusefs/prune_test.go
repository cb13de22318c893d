package fusefs

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fakeKernel answers prune notifications: it forgets every named node
// except those it keeps (open files), as the kernel would.
type fakeKernel struct {
	p     *pruner
	keep  map[*fs.Inode]bool
	asked []*fs.Inode
	errno syscall.Errno
}

func (k *fakeKernel) notify(nodes []*fs.Inode) syscall.Errno {
	if k.errno != 0 {
		return k.errno
	}
	k.asked = append(k.asked, nodes...)
	for _, in := range nodes {
		if !k.keep[in] {
			k.p.forget(nodeOf(in))
		}
	}
	return 0
}

func testPruner(t *testing.T, max int) (*pruner, *fakeKernel, *bytes.Buffer) {
	var logs bytes.Buffer
	k := &fakeKernel{keep: map[*fs.Inode]bool{}}
	p := newPruner(max, k.notify, slog.New(slog.NewTextHandler(&logs, nil)))
	k.p = p
	return p, k, &logs
}

// nodeOf finds the node around an embedded Inode (nodes made here have
// no go-fuse bridge, so Operations is nil).
func nodeOf(in *fs.Inode) *node { return made[in] }

var made = map[*fs.Inode]*node{}

func nodes(n int) []*node {
	out := make([]*node, n)
	for i := range out {
		out[i] = &node{app: fmt.Sprint(i)}
		made[out[i].EmbeddedInode()] = out[i]
	}
	return out
}

func names(ins []*fs.Inode) []string {
	var out []string
	for _, in := range ins {
		out = append(out, nodeOf(in).app)
	}
	return out
}

func TestPrunerForgetsLeastRecentlyUsed(t *testing.T) {
	p, k, _ := testPruner(t, 8) // prunes down to 7
	ns := nodes(10)
	for _, n := range ns {
		p.track(n)
	}
	if got := p.live.Load(); got != 10 {
		t.Fatalf("live %d, want 10", got)
	}
	select {
	case <-p.kick:
	default:
		t.Fatal("over the cap without a kick")
	}
	p.touch(ns[0]) // released just now: last in line
	p.track(ns[1]) // looked up again: last in line, not counted twice
	if !p.reclaim() {
		t.Fatal("reclaim gave up")
	}
	if got := names(k.asked); fmt.Sprint(got) != "[2 3 4]" {
		t.Errorf("asked to forget %v, want [2 3 4]", got)
	}
	if p.live.Load() != 7 || p.pruned.Load() != 3 {
		t.Errorf("live %d pruned %d, want 7 and 3", p.live.Load(), p.pruned.Load())
	}
	// A forgotten node looked up again is counted again.
	p.track(ns[2])
	if p.live.Load() != 8 {
		t.Errorf("live %d after a new lookup, want 8", p.live.Load())
	}
}

func TestPrunerKeepsOpenFiles(t *testing.T) {
	p, k, _ := testPruner(t, 4) // prunes down to 4 - 0 = 4
	ns := nodes(6)
	for _, n := range ns {
		k.keep[n.EmbeddedInode()] = true // all open: the kernel keeps them
	}
	for _, n := range ns {
		p.track(n)
	}
	if !p.reclaim() {
		t.Fatal("reclaim gave up")
	}
	// It asked for every node in line, then stopped: nothing left to ask.
	if len(k.asked) != 6 || p.live.Load() != 6 {
		t.Fatalf("asked %v, live %d; want all 6 asked, 6 live", names(k.asked), p.live.Load())
	}
	// Released: back in line, and forgotten at the next round.
	k.asked, k.keep = nil, map[*fs.Inode]bool{}
	p.touch(ns[5])
	p.touch(ns[4])
	if !p.reclaim() {
		t.Fatal("reclaim gave up")
	}
	if got := names(k.asked); fmt.Sprint(got) != "[5 4]" || p.live.Load() != 4 {
		t.Errorf("asked %v, live %d; want [5 4] and 4", got, p.live.Load())
	}
	// The kernel forgets a node that was out of line: still uncounted once.
	p.forget(ns[0])
	p.forget(ns[0])
	if p.live.Load() != 3 {
		t.Errorf("live %d after forgetting ns[0] twice, want 3", p.live.Load())
	}
}

func TestPrunerWithoutKernelSupport(t *testing.T) {
	p, k, logs := testPruner(t, 2)
	k.errno = syscall.ENOSYS
	for _, n := range nodes(4) {
		p.track(n)
	}
	if p.reclaim() {
		t.Error("reclaim went on without FUSE_NOTIFY_PRUNE")
	}
	if !bytes.Contains(logs.Bytes(), []byte("FUSE_NOTIFY_PRUNE")) {
		t.Errorf("no warning naming FUSE_NOTIFY_PRUNE: %s", logs)
	}
	// Another error is logged and the next round tries again.
	k.errno = syscall.EIO
	logs.Reset()
	if !p.reclaim() || !bytes.Contains(logs.Bytes(), []byte("input/output error")) {
		t.Errorf("EIO: reclaim stopped or was not logged: %s", logs)
	}
}

func TestPrunerOff(t *testing.T) {
	if p := newPruner(-1, nil, nil); p != nil {
		t.Fatal("a negative cap made a pruner")
	}
	var p *pruner // every method is a no-op
	n := &node{}
	p.track(n)
	p.touch(n)
	p.forget(n)
	p.start()
	p.close()
	if p := newPruner(0, nil, nil); p.max != DefaultMaxFileInodes {
		t.Errorf("cap %d, want the default %d", p.max, DefaultMaxFileInodes)
	}
}

// TestPruneThroughMount writes more files than the cap through a real
// mount: the kernel is asked to forget the oldest, the daemon's count
// stays near the cap, and every file still reads back (a forgotten entry
// is looked up again).
func TestPruneThroughMount(t *testing.T) {
	const max, files = 64, 400
	tm := mountT(t, "web", testApps, func(c *Config) { c.MaxFileInodes = max })
	if !tm.m.server.KernelSettings().SupportsNotify(fuse.NOTIFY_PRUNE) {
		t.Skip("the kernel has no FUSE_NOTIFY_PRUNE (Linux 6.18)")
	}
	for d := range 4 {
		dir := tm.p(fmt.Sprintf("www.softxs.ch/d%d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range files / 4 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), []byte(fmt.Sprint(d, i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var live, pruned int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		live, pruned = tm.m.FileInodes()
		if live <= max {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d file inodes live after writing %d (cap %d, %d pruned)", live, files, max, pruned)
		}
	}
	if pruned < files-max {
		t.Errorf("only %d pruned of %d files with a cap of %d", pruned, files, max)
	}
	// Directories are not counted, and not dropped: four are still known.
	for d := range 4 {
		for i := range files / 4 {
			p := tm.p(fmt.Sprintf("www.softxs.ch/d%d/%d", d, i))
			b, err := os.ReadFile(p)
			if err != nil || string(b) != fmt.Sprint(d, i) {
				t.Fatalf("%s after pruning: %q, %v", p, b, err)
			}
		}
	}
}
