// Package uring serves a FUSE connection through FUSE-over-io_uring
// (Linux 6.14 and later, with the fuse module's enable_uring parameter
// set): instead of read(2) and write(2) on /dev/fuse, every request
// arrives in a buffer registered with the kernel and is answered with the
// same io_uring command that fetches the next one.
//
// The kernel keeps one queue per possible CPU and puts a request on the
// queue of the CPU its caller runs on. Each queue here is served by
// threads pinned to that CPU, so a request never waits for a wakeup
// across CPUs: on a small VM that cross-CPU wakeup (an IPI, a VM exit)
// was the largest single cost of a metadata round trip. (The answer's
// wakeup may still move the caller to an idle CPU; the scheduler decides.)
//
// Every thread of every connection counts against one budget per process
// (MaxThreads): a host with many CPUs and many mounts falls back to
// /dev/fuse for the mounts over it, rather than reaching Go's limit on
// OS threads, which is fatal.
//
// Requests are decoded and answered by go-fuse's ProtocolServer over the
// same RawFileSystem the /dev/fuse server serves. FORGET, INTERRUPT and
// notifications still go through /dev/fuse, so the fuse.Server's loop
// keeps running beside the rings.
package uring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The FUSE-over-io_uring ABI (linux/fuse.h, protocol 7.42).
const (
	cmdRegister       = 1
	cmdCommitAndFetch = 2

	inOutSize   = 128 // fuse_in_header on fetch, fuse_out_header on commit
	opInSize    = 128 // the opcode's fixed argument
	entInOutOff = inOutSize + opInSize
	headerSize  = entInOutOff + 32 // + fuse_uring_ent_in_out

	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))

	opInit  = 26
	opWrite = 16

	// payloadOff is where a worker's payload buffer starts, after the
	// header, in the worker's one mapping.
	payloadOff = 4096
)

// ParamPath is the fuse module parameter that lets connections use
// io_uring (root can write Y to it; "options fuse enable_uring=1" in
// /etc/modprobe.d sets it at boot).
const ParamPath = "/sys/module/fuse/parameters/enable_uring"

// Enabled reports whether the running kernel lets FUSE connections use
// io_uring.
func Enabled() bool {
	b, err := os.ReadFile(ParamPath)
	return err == nil && strings.TrimSpace(string(b)) == "Y"
}

// Enable switches FUSE over io_uring on for connections made from now on
// (root only) and returns a function that puts the previous setting
// back. It fails when the kernel has no FUSE over io_uring.
func Enable() (restore func(), err error) {
	old, err := os.ReadFile(ParamPath)
	if err != nil {
		return nil, fmt.Errorf("uring: this kernel has no FUSE over io_uring (Linux 6.14+, CONFIG_FUSE_IO_URING): %w", err)
	}
	if strings.TrimSpace(string(old)) == "Y" {
		return func() {}, nil
	}
	if err := os.WriteFile(ParamPath, []byte("Y"), 0); err != nil {
		return nil, fmt.Errorf("uring: enable FUSE over io_uring: %w", err)
	}
	return func() { os.WriteFile(ParamPath, old, 0) }, nil
}

// Server is the set of ring threads of one FUSE connection.
type Server struct {
	log      *slog.Logger
	workers  []*worker
	start    chan struct{} // closed by Start (or Close)
	wg       sync.WaitGroup
	closed   atomic.Bool
	requests atomic.Uint64
	poison   bool // set before start is closed: register an invalid queue, then end
	payload  int  // size of each worker's payload buffer

	// Set by Start before start is closed.
	fd int
	ps *fuse.ProtocolServer
}

type worker struct {
	s   *Server
	qid int
	cpu int // -1: the CPU is not online, the thread is not pinned

	buf     []byte // header (headerSize bytes) at 0, payload at payloadOff
	scratch []byte
	started chan error // the REGISTER result
}

// MaxThreads is how many ring threads all connections of the process may
// have together; Prepare refuses a connection that would go over it. Set
// it before the first mount. Go ends a process that has more than 10,000
// OS threads (debug.SetMaxThreads).
var MaxThreads int64 = 4096

// threads counts the ring threads of the process that have not ended.
var threads atomic.Int64

// reserve counts n more ring threads, unless that would go over
// MaxThreads.
func reserve(n int) error {
	for {
		cur := threads.Load()
		if cur+int64(n) > MaxThreads {
			return fmt.Errorf("uring: %d more threads would make %d, over the process's %d (MaxThreads)", n, cur+int64(n), MaxThreads)
		}
		if threads.CompareAndSwap(cur, cur+int64(n)) {
			return nil
		}
	}
}

// Prepare starts perQueue threads for each of the kernel's queues (one
// per possible CPU; one thread for a CPU that is not online), each
// pinned to its CPU with an io_uring of its own.
// It fails when io_uring cannot be set up in this process; the caller
// then mounts without offering io_uring to the kernel. payload is the
// connection's largest READ or WRITE (its MaxWrite).
func Prepare(perQueue, payload int, logger *slog.Logger) (*Server, error) {
	if perQueue < 1 {
		perQueue = 1
	}
	cpus, err := readCPUList("/sys/devices/system/cpu/possible")
	if err != nil {
		return nil, err
	}
	possible := cpus[len(cpus)-1] + 1
	online := map[int]bool{}
	if cpus, err := readCPUList("/sys/devices/system/cpu/online"); err == nil {
		for _, c := range cpus {
			online[c] = true
		}
	}
	page := os.Getpagesize()
	payload = max(payload, 8192) // FUSE_MIN_READ_BUFFER
	payload = (payload + page - 1) / page * page
	s := &Server{log: logger, start: make(chan struct{}), payload: payload}
	for qid := 0; qid < possible; qid++ {
		cpu, threads := qid, perQueue
		if !online[qid] {
			// The kernel wants a queue for every possible CPU, but
			// one that is not online asks nothing until it is.
			cpu, threads = -1, 1
		}
		for range threads {
			s.workers = append(s.workers, &worker{s: s, qid: qid, cpu: cpu, started: make(chan error, 1)})
		}
	}
	if err := reserve(len(s.workers)); err != nil {
		return nil, err
	}
	errs := make(chan error, len(s.workers))
	for _, w := range s.workers {
		s.wg.Add(1)
		go w.run(errs)
	}
	var first error
	for range s.workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		s.Close()
		return nil, first
	}
	return s, nil
}

// Start registers every thread's buffer with the connection on fd, whose
// INIT the fuse.Server has answered with CAP_OVER_IO_URING. raw and opts
// must be what that server serves; init is its KernelSettings. Once the
// kernel has a buffer on every queue it sends all requests through the
// rings. An error means at least one queue could not register; the
// kernel then falls back to /dev/fuse by itself.
func (s *Server) Start(fd int, raw fuse.RawFileSystem, opts *fuse.MountOptions, init *fuse.InitIn) error {
	s.fd = fd
	s.ps = fuse.NewProtocolServer(raw, opts)
	if err := s.syncInit(init); err != nil {
		// The kernel holds every request until the rings are ready
		// or a registration fails: make one fail.
		s.poison = true
		close(s.start)
		return errors.Join(err, <-s.workers[0].started)
	}
	close(s.start)
	var errs []error
	for _, w := range s.workers {
		if err := <-w.started; err != nil {
			errs = append(errs, fmt.Errorf("queue %d: %w", w.qid, err))
		}
	}
	return errors.Join(errs...)
}

// syncInit gives the ProtocolServer the kernel's INIT, so that it parses
// requests for the negotiated protocol version and flags; its answer is
// dropped (the fuse.Server sent the real one).
func (s *Server) syncInit(init *fuse.InitIn) error {
	// go-fuse's InitIn starts with its InHeader.
	in := make([]byte, unsafe.Sizeof(*init))
	msg := (*fuse.InitIn)(unsafe.Pointer(&in[0]))
	*msg = *init
	msg.InHeader = fuse.InHeader{Length: uint32(len(in)), Opcode: opInit, Unique: 1}
	out := make([]byte, 4096)
	if _, st := s.ps.HandleRequest([][]byte{in}, [][]byte{out}); !st.Ok() {
		return fmt.Errorf("uring: INIT: %v", st)
	}
	if st := (*fuse.OutHeader)(unsafe.Pointer(&out[0])).Status; st != 0 {
		return fmt.Errorf("uring: INIT: %v", fuse.Status(-st))
	}
	return nil
}

// Close ends threads that have not started (the mount failed). Started
// threads end by themselves when the connection ends (unmount, abort).
func (s *Server) Close() {
	if s.closed.CompareAndSwap(false, true) {
		select {
		case <-s.start:
		default:
			close(s.start)
		}
	}
}

// Wait waits until every thread has ended.
func (s *Server) Wait() { s.wg.Wait() }

// Requests reports how many requests the rings have answered.
func (s *Server) Requests() uint64 { return s.requests.Load() }

// Queues reports the number of kernel queues and of threads serving
// them.
func (s *Server) Queues() (queues, threads int) {
	if len(s.workers) == 0 {
		return 0, 0
	}
	return s.workers[len(s.workers)-1].qid + 1, len(s.workers)
}

func (w *worker) run(setup chan<- error) {
	defer w.s.wg.Done()
	defer threads.Add(-1)
	// The thread keeps its CPU affinity and ring for life; it is never
	// unlocked, so Go discards it when the goroutine ends.
	runtime.LockOSThread()
	if w.cpu >= 0 {
		var set unix.CPUSet
		set.Set(w.cpu)
		// Not fatal: the queue still works, only the locality is lost.
		_ = unix.SchedSetaffinity(0, &set)
	}
	r, err := newRing(4)
	if err == nil {
		w.buf, err = unix.Mmap(-1, 0, payloadOff+w.s.payload, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			r.close()
			err = fmt.Errorf("uring: buffer: %w", err)
		}
	}
	setup <- err
	if err != nil {
		return
	}
	// The kernel may write into the buffer as long as it holds it
	// registered: it is unmapped only after the ring is closed, and
	// only when the entry never registered or the connection ended
	// (which tears the entry down); otherwise it is left mapped.
	safe := true
	defer func() {
		r.close()
		if safe {
			unix.Munmap(w.buf)
		}
	}()

	<-w.s.start
	if w.s.closed.Load() {
		return
	}
	iov := [2]unix.Iovec{
		{Base: &w.buf[0], Len: headerSize},
		{Base: &w.buf[payloadOff], Len: uint64(w.s.payload)},
	}
	sq := r.nextSQE()
	w.fill(sq, cmdRegister, 0)
	sq.addr = uint64(uintptr(unsafe.Pointer(&iov[0])))
	sq.len = 2
	if w.s.poison {
		if w != w.s.workers[0] {
			return
		}
		binary.LittleEndian.PutUint16(sq.cmd[16:], 0xffff)
	}
	// A REGISTER that fails completes at once; one that succeeds
	// completes when the first request arrives (and, with
	// DEFER_TASKRUN, only once this thread waits for it).
	err = r.enter(false)
	runtime.KeepAlive(&iov)
	if err != nil {
		w.started <- err
		return
	}
	first, ok := r.reap()
	if ok && first.res < 0 {
		w.started <- fmt.Errorf("register: %w", unix.Errno(-first.res))
		return
	}
	safe = false
	if w.s.poison {
		w.started <- errors.New("register of an invalid queue did not fail")
		return
	}
	w.started <- nil

	for {
		if !ok {
			if err := r.enter(true); err != nil {
				w.s.log.Error("fuse io_uring: wait", "queue", w.qid, "err", err)
				return
			}
			first, ok = r.reap()
			continue
		}
		c := first
		ok = false
		if c.res < 0 {
			errno := unix.Errno(-c.res)
			switch errno {
			case unix.ENOTCONN, unix.ECANCELED, unix.ECONNABORTED, unix.ENODEV:
				safe = true
			default:
				w.s.log.Error("fuse io_uring: queue ends", "queue", w.qid, "err", errno)
			}
			return
		}
		commitID := w.serve()
		w.fill(r.nextSQE(), cmdCommitAndFetch, commitID)
	}
}

// fill makes sq a FUSE io_uring command for this thread's queue.
func (w *worker) fill(sq *sqe, cmd uint32, commitID uint64) {
	sq.opcode = opURingCmd
	sq.fd = int32(w.s.fd)
	sq.off = uint64(cmd)
	// struct fuse_uring_cmd_req: flags, commit_id, qid.
	binary.LittleEndian.PutUint64(sq.cmd[8:], commitID)
	binary.LittleEndian.PutUint16(sq.cmd[16:], uint16(w.qid))
}

// serve answers the request in the buffer and returns its commit ID.
func (w *worker) serve() uint64 {
	hdr := w.buf[:headerSize]
	payload := w.buf[payloadOff : payloadOff+w.s.payload]
	ent := hdr[entInOutOff:]
	commitID := binary.LittleEndian.Uint64(ent[8:])
	payloadSize := int(binary.LittleEndian.Uint32(ent[16:]))
	h := (*fuse.InHeader)(unsafe.Pointer(&hdr[0]))
	unique, opcode := h.Unique, h.Opcode
	argSize := int(h.Length) - inHeaderSize - payloadSize

	n := 0
	st := fuse.EIO
	if argSize >= 0 && argSize <= opInSize && payloadSize <= len(payload) {
		in := [3][]byte{hdr[:inHeaderSize], hdr[inOutSize : inOutSize+argSize], payload[:payloadSize]}
		if opcode != opWrite && payloadSize > 0 {
			// The answer is written into the same payload buffer;
			// only WRITE's data (which has no payload answer) is
			// read in place.
			if cap(w.scratch) < payloadSize {
				w.scratch = make([]byte, payloadSize)
			}
			in[2] = w.scratch[:copy(w.scratch[:payloadSize], in[2])]
		}
		// The answer's header goes to in_out, its arguments to the
		// payload buffer.
		n, st = w.s.ps.HandleRequest(in[:], [][]byte{hdr[:outHeaderSize], payload})
	} else {
		w.s.log.Error("fuse io_uring: malformed request", "queue", w.qid, "opcode", opcode,
			"len", h.Length, "payload", payloadSize)
	}
	if !st.Ok() || n < outHeaderSize {
		// No answer (a bad request, or one that takes none): the
		// entry must still be committed to get the next request.
		oh := (*fuse.OutHeader)(unsafe.Pointer(&hdr[0]))
		*oh = fuse.OutHeader{Length: uint32(outHeaderSize), Status: -int32(fuse.EIO), Unique: unique}
		n = outHeaderSize
	}
	binary.LittleEndian.PutUint32(ent[16:], uint32(n-outHeaderSize))
	w.s.requests.Add(1)
	return commitID
}

// readCPUList reads one of the kernel's CPU list files; it has at
// least one CPU.
func readCPUList(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("uring: %w", err)
	}
	cpus := parseCPUList(strings.TrimSpace(string(b)))
	if len(cpus) == 0 {
		return nil, fmt.Errorf("uring: %s: no CPUs in %q", path, b)
	}
	return cpus, nil
}

// parseCPUList parses the kernel's CPU list format ("0-3,8,10-11").
func parseCPUList(s string) []int {
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, found := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if found {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus
}
