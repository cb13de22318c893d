package uring

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The io_uring ABI this package needs (linux/io_uring.h). x/sys/unix has
// the syscall numbers but not the structures.
const (
	setupSQE128       = 1 << 10
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13
	setupCoopTaskrun  = 1 << 8

	enterGetEvents = 1 << 0

	featSingleMmap = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	opURingCmd = 46

	sqeSize = 128 // SQE128: 64 bytes of SQE, 80 of command area from offset 48
	cqeSize = 16
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqe is the fixed part of a 128-byte submission queue entry; the
// URING_CMD command bytes start at cmd (offset 48).
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64 // cmd_op in the low 32 bits for URING_CMD
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	cmd         [80]byte
}

type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// ring is one io_uring instance with a one-entry submission queue in
// use at a time: each ring serves a single FUSE ring entry. It must be
// set up and used by one locked OS thread (SINGLE_ISSUER).
type ring struct {
	fd int

	sqMem, cqMem, sqeMem []byte

	sqHead, sqTail, sqMask *uint32
	sqArray                unsafe.Pointer
	sqEntries              uint32

	cqHead, cqTail, cqMask *uint32
	cqes                   unsafe.Pointer

	pending    uint32 // SQEs filled but not yet submitted
	singleMmap bool   // cqMem is sqMem
}

func newRing(entries uint32) (*ring, error) {
	p := params{flags: setupSQE128 | setupSingleIssuer | setupDeferTaskrun | setupCoopTaskrun}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ring{fd: int(fd), sqEntries: p.sqEntries}
	ok := false
	defer func() {
		if !ok {
			r.close()
		}
	}()

	sqLen := int(p.sqOff.array) + int(p.sqEntries)*4
	cqLen := int(p.cqOff.cqes) + int(p.cqEntries)*cqeSize
	if p.features&featSingleMmap != 0 {
		sqLen = max(sqLen, cqLen)
		cqLen = sqLen
	}
	var err error
	r.sqMem, err = unix.Mmap(r.fd, offSQRing, sqLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("io_uring: mmap SQ ring: %w", err)
	}
	if p.features&featSingleMmap != 0 {
		r.cqMem, r.singleMmap = r.sqMem, true
	} else {
		r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("io_uring: mmap CQ ring: %w", err)
		}
	}
	r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("io_uring: mmap SQEs: %w", err)
	}
	sq := unsafe.Pointer(&r.sqMem[0])
	r.sqHead = (*uint32)(unsafe.Add(sq, p.sqOff.head))
	r.sqTail = (*uint32)(unsafe.Add(sq, p.sqOff.tail))
	r.sqMask = (*uint32)(unsafe.Add(sq, p.sqOff.ringMask))
	r.sqArray = unsafe.Add(sq, p.sqOff.array)
	cq := unsafe.Pointer(&r.cqMem[0])
	r.cqHead = (*uint32)(unsafe.Add(cq, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(cq, p.cqOff.tail))
	r.cqMask = (*uint32)(unsafe.Add(cq, p.cqOff.ringMask))
	r.cqes = unsafe.Add(cq, p.cqOff.cqes)
	ok = true
	return r, nil
}

// nextSQE returns a zeroed SQE to fill; it is submitted by the next
// enter. The caller never has more than sqEntries outstanding.
func (r *ring) nextSQE() *sqe {
	tail := atomic.LoadUint32(r.sqTail) + r.pending
	idx := tail & *r.sqMask
	s := (*sqe)(unsafe.Pointer(&r.sqeMem[int(idx)*sqeSize]))
	*s = sqe{}
	*(*uint32)(unsafe.Add(r.sqArray, idx*4)) = idx
	r.pending++
	return s
}

// enter submits the pending SQEs and, if wait, waits for at least one
// completion. Every SQE is consumed by one call (a failing one completes
// with its error); a call interrupted by a signal is made again for what
// the kernel has not consumed yet.
func (r *ring) enter(wait bool) error {
	atomic.StoreUint32(r.sqTail, atomic.LoadUint32(r.sqTail)+r.pending)
	r.pending = 0
	var minComplete, flags uintptr
	if wait {
		minComplete, flags = 1, enterGetEvents
	}
	for {
		toSubmit := atomic.LoadUint32(r.sqTail) - atomic.LoadUint32(r.sqHead)
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), minComplete, flags, 0, 0)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
		default:
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
}

// reap returns the next completion, if any, and consumes it.
func (r *ring) reap() (cqe, bool) {
	head := atomic.LoadUint32(r.cqHead)
	if head == atomic.LoadUint32(r.cqTail) {
		return cqe{}, false
	}
	c := *(*cqe)(unsafe.Add(r.cqes, uintptr(head&*r.cqMask)*cqeSize))
	atomic.StoreUint32(r.cqHead, head+1)
	return c, true
}

func (r *ring) close() {
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.cqMem != nil && !r.singleMmap {
		unix.Munmap(r.cqMem)
	}
	if r.sqMem != nil {
		unix.Munmap(r.sqMem)
	}
	unix.Close(r.fd)
}
