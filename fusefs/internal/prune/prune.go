// Package prune keeps the inodes a FUSE mount lets the kernel remember
// under a cap. go-fuse keeps a node for everything the kernel remembers,
// about 600 bytes each, and the kernel gives FUSE inodes up only under
// memory pressure: without a cap, a daemon through which millions of files
// were copied (or pulled) would hold them all.
//
// A Pruner asks the kernel to forget the least recently used files with
// FUSE_NOTIFY_PRUNE (Linux 6.18): the kernel drops their unused dentries
// and answers with FORGET, as it would under memory pressure. Unlike an
// entry invalidation it takes no directory lock, so it cannot wait on a
// request in progress. Directories are not counted (they are few, and one
// with remembered children cannot be dropped before them); a file that is
// open is not dropped and goes back in line when released.
package prune

import (
	"container/list"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
)

// DefaultMax is the default cap: files a mount lets the kernel remember.
const DefaultMax = 65536

// batch is how many nodes one FUSE_NOTIFY_PRUNE names.
const batch = 512

// Entry is a node's bookkeeping, kept in the node and guarded by its
// Pruner: counted while counted in its live nodes, elem while in line.
type Entry struct {
	counted bool
	elem    *list.Element
}

// Node is what a Pruner tracks: a go-fuse node with an Entry.
type Node interface {
	EmbeddedInode() *fs.Inode
	PruneEntry() *Entry
}

// Notify asks the kernel to forget nodes: (*fs.Inode).NotifyPrune of any
// node of the mount.
type Notify func([]*fs.Inode) syscall.Errno

// Pruner keeps one mount's file inodes under a cap. A nil *Pruner does
// nothing, so a mount without a cap calls it all the same.
type Pruner struct {
	max, low int64
	notify   Notify
	log      *slog.Logger

	live   atomic.Int64 // counted nodes the kernel may still remember
	pruned atomic.Int64 // nodes the kernel was asked to forget

	mu  sync.Mutex
	lru list.List // Node, least recently used first

	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	started  atomic.Bool
	stopOnce sync.Once
}

// New returns a Pruner for a cap of max file inodes (it prunes down to
// 7/8 of it; 0 means DefaultMax), or nil when max is negative (no cap).
// It counts nothing until Start.
func New(max int, notify Notify, log *slog.Logger) *Pruner {
	if max < 0 {
		return nil
	}
	if max == 0 {
		max = DefaultMax
	}
	return &Pruner{
		max: int64(max), low: int64(max) - int64(max)/8, notify: notify, log: log,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

func isDir(n Node) bool {
	return n.EmbeddedInode().StableAttr().Mode&syscall.S_IFMT == syscall.S_IFDIR
}

// Track counts a node the kernel has just been told about (lookup,
// create, mkdir, symlink, link) as most recently used.
func (p *Pruner) Track(n Node) {
	if p == nil || !p.started.Load() || isDir(n) {
		return
	}
	e := n.PruneEntry()
	p.mu.Lock()
	if !e.counted {
		e.counted = true
		p.live.Add(1)
	}
	p.toBackLocked(n, e)
	live := p.live.Load()
	p.mu.Unlock()
	if live > p.max {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// Touch marks a counted node as just used (a file was released); one
// taken out of line while open goes back in.
func (p *Pruner) Touch(n Node) {
	if p == nil || isDir(n) {
		return
	}
	e := n.PruneEntry()
	p.mu.Lock()
	if e.counted {
		p.toBackLocked(n, e)
	}
	p.mu.Unlock()
}

// toBackLocked puts a counted node last in line, where it may already be
// or (asked to forget, but kept by the kernel) not.
func (p *Pruner) toBackLocked(n Node, e *Entry) {
	if e.elem != nil {
		p.lru.MoveToBack(e.elem)
	} else {
		e.elem = p.lru.PushBack(n)
	}
}

// Forget uncounts a node the kernel forgot (go-fuse's OnForget).
func (p *Pruner) Forget(n Node) {
	if p == nil {
		return
	}
	e := n.PruneEntry()
	p.mu.Lock()
	if e.elem != nil {
		p.lru.Remove(e.elem)
		e.elem = nil
	}
	if e.counted {
		e.counted = false
		p.live.Add(-1)
	}
	p.mu.Unlock()
}

// Live is the number of counted file nodes; Pruned how many the kernel
// was asked to forget so far.
func (p *Pruner) Live() int64 {
	if p == nil {
		return 0
	}
	return p.live.Load()
}

// Pruned: see Live.
func (p *Pruner) Pruned() int64 {
	if p == nil {
		return 0
	}
	return p.pruned.Load()
}

// oldest takes up to k nodes off the front of the line. They stay
// counted until the kernel forgets them.
func (p *Pruner) oldest(k int) []*fs.Inode {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*fs.Inode
	for len(out) < k {
		el := p.lru.Front()
		if el == nil {
			break
		}
		n := el.Value.(Node)
		p.lru.Remove(el)
		n.PruneEntry().elem = nil
		out = append(out, n.EmbeddedInode())
	}
	return out
}

// reclaim asks the kernel to forget the oldest nodes until the count is
// down to low; false means the kernel cannot be asked (pruning stops).
func (p *Pruner) reclaim() bool {
	for {
		want := p.live.Load() - p.low
		if want <= 0 {
			return true
		}
		asked := 0
		for asked < int(want) {
			b := p.oldest(min(batch, int(want)-asked))
			if len(b) == 0 {
				return true // the rest are open or directories
			}
			errno := p.notify(b)
			if errno == syscall.ENOSYS {
				p.log.Warn("fuse: the kernel cannot be asked to forget inodes (FUSE_NOTIFY_PRUNE needs Linux 6.18); the daemon keeps every inode the kernel remembers",
					"max_file_inodes", p.max)
				return false
			}
			if errno != 0 {
				p.log.Warn("fuse: asking the kernel to forget inodes", "nodes", len(b), "err", errno)
				return true
			}
			asked += len(b)
			p.pruned.Add(int64(len(b)))
		}
		// The FORGETs come back asynchronously; look again after them.
		select {
		case <-p.stop:
			return true
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Pruner) run() {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
			if !p.reclaim() {
				<-p.stop
				return
			}
		}
	}
}

// Start begins counting and pruning: call it once the mount is up.
func (p *Pruner) Start() {
	if p != nil && p.started.CompareAndSwap(false, true) {
		go p.run()
	}
}

// Close stops pruning and waits for it: call it before unmounting.
func (p *Pruner) Close() {
	if p == nil {
		return
	}
	p.stopOnce.Do(func() { close(p.stop) })
	if p.started.Load() {
		<-p.done
	}
}
