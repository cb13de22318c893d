package catalog

import (
	"container/list"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RecorderOptions tunes a Recorder; zero values take the defaults.
type RecorderOptions struct {
	// QueueSize bounds the events waiting (after coalescing). Default 65536.
	QueueSize int
	// Workers is the number of hashing goroutines. Default 2.
	Workers int
	// MaxRetries is how often a file that changes while being hashed is
	// queued again before it is recorded without a hash. Default 3.
	MaxRetries int
	// LogInterval is how often dropped events are logged. Default 1m.
	LogInterval time.Duration
	// Quiet: while events keep arriving closer together than this, the
	// workers leave queued files alone, so hashing and catalog writes do
	// not compete with the writer for the CPU (a copy of many small files
	// is done sooner, and its files are hashed right after). Default
	// 50ms; negative hashes at once.
	Quiet time.Duration
	// MaxDelay bounds how long a queued event waits for a quiet moment
	// (a long burst of writes), so the catalog never lags further behind;
	// a queue half full, Flush and Close do not wait at all. Default 30s.
	MaxDelay time.Duration
	// BatchDelay is how long the flusher gathers results into one write
	// transaction (one commit per file costs more than the hash).
	// Default 20ms; negative writes at once.
	BatchDelay time.Duration
	// Logger defaults to the DB's.
	Logger *slog.Logger
	// Now defaults to the DB's clock.
	Now func() time.Time

	// Tests only: called by a worker before it hashes path, and in the
	// middle of hashing (after reading, before the second fstat).
	beforeHash func(path string)
	midHash    func(path string)
	// Tests only: results per write transaction (default 10000).
	opsPerWrite int
}

// Recorder turns the FUSE daemon's file events into catalog rows, off the
// hot path. Written, Removed and Renamed never block and do no I/O: they
// queue the path (coalescing repeated events for one path) and return.
// Workers lstat and hash the backing files under root (never following a
// symlink) and a flusher writes the results through the DB's writer, in
// the order the events require.
//
// When the queue is full an event is dropped and counted, and the recorder
// is marked dirty: a Rescan is then recommended. The mark is persisted in
// the catalog until a clean Close or a full Rescan, so that a crashed
// daemon's successor knows too. Use one Recorder per catalog (event paths
// carry the VM as their first segment), and close it before its DB.
type Recorder struct {
	db   *DB
	tree *tree
	opt  RecorderOptions

	mu          sync.Mutex
	work        *sync.Cond               // signalled when fifo gains an item or closing changes
	fifo        list.List                // *item, in processing order
	pending     map[string]*item         // keyed items in fifo, by path
	pendDirs    map[string]int           // count of keyed items in fifo below each directory
	inflight    map[string]*item         // items being hashed, by path
	vanished    list.List                // paths whose hash found no file, oldest first
	vanishedAt  map[string]*list.Element // index of vanished
	vanDirs     map[string]int           // count of vanished paths below each directory
	renames     renameLog                // recent renames, to follow late events
	ops         []recOp                  // results, in order, for the flusher
	opsReady    chan struct{}            // cap 1: ops is not empty, or closing
	epoch       uint64                   // current Flush generation
	open        map[uint64]int           // unfinished items per epoch
	changed     chan struct{}            // closed and replaced when open changes
	flushErr    error                    // first write error since the last Flush
	closing     bool                     // no new events; drain
	abandon     bool                     // Close's ctx expired: stop now
	workersGone bool                     // no more ops will come: the flusher may exit
	done        chan struct{}            // closed when workers and flusher have exited
	wg          sync.WaitGroup           // workers
	stopLog     chan struct{}            // stops the drop logger
	dirtyWhy    atomic.Pointer[string]   // why a rescan is recommended, nil = clean
	dropped     atomic.Uint64            // events dropped because the queue was full
	invalid     atomic.Uint64            // events with a bad path, ignored
	badPath     atomic.Pointer[string]   // the last bad path, for the log

	logMu                        sync.Mutex
	loggedDropped, loggedInvalid uint64

	lastEvent time.Time     // when the last event arrived (guarded by mu)
	hurry     int           // Flush calls waiting: no holding back (mu)
	wakeAt    time.Time     // when wake fires, zero if not armed (mu)
	wake      *time.Timer   // wakes held workers (mu)
	kick      chan struct{} // cap 1: the flusher stops gathering
}

type item struct {
	path    string
	app     string
	remove  bool // remove the path's rows (and below) first
	write   bool // then hash the file
	from    string
	rename  bool // structural: rename from -> path
	epoch   uint64
	queued  time.Time // when first queued, for MaxDelay
	retries int
	follows int // renames followed after finding no file
	elem    *list.Element
	// Set on an in-flight item by a Removed/Renamed that touches its path:
	// the hash is void; requeue at newPath ("" = drop).
	cancelled bool
	newPath   string
}

type recOpKind uint8

const (
	opUpsert recOpKind = iota
	opDelete           // one path, unless the row is newer
	opRemove           // path and below
	opRename
)

type recOp struct {
	kind   recOpKind
	rec    FileRecord // opUpsert, opDelete
	from   string     // opRename
	path   string     // opRemove, opRename (target)
	app    string     // opRename
	finish []uint64   // epochs of the items this op completes
}

const metaDirty = "recorder_dirty"

// NewRecorder starts a recorder for the local tier rooted at root
// ({partition}/local).
func NewRecorder(db *DB, root string, opt RecorderOptions) (*Recorder, error) {
	if opt.QueueSize == 0 {
		opt.QueueSize = 65536
	}
	if opt.Workers == 0 {
		opt.Workers = 2
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = 3
	}
	if opt.LogInterval == 0 {
		opt.LogInterval = time.Minute
	}
	if opt.opsPerWrite == 0 {
		opt.opsPerWrite = 10000
	}
	if opt.Quiet == 0 {
		opt.Quiet = 50 * time.Millisecond
	}
	if opt.MaxDelay == 0 {
		opt.MaxDelay = 30 * time.Second
	}
	if opt.BatchDelay == 0 {
		opt.BatchDelay = 20 * time.Millisecond
	}
	if opt.Logger == nil {
		opt.Logger = db.opts.logger
	}
	if opt.Now == nil {
		opt.Now = db.opts.now
	}
	if opt.QueueSize < 1 || opt.Workers < 1 || opt.MaxRetries < 0 || opt.LogInterval < 0 || opt.MaxDelay < 0 {
		return nil, fmt.Errorf("catalog: recorder for %s: invalid options: queue %d, workers %d, retries %d, log interval %v, max delay %v",
			root, opt.QueueSize, opt.Workers, opt.MaxRetries, opt.LogInterval, opt.MaxDelay)
	}
	t, err := openTree(root)
	if err != nil {
		return nil, fmt.Errorf("catalog: recorder: %w", err)
	}
	t.midHash = opt.midHash
	r := &Recorder{
		db:         db,
		tree:       t,
		opt:        opt,
		pending:    map[string]*item{},
		pendDirs:   map[string]int{},
		inflight:   map[string]*item{},
		vanishedAt: map[string]*list.Element{},
		vanDirs:    map[string]int{},
		renames:    renameLog{to: map[string]*list.Element{}},
		opsReady:   make(chan struct{}, 1),
		open:       map[uint64]int{},
		changed:    make(chan struct{}),
		done:       make(chan struct{}),
		stopLog:    make(chan struct{}),
		kick:       make(chan struct{}, 1),
	}
	r.work = sync.NewCond(&r.mu)
	r.wake = time.AfterFunc(time.Hour, func() {
		r.mu.Lock()
		r.wakeAt = time.Time{}
		r.work.Broadcast()
		r.mu.Unlock()
	})
	r.wake.Stop()
	ctx := context.Background()
	prev, err := db.getMeta(ctx, metaDirty)
	if err != nil {
		t.close()
		return nil, err
	}
	switch {
	case isRunning(prev):
		r.markDirty("a previous recorder did not shut down cleanly (" + prev + ")")
	case prev != "":
		r.markDirty(prev)
	}
	if err := db.setMeta(ctx, metaDirty, "running since "+opt.Now().UTC().Format(time.RFC3339)); err != nil {
		t.close()
		return nil, err
	}
	r.wg.Add(opt.Workers)
	for range opt.Workers {
		go r.worker()
	}
	flusherDone := make(chan struct{})
	go func() { defer close(flusherDone); r.flusher() }()
	go func() {
		r.wg.Wait()
		r.mu.Lock()
		r.workersGone = true
		r.mu.Unlock()
		r.signalOps()
		<-flusherDone
		close(r.done)
	}()
	if opt.LogInterval > 0 {
		go r.logDrops()
	}
	return r, nil
}

// Dropped is the number of events dropped because the queue was full.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// QueueDepth is the number of queued or in-flight events.
func (r *Recorder) QueueDepth() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fifo.Len() + len(r.inflight)
}

// Dirty returns why a rescan is recommended (events were dropped, a write
// failed, a previous daemon crashed), or "" if the catalog is believed to be
// in step with the tree.
func (r *Recorder) Dirty() string {
	if p := r.dirtyWhy.Load(); p != nil {
		return *p
	}
	return ""
}

func (r *Recorder) markDirty(why string) {
	r.dirtyWhy.CompareAndSwap(nil, &why)
}

// validEvent checks an event's path cheaply; a bad one is counted and
// logged by the drop logger.
func (r *Recorder) validEvent(p string) bool {
	if checkPath("event path", p) != nil {
		r.invalid.Add(1)
		r.badPath.Store(&p)
		return false
	}
	return true
}

// Written records that file p (relative to root, first segment the VM) of
// app was released after a write. It never blocks.
func (r *Recorder) Written(app, p string) {
	if !r.validEvent(p) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if it := r.pending[p]; it != nil {
		it.write, it.app = true, app
		return
	}
	if it := r.newItemLocked(p); it != nil {
		it.write, it.app = true, app
	}
}

// Removed records that p was unlinked, or that directory p was removed (its
// rows and every row below it go). It never blocks.
func (r *Recorder) Removed(app, p string) {
	if !r.validEvent(p) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A hash of p or below that is running now would land after the removal.
	r.cancelInflightLocked(p, func(q string) string { return q })
	r.takeVanishedLocked(p)
	if it := r.pending[p]; it != nil {
		it.remove, it.write, it.app = true, false, app
		return
	}
	if it := r.newItemLocked(p); it != nil {
		it.remove, it.app = true, app
	}
}

// Renamed records that from was renamed to to (a file or a directory). It
// never blocks.
func (r *Recorder) Renamed(app, from, to string) {
	if !r.validEvent(from) || !r.validEvent(to) || from == to {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing || r.fifo.Len() >= r.opt.QueueSize {
		r.dropLocked()
		return
	}
	mapTo := func(q string) string {
		switch {
		case q == from:
			return to
		case strings.HasPrefix(q, from+"/"):
			return to + q[len(from):]
		}
		return "" // at or below to: replaced by the rename
	}
	r.cancelInflightLocked(from, mapTo)
	r.cancelInflightLocked(to, mapTo)
	// Events queued for the old to are superseded: the rename replaces it.
	for _, it := range r.pendingAtOrBelowLocked(to) {
		r.unlinkLocked(it)
		r.finishLocked(it.epoch)
	}
	moved := r.pendingAtOrBelowLocked(from)
	for _, it := range moved {
		r.unlinkLocked(it)
	}
	ren := &item{path: to, from: from, rename: true, app: app}
	r.pushLocked(ren, false)
	r.renames.add(from, to)
	// Events still queued for the old paths now apply to the new ones,
	// after the rename.
	for _, it := range moved {
		it.path = mapTo(it.path)
		r.pushLocked(it, true)
	}
	// A file whose hash found it gone was renamed on disk before this
	// event arrived: its Written was spent on the old name, which has no
	// row for the rename to move. Hash it at its new name.
	for _, q := range r.takeVanishedLocked(from) {
		p := mapTo(q)
		if it := r.pending[p]; it != nil {
			it.write = true
			if it.app == "" {
				it.app = app
			}
			continue
		}
		if it := r.newItemLocked(p); it != nil {
			it.write, it.app = true, app
		}
	}
	// Whatever vanished at the old to is replaced by the rename.
	r.takeVanishedLocked(to)
}

// renameLog remembers the most recent renames, from -> to, so that an
// event naming a file by the path it had before a rename can be followed
// to its new path.
type renameLog struct {
	order list.List                // *[2]string{from, to}, oldest first
	to    map[string]*list.Element // by from
}

// maxRenames bounds the renames remembered: a late event follows its
// rename closely.
const maxRenames = 4096

// maxFollow bounds the renames one event follows (renames can cycle).
const maxFollow = 8

func (l *renameLog) add(from, to string) {
	if e := l.to[from]; e != nil {
		l.order.Remove(e)
	} else if l.order.Len() >= maxRenames {
		delete(l.to, l.order.Remove(l.order.Front()).(*[2]string)[0])
	}
	l.to[from] = l.order.PushBack(&[2]string{from, to})
}

// follow returns where a remembered rename of p or of its nearest renamed
// ancestor moved p, or "".
func (l *renameLog) follow(p string) string {
	for q := p; ; {
		if e := l.to[q]; e != nil {
			return e.Value.(*[2]string)[1] + p[len(q):]
		}
		i := strings.LastIndexByte(q, '/')
		if i < 0 {
			return ""
		}
		q = q[:i]
	}
}

// maxVanished bounds the paths remembered as vanished. The rename event
// that needs one follows the rename syscall at once, so only the most
// recent few matter; the others are of files deleted without an event.
const maxVanished = 4096

// addVanishedLocked remembers that a hash found no file at p.
func (r *Recorder) addVanishedLocked(p string) {
	if r.vanishedAt[p] != nil {
		return
	}
	if r.vanished.Len() >= maxVanished {
		r.dropVanishedLocked(r.vanished.Front())
	}
	r.vanishedAt[p] = r.vanished.PushBack(p)
	forDirs(p, func(d string) { r.vanDirs[d]++ })
}

func (r *Recorder) dropVanishedLocked(e *list.Element) {
	p := r.vanished.Remove(e).(string)
	delete(r.vanishedAt, p)
	forDirs(p, func(d string) {
		if r.vanDirs[d]--; r.vanDirs[d] == 0 {
			delete(r.vanDirs, d)
		}
	})
}

// takeVanishedLocked forgets and returns the vanished paths at or below p.
func (r *Recorder) takeVanishedLocked(p string) []string {
	var out []string
	if e := r.vanishedAt[p]; e != nil {
		out = append(out, p)
		r.dropVanishedLocked(e)
	}
	if r.vanDirs[p] > 0 {
		for e := r.vanished.Front(); e != nil; {
			next := e.Next()
			if q := e.Value.(string); strings.HasPrefix(q, p+"/") {
				out = append(out, q)
				r.dropVanishedLocked(e)
			}
			e = next
		}
	}
	return out
}

// newItemLocked queues a new keyed item for p, or drops the event.
func (r *Recorder) newItemLocked(p string) *item {
	if r.closing || r.fifo.Len() >= r.opt.QueueSize {
		r.dropLocked()
		return nil
	}
	it := &item{path: p}
	r.pushLocked(it, false)
	return it
}

func (r *Recorder) dropLocked() {
	r.dropped.Add(1)
	r.markDirty("events were dropped (queue full)")
}

// pushLocked appends it to the fifo; a new item (keep=false) joins the
// current epoch, a moved one keeps its own.
func (r *Recorder) pushLocked(it *item, keep bool) {
	if !keep {
		it.epoch = r.epoch
		it.queued = time.Now()
		r.open[it.epoch]++
		r.lastEvent = it.queued
	}
	it.elem = r.fifo.PushBack(it)
	if !it.rename {
		r.pending[it.path] = it
		forDirs(it.path, func(d string) { r.pendDirs[d]++ })
	}
	if d := r.holdLocked(); d > 0 {
		r.armLocked(d)
		return
	}
	r.work.Signal()
}

// holdLocked returns how long the workers should leave the queue alone:
// until events have stopped for opt.Quiet, at most until the oldest
// queued event has waited opt.MaxDelay; 0 means work now.
func (r *Recorder) holdLocked() time.Duration {
	if r.opt.Quiet <= 0 || r.closing || r.hurry > 0 || r.fifo.Len() == 0 || r.fifo.Len() >= (r.opt.QueueSize+1)/2 {
		return 0
	}
	now := time.Now()
	quiet := r.opt.Quiet - now.Sub(r.lastEvent)
	if quiet <= 0 {
		return 0
	}
	oldest := r.fifo.Front().Value.(*item).queued
	if oldest.IsZero() {
		return 0
	}
	left := r.opt.MaxDelay - now.Sub(oldest)
	if left <= 0 {
		return 0
	}
	return min(quiet, left)
}

// armLocked makes sure the held workers look again within d.
func (r *Recorder) armLocked(d time.Duration) {
	at := time.Now().Add(d)
	if !r.wakeAt.IsZero() && !r.wakeAt.After(at) {
		return
	}
	r.wakeAt = at
	r.wake.Reset(d)
}

// hurryLocked stops holding back (Flush, Close): the workers and the
// flusher go at once.
func (r *Recorder) hurryLocked() {
	r.work.Broadcast()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// unlinkLocked takes a queued item out of the fifo (and the index).
func (r *Recorder) unlinkLocked(it *item) {
	r.fifo.Remove(it.elem)
	it.elem = nil
	if !it.rename {
		delete(r.pending, it.path)
		forDirs(it.path, func(d string) {
			if r.pendDirs[d]--; r.pendDirs[d] == 0 {
				delete(r.pendDirs, d)
			}
		})
	}
}

// forDirs calls fn for every proper ancestor directory of p.
func forDirs(p string, fn func(string)) {
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			fn(p[:i])
		}
	}
}

// pendingAtOrBelowLocked lists the keyed items queued for p or below it;
// the scan of the queue happens only when the directory index says there
// is something below p.
func (r *Recorder) pendingAtOrBelowLocked(p string) []*item {
	var out []*item
	if it := r.pending[p]; it != nil {
		out = append(out, it)
	}
	if r.pendDirs[p] > 0 {
		for q, it := range r.pending {
			if strings.HasPrefix(q, p+"/") {
				out = append(out, it)
			}
		}
	}
	return out
}

// cancelInflightLocked voids the running hashes of p and below; each is
// requeued at newPath(path), or finished if that is "".
func (r *Recorder) cancelInflightLocked(p string, newPath func(string) string) {
	for q, it := range r.inflight {
		if q == p || strings.HasPrefix(q, p+"/") {
			if !it.cancelled {
				it.cancelled, it.newPath = true, newPath(q)
			}
		}
	}
}

// popLocked takes the first item that can run now: not a path being hashed.
func (r *Recorder) popLocked() *item {
	for e := r.fifo.Front(); e != nil; e = e.Next() {
		it := e.Value.(*item)
		if !it.rename && r.inflight[it.path] != nil {
			continue
		}
		r.unlinkLocked(it)
		return it
	}
	return nil
}

func (r *Recorder) worker() {
	defer r.wg.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.abandon {
			return
		}
		if d := r.holdLocked(); d > 0 {
			r.armLocked(d)
			r.work.Wait()
			continue
		}
		it := r.popLocked()
		if it == nil {
			if r.closing && r.fifo.Len() == 0 {
				return
			}
			r.work.Wait()
			continue
		}
		if it.rename {
			r.addOpLocked(recOp{kind: opRename, from: it.from, path: it.path, app: it.app, finish: []uint64{it.epoch}})
			continue
		}
		if it.remove {
			op := recOp{kind: opRemove, path: it.path}
			if !it.write {
				op.finish = []uint64{it.epoch}
			}
			r.addOpLocked(op)
			it.remove = false
			if !it.write {
				continue
			}
		}
		r.inflight[it.path] = it
		r.mu.Unlock()
		if r.opt.beforeHash != nil {
			r.opt.beforeHash(it.path)
		}
		observed := r.opt.Now()
		st, sum, changed, err := r.tree.hashFile(it.path)
		r.mu.Lock()
		delete(r.inflight, it.path)
		r.work.Broadcast() // an item waiting for this path may run now
		r.finishHashLocked(it, observed, st, sum, changed, err)
	}
}

func (r *Recorder) finishHashLocked(it *item, observed time.Time, st fileState, sum string, changed bool, err error) {
	if it.cancelled {
		it.cancelled = false
		if it.newPath == "" {
			r.finishLocked(it.epoch)
			return
		}
		it.path = it.newPath
		r.requeueLocked(it)
		return
	}
	switch {
	case err == nil && changed && it.retries < r.opt.MaxRetries:
		it.retries++
		r.requeueLocked(it)
	case err == nil:
		rec := FileRecord{Path: it.path, App: it.app, Size: st.size, MTime: time.Unix(0, st.mtimeNS), SHA256: sum, UpdatedAt: observed}
		if changed {
			// Still changing after the retries: record what is known; a
			// later Written or a rescan will hash it.
			rec.SHA256 = ""
			r.opt.Logger.Warn("catalog recorder: file keeps changing while hashed; recorded without a hash",
				"path", it.path, "attempts", it.retries+1)
		}
		r.addOpLocked(recOp{kind: opUpsert, rec: rec, finish: []uint64{it.epoch}})
	case gone(err):
		// Perhaps renamed, its event not here yet: Renamed looks for it.
		r.addVanishedLocked(it.path)
		op := recOp{kind: opDelete, rec: FileRecord{Path: it.path, UpdatedAt: observed, Deleted: true}, finish: []uint64{it.epoch}}
		// Or renamed before the event that queued it was sent: a FUSE
		// release is asynchronous and may name the file by its old path.
		if to := r.renames.follow(it.path); to != "" && it.follows < maxFollow {
			op.finish = nil
			r.addOpLocked(op)
			it.path, it.follows, it.retries = to, it.follows+1, 0
			r.requeueLocked(it)
			return
		}
		r.addOpLocked(op)
	default:
		r.opt.Logger.Error("catalog recorder: cannot hash file", "path", it.path, "err", err)
		r.markDirty("a file could not be hashed: " + err.Error())
		r.finishLocked(it.epoch)
	}
}

// requeueLocked queues a (previously popped) item again at the tail,
// merging it into an item already queued for its path.
func (r *Recorder) requeueLocked(it *item) {
	if cur := r.pending[it.path]; cur != nil {
		cur.write = true
		if cur.app == "" {
			cur.app = it.app
		}
		// The merged item must not finish before it: take the older epoch.
		if it.epoch < cur.epoch {
			r.finishLocked(cur.epoch)
			cur.epoch = it.epoch
		} else {
			r.finishLocked(it.epoch)
		}
		return
	}
	it.write = true
	r.pushLocked(it, true)
}

func (r *Recorder) addOpLocked(op recOp) {
	r.ops = append(r.ops, op)
	r.signalOps()
}

func (r *Recorder) signalOps() {
	select {
	case r.opsReady <- struct{}{}:
	default:
	}
}

func (r *Recorder) finishLocked(epochs ...uint64) {
	r.countDownLocked(epochs)
	r.notifyLocked()
}

func (r *Recorder) countDownLocked(epochs []uint64) {
	for _, e := range epochs {
		if r.open[e]--; r.open[e] <= 0 {
			delete(r.open, e)
		}
	}
}

// notifyLocked wakes the Flush waiters.
func (r *Recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Recorder) flusher() {
	for range r.opsReady {
		r.gather()
		for {
			r.mu.Lock()
			ops := r.ops
			if n := r.opt.opsPerWrite; len(ops) > n {
				ops, r.ops = ops[:n:n], ops[n:]
			} else {
				r.ops = nil
			}
			last := r.workersGone
			r.mu.Unlock()
			if len(ops) == 0 {
				if last {
					return
				}
				break
			}
			err := r.db.write(context.Background(), func(tx *sql.Tx) error { return r.applyTx(tx, ops) })
			if err != nil {
				r.opt.Logger.Error("catalog recorder: cannot write file records", "ops", len(ops), "err", err)
				r.markDirty("writing file records failed: " + err.Error())
			}
			r.mu.Lock()
			if err != nil && r.flushErr == nil {
				r.flushErr = err
			}
			for _, op := range ops {
				r.countDownLocked(op.finish)
			}
			r.notifyLocked()
			r.mu.Unlock()
		}
	}
}

// gather waits opt.BatchDelay for more results to share one write
// transaction, unless a Flush or Close is waiting or a batch is full.
func (r *Recorder) gather() {
	if r.opt.BatchDelay <= 0 {
		return
	}
	r.mu.Lock()
	skip := r.hurry > 0 || r.closing || len(r.ops) >= r.opt.opsPerWrite
	r.mu.Unlock()
	if skip {
		return
	}
	t := time.NewTimer(r.opt.BatchDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.kick:
	}
}

func (r *Recorder) applyTx(tx *sql.Tx, ops []recOp) error {
	now := r.opt.Now()
	var recs []FileRecord
	flushRecs := func() error {
		if len(recs) == 0 {
			return nil
		}
		err := r.db.upsertFilesTx(tx, recs, now)
		recs = recs[:0]
		return err
	}
	for _, op := range ops {
		switch op.kind {
		case opUpsert, opDelete:
			recs = append(recs, op.rec)
			continue
		}
		if err := flushRecs(); err != nil {
			return err
		}
		switch op.kind {
		case opRemove:
			if _, err := removeTx(tx, op.path); err != nil {
				return fmt.Errorf("remove %q: %w", op.path, err)
			}
		case opRename:
			if err := renameTx(tx, op.from, op.path, op.app); err != nil {
				return fmt.Errorf("rename %q to %q: %w", op.from, op.path, err)
			}
		}
	}
	return flushRecs()
}

// Flush waits until every event received before the call is in the
// database (a file that kept changing is retried first), and returns the
// first write error since the previous Flush.
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	target := r.epoch
	r.epoch++
	r.hurry++
	r.hurryLocked()
	defer func() {
		r.mu.Lock()
		r.hurry--
		r.mu.Unlock()
	}()
	for {
		pending := false
		for e := range r.open {
			if e <= target {
				pending = true
				break
			}
		}
		if !pending || r.abandon {
			err := r.flushErr
			r.flushErr = nil
			r.mu.Unlock()
			return err
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			r.mu.Lock()
			defer r.mu.Unlock()
			return errors.Join(r.flushErr, errors.New("catalog: recorder closed before its queue was written"))
		}
		r.mu.Lock()
	}
}

// Close stops taking events, processes those queued, writes them and
// returns. If ctx ends first, the rest is abandoned, the catalog stays
// marked dirty and Close says how many events were lost.
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return errors.New("catalog: recorder already closed")
	}
	r.closing = true
	r.hurryLocked()
	r.mu.Unlock()
	var lost int
	select {
	case <-r.done:
	case <-ctx.Done():
		r.mu.Lock()
		r.abandon = true
		lost = r.fifo.Len() + len(r.inflight)
		r.work.Broadcast()
		r.mu.Unlock()
		<-r.done
		r.markDirty(fmt.Sprintf("recorder closed with %d events unprocessed", lost))
	}
	r.mu.Lock()
	r.wake.Stop()
	r.mu.Unlock()
	close(r.stopLog)
	r.logDropsNow()
	errs := []error{r.tree.close()}
	r.mu.Lock()
	errs = append(errs, r.flushErr)
	r.mu.Unlock()
	if why := r.Dirty(); why == "" {
		errs = append(errs, r.db.deleteMeta(context.Background(), metaDirty))
	} else {
		errs = append(errs, r.db.setMeta(context.Background(), metaDirty, why))
	}
	if lost > 0 {
		errs = append(errs, fmt.Errorf("catalog: recorder for %s: %d events abandoned at close (%w); rescan recommended", r.tree.root, lost, ctx.Err()))
	}
	return errors.Join(errs...)
}

func (r *Recorder) logDrops() {
	t := time.NewTicker(r.opt.LogInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			r.logDropsNow()
		case <-r.stopLog:
			return
		}
	}
}

func (r *Recorder) logDropsNow() {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	d, inv := r.dropped.Load(), r.invalid.Load()
	if d > r.loggedDropped {
		r.opt.Logger.Warn("catalog recorder: queue full, events dropped; rescan recommended",
			"root", r.tree.root, "dropped", d-r.loggedDropped, "dropped_total", d, "queue_size", r.opt.QueueSize)
	}
	if inv > r.loggedInvalid {
		bad := ""
		if b := r.badPath.Load(); b != nil {
			bad = *b
		}
		r.opt.Logger.Error("catalog recorder: events with an invalid path ignored",
			"root", r.tree.root, "count", inv-r.loggedInvalid, "last", bad)
	}
	r.loggedDropped, r.loggedInvalid = d, inv
}

// Rescan runs DB.Rescan on the recorder's root. If it covered the whole tree
// without errors, the recorder is clean again (events dropped meanwhile
// mark it dirty anew).
func (r *Recorder) Rescan(ctx context.Context, opt RescanOptions) (RescanStats, error) {
	var why *string
	if opt.Prefix == "" {
		why = r.dirtyWhy.Swap(nil)
	}
	stats, err := r.db.Rescan(ctx, r.tree.root, opt)
	if (err != nil || stats.Errors > 0) && why != nil {
		r.dirtyWhy.CompareAndSwap(nil, why)
	}
	return stats, err
}
