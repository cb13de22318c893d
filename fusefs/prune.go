package fusefs

import (
	"container/list"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
)

// DefaultMaxFileInodes is how many files (anything but a directory) a
// mount lets the kernel remember before it asks the kernel to forget the
// least recently used ones. go-fuse keeps an inode for everything the
// kernel remembers, about 600 bytes each, and the kernel gives them up only
// under memory pressure: without a cap, a daemon through which millions
// of files were copied would hold them all.
const DefaultMaxFileInodes = 65536

// pruneBatch is how many nodes one FUSE_NOTIFY_PRUNE names.
const pruneBatch = 512

// pruner keeps a mount's file inodes under a cap with FUSE_NOTIFY_PRUNE
// (Linux 6.18): the kernel drops the unused dentries of the named inodes
// and answers with FORGET, as it would under memory pressure. Unlike an
// entry invalidation it takes no directory lock, so it cannot wait on a
// request in progress. Directories are not counted (they are few, and one
// with remembered children cannot be dropped before them); a file that is
// open is not dropped and goes back in line when released.
//
// A nil *pruner does nothing (virtiofs exports, a cap switched off).
type pruner struct {
	max, low int64
	notify   func([]*fs.Inode) syscall.Errno
	log      *slog.Logger

	live   atomic.Int64 // counted nodes the kernel may still remember
	pruned atomic.Int64 // nodes the kernel was asked to forget

	mu  sync.Mutex
	lru list.List // *node, least recently used first

	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	started  atomic.Bool
	stopOnce sync.Once
}

// newPruner returns a pruner for a cap of max file inodes (it prunes down
// to 7/8 of it), or nil when max is negative (no cap).
func newPruner(max int, notify func([]*fs.Inode) syscall.Errno, log *slog.Logger) *pruner {
	if max < 0 {
		return nil
	}
	if max == 0 {
		max = DefaultMaxFileInodes
	}
	return &pruner{
		max: int64(max), low: int64(max) - int64(max)/8, notify: notify, log: log,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// track counts a node the kernel has just been told about (lookup,
// create, mkdir, symlink, link) as most recently used.
func (p *pruner) track(n *node) {
	if p == nil || n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return
	}
	p.mu.Lock()
	switch {
	case n.pelem != nil:
		p.lru.MoveToBack(n.pelem)
	case n.pcounted: // asked to forget, but the kernel kept it
		n.pelem = p.lru.PushBack(n)
	default:
		n.pcounted = true
		n.pelem = p.lru.PushBack(n)
		p.live.Add(1)
	}
	live := p.live.Load()
	p.mu.Unlock()
	if live > p.max {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// touch marks a counted node as just used (a file was released); one
// taken out of line while open goes back in.
func (p *pruner) touch(n *node) {
	if p == nil || n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return
	}
	p.mu.Lock()
	if n.pelem != nil {
		p.lru.MoveToBack(n.pelem)
	} else if n.pcounted {
		n.pelem = p.lru.PushBack(n) // pruned while open: in line again
	}
	p.mu.Unlock()
}

// forget uncounts a node the kernel forgot.
func (p *pruner) forget(n *node) {
	if p == nil {
		return
	}
	p.mu.Lock()
	if n.pelem != nil {
		p.lru.Remove(n.pelem)
		n.pelem = nil
	}
	if n.pcounted {
		n.pcounted = false
		p.live.Add(-1)
	}
	p.mu.Unlock()
}

// oldest takes up to k nodes off the front of the line. They stay
// counted until the kernel forgets them.
func (p *pruner) oldest(k int) []*fs.Inode {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*fs.Inode
	for len(out) < k {
		e := p.lru.Front()
		if e == nil {
			break
		}
		n := e.Value.(*node)
		p.lru.Remove(e)
		n.pelem = nil
		out = append(out, n.EmbeddedInode())
	}
	return out
}

// reclaim asks the kernel to forget the oldest nodes until the count is
// down to low; false means the kernel cannot be asked (pruning stops).
func (p *pruner) reclaim() bool {
	for {
		want := p.live.Load() - p.low
		if want <= 0 {
			return true
		}
		asked := 0
		for asked < int(want) {
			batch := p.oldest(min(pruneBatch, int(want)-asked))
			if len(batch) == 0 {
				return true // the rest are open or directories
			}
			errno := p.notify(batch)
			if errno == syscall.ENOSYS {
				p.log.Warn("fusefs: the kernel cannot be asked to forget inodes (FUSE_NOTIFY_PRUNE needs Linux 6.18); the daemon keeps every inode the kernel remembers",
					"max_file_inodes", p.max)
				return false
			}
			if errno != 0 {
				p.log.Warn("fusefs: asking the kernel to forget inodes", "nodes", len(batch), "err", errno)
				return true
			}
			asked += len(batch)
			p.pruned.Add(int64(len(batch)))
		}
		// The FORGETs come back asynchronously; look again after them.
		select {
		case <-p.stop:
			return true
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// run prunes whenever track finds the count over the cap, until close.
func (p *pruner) run() {
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

// start runs the pruner; close stops it and waits.
func (p *pruner) start() {
	if p != nil && p.started.CompareAndSwap(false, true) {
		go p.run()
	}
}

func (p *pruner) close() {
	if p == nil {
		return
	}
	p.stopOnce.Do(func() { close(p.stop) })
	if p.started.Load() {
		<-p.done
	}
}
