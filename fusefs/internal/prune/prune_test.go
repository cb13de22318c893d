package prune

import (
	"bytes"
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
)

// fakeNode is a file node without a go-fuse bridge.
type fakeNode struct {
	fs.Inode
	e    Entry
	name string
}

func (n *fakeNode) PruneEntry() *Entry { return &n.e }

// fakeKernel answers prune notifications: it forgets every named node
// except those it keeps (open files), as the kernel would.
type fakeKernel struct {
	p     *Pruner
	nodes map[*fs.Inode]*fakeNode
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
			k.p.Forget(k.nodes[in])
		}
	}
	return 0
}

func (k *fakeKernel) names() []string {
	var out []string
	for _, in := range k.asked {
		out = append(out, k.nodes[in].name)
	}
	return out
}

// testPruner is a started Pruner whose reclaim the test calls itself.
func testPruner(t *testing.T, max, nodes int) (*Pruner, *fakeKernel, []*fakeNode, *bytes.Buffer) {
	var logs bytes.Buffer
	k := &fakeKernel{nodes: map[*fs.Inode]*fakeNode{}, keep: map[*fs.Inode]bool{}}
	p := New(max, k.notify, slog.New(slog.NewTextHandler(&logs, nil)))
	p.started.Store(true) // counting, without the goroutine
	k.p = p
	var ns []*fakeNode
	for i := range nodes {
		n := &fakeNode{name: fmt.Sprint(i)}
		k.nodes[n.EmbeddedInode()] = n
		ns = append(ns, n)
	}
	return p, k, ns, &logs
}

func TestForgetsLeastRecentlyUsed(t *testing.T) {
	p, k, ns, _ := testPruner(t, 8, 10) // prunes down to 7
	for _, n := range ns {
		p.Track(n)
	}
	if got := p.Live(); got != 10 {
		t.Fatalf("live %d, want 10", got)
	}
	select {
	case <-p.kick:
	default:
		t.Fatal("over the cap without a kick")
	}
	p.Touch(ns[0]) // released just now: last in line
	p.Track(ns[1]) // looked up again: last in line, not counted twice
	if !p.reclaim() {
		t.Fatal("reclaim gave up")
	}
	if got := k.names(); fmt.Sprint(got) != "[2 3 4]" {
		t.Errorf("asked to forget %v, want [2 3 4]", got)
	}
	if p.Live() != 7 || p.Pruned() != 3 {
		t.Errorf("live %d pruned %d, want 7 and 3", p.Live(), p.Pruned())
	}
	// A forgotten node looked up again is counted again.
	p.Track(ns[2])
	if p.Live() != 8 {
		t.Errorf("live %d after a new lookup, want 8", p.Live())
	}
}

func TestKeepsOpenFiles(t *testing.T) {
	p, k, ns, _ := testPruner(t, 4, 6) // prunes down to 4 - 0 = 4
	for _, n := range ns {
		k.keep[n.EmbeddedInode()] = true // all open: the kernel keeps them
		p.Track(n)
	}
	if !p.reclaim() {
		t.Fatal("reclaim gave up")
	}
	// It asked for every node in line, then stopped: nothing left to ask.
	if len(k.asked) != 6 || p.Live() != 6 {
		t.Fatalf("asked %v, live %d; want all 6 asked, 6 live", k.names(), p.Live())
	}
	// Released: back in line, and forgotten at the next round.
	k.asked, k.keep = nil, map[*fs.Inode]bool{}
	p.Touch(ns[5])
	p.Touch(ns[4])
	if !p.reclaim() {
		t.Fatal("reclaim gave up")
	}
	if got := k.names(); fmt.Sprint(got) != "[5 4]" || p.Live() != 4 {
		t.Errorf("asked %v, live %d; want [5 4] and 4", got, p.Live())
	}
	// The kernel forgets a node that was out of line: uncounted once.
	p.Forget(ns[0])
	p.Forget(ns[0])
	if p.Live() != 3 {
		t.Errorf("live %d after forgetting ns[0] twice, want 3", p.Live())
	}
}

func TestWithoutKernelSupport(t *testing.T) {
	p, k, ns, logs := testPruner(t, 2, 4)
	k.errno = syscall.ENOSYS
	for _, n := range ns {
		p.Track(n)
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

func TestNotStartedOrOff(t *testing.T) {
	if p := New(-1, nil, nil); p != nil {
		t.Fatal("a negative cap made a pruner")
	}
	var off *Pruner // every method is a no-op
	n := &fakeNode{}
	off.Track(n)
	off.Touch(n)
	off.Forget(n)
	off.Start()
	off.Close()
	if off.Live() != 0 || off.Pruned() != 0 {
		t.Error("a nil pruner counts")
	}
	p := New(0, nil, nil)
	if p.max != DefaultMax {
		t.Errorf("cap %d, want the default %d", p.max, DefaultMax)
	}
	p.Track(n) // before Start: not counted
	if p.Live() != 0 {
		t.Errorf("live %d before Start", p.Live())
	}
	p.Close() // never started: returns at once
}

func TestStartAndClose(t *testing.T) {
	p, k, ns, _ := testPruner(t, 2, 5)
	p.started.Store(false)
	p.Start()
	for _, n := range ns {
		p.Track(n) // the goroutine prunes down to 2
	}
	for deadline := time.Now().Add(10 * time.Second); p.Live() > 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("live %d: the started pruner did not prune", p.Live())
		}
	}
	p.Close() // waits for the goroutine: k.asked is ours again
	if len(k.asked) < 3 {
		t.Errorf("asked %v", k.names())
	}
}
