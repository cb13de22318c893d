// Copyright 2024 the Go-FUSE Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package vhostuser

import (
	"fmt"
	"log"
	"sync"
	"syscall"
)

// Device is the virtio-fs device state of one vhost-user connection.
type Device struct {
	reqFD int

	Debug bool

	// Logf receives the device's diagnostics; log.Printf when nil.
	Logf func(format string, args ...any)

	vqs []*Virtq

	regions  deviceRegions
	logTable []byte

	handle func(*VirtqElem) int

	// dispatchMu guards all control-plane mutations (SET_VRING_*, ADD_MEM_REG,
	// etc.) against concurrent vring dequeue.  Control messages take the write
	// lock; queue threads take the read lock while draining the avail ring.
	// FUSE request processing runs without any lock (matching virtiofsd's
	// vu_dispatch_rwlock design).
	dispatchMu sync.RWMutex
}

func (d *Device) logf(format string, args ...any) {
	if d.Logf != nil {
		d.Logf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// Close stops every vring, waits for the requests in flight and unmaps the
// guest memory. The caller must have stopped the control loop first.
func (d *Device) Close() error {
	var retErr error
	for i := range d.vqs {
		if err := d.vqs[i].Close(); err != nil && retErr == nil {
			retErr = err
		}
	}

	if err := d.regions.Close(); err != nil && retErr == nil {
		retErr = err
	}

	if d.logTable != nil {
		if err := syscall.Munmap(d.logTable); err != nil && retErr == nil {
			retErr = err
		}
		d.logTable = nil
	}
	if d.reqFD >= 0 {
		syscall.Close(d.reqFD)
		d.reqFD = -1
	}
	return retErr
}

// NewDevice creates a new virtio device. The handler should return
// the number of response bytes written.
func NewDevice(handle func(*VirtqElem) int) *Device {
	d := &Device{
		reqFD: -1,
		// TODO: queue count should be configurable; 2 is hardcoded (hiprio +
		// one request queue). GetQueueNum() reports this count to the driver,
		// so they must stay in sync.
		vqs: make([]*Virtq, 2),
	}
	for i := range d.vqs {
		d.vqs[i] = newVirtq(d)
	}

	d.handle = handle
	return d
}

// https://qemu-project.gitlab.io/qemu/interop/vhost-user.html#communication
// is incorrect regarding types.
func (d *Device) SetLogBase(fd int, log *VhostUserLog) error {
	data, err := syscall.Mmap(fd, int64(log.MmapOffset), int(log.MmapSize),
		syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_SHARED) // |syscall.MAP_NORESERVE)?
	syscall.Close(fd)
	if err != nil {
		return err
	}
	if d.logTable != nil {
		syscall.Munmap(d.logTable)
	}

	d.logTable = data
	return nil
}

func (d *Device) SetVringAddr(addr *VhostVringAddr) error {
	vq, err := d.vq(uint64(addr.Index))
	if err != nil {
		return err
	}
	return vq.SetVringAddr(addr)
}

func (d *Device) SetVringNum(state *VhostVringState) error {
	vq, err := d.vq(uint64(state.Index))
	if err != nil {
		return err
	}
	if state.Num == 0 || state.Num > 32768 || state.Num&(state.Num-1) != 0 {
		return fmt.Errorf("vring %d: size %d is not a power of 2 up to 32768", state.Index, state.Num)
	}
	vq.Vring.Num = int(state.Num)
	return nil
}

func (d *Device) SetVringBase(state *VhostVringState) error {
	p, err := d.vq(uint64(state.Index))
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ShadowAvailIdx = uint16(state.Num)
	p.LastAvailIdx = uint16(state.Num)
	p.mu.Unlock()
	return nil
}

// SetVringEnable starts or stops the vring's reader. Stopping waits for the
// reader and the requests in flight, so it must run without dispatchMu held:
// the reader takes dispatchMu's read lock to drain the ring.
func (d *Device) SetVringEnable(state *VhostVringState) error {
	vq, err := d.vq(uint64(state.Index))
	if err != nil {
		return err
	}
	if state.Num != 0 {
		vq.start(d.handle)
	} else {
		vq.stop()
	}
	return nil
}

// GetVringBase stops the vring (QEMU sends it when the guest resets or
// powers off the device) and returns the index the driver resumes from.
// Added to go-fuse's copy, which did not answer it: QEMU then waited for
// the reply forever and could neither reset nor power off the guest.
// Like SetVringEnable, it must run without dispatchMu held.
func (d *Device) GetVringBase(state *VhostVringState) error {
	vq, err := d.vq(uint64(state.Index))
	if err != nil {
		return err
	}
	vq.stop()
	vq.mu.Lock()
	state.Num = uint32(vq.LastAvailIdx)
	vq.mu.Unlock()
	vq.closeFDs()
	return nil
}

func (d *Device) vq(index uint64) (*Virtq, error) {
	if index >= uint64(len(d.vqs)) {
		return nil, fmt.Errorf("vring index %d out of range (%d vrings)", index, len(d.vqs))
	}
	return d.vqs[index], nil
}

type VirtqElem struct {
	// this is the index into Vring.Desc
	index uint

	// read and write from our perspective. The write field is for
	// consumers (ie the file system). We return the total length
	// to the driver, which can find the memory through the vring
	// index above.
	Write [][]byte
	Read  [][]byte
}

func (d *Device) logQueueFill(vq *Virtq, elem *VirtqElem, len int) {
	// NOP, need LOG_SHMFD features
}

// set bit in dev.LogTable bitvector . the bitvector indexes 4k pages
// this lets the guest know there was a write in the page. Needs
// LOG_SHMFD feature.
func (d *Device) logWrite(address, sz uint64) {
	if d.logTable == nil || sz == 0 {
		return
	}

	// if !F_LOG_ALL return
	// mark addr in the d.LogTable bitvector.
	// kick the log fd.
}

// SetVringKick sets the kick eventfd for the virtqueue at index.
//
// The field is frozen while the vring runs: its reader is blocked reading
// the eventfd. The vhost-user protocol orders SET_VRING_KICK before
// SET_VRING_ENABLE (and after GET_VRING_BASE on a restart).
func (d *Device) SetVringKick(fd int, index uint64) error {
	if index&(1<<8) != 0 {
		syscall.Close(fd)
		return fmt.Errorf("SET_VRING_KICK: polling mode (invalid fd flag) is not supported")
	}
	vq, err := d.vq(index)
	if err != nil {
		syscall.Close(fd)
		return err
	}
	if vq.control != nil {
		syscall.Close(fd)
		return fmt.Errorf("SET_VRING_KICK after vring %d enabled", index)
	}
	return vq.setKick(fd)
}

// SetVringErr sets the error eventfd.
func (d *Device) SetVringErr(fd int, index uint64) error {
	vq, err := d.vq(index &^ (1 << 8))
	if err != nil || index&(1<<8) != 0 {
		syscall.Close(fd)
		if err == nil {
			err = fmt.Errorf("SET_VRING_ERR: invalid fd flag is not supported")
		}
		return err
	}
	vq.mu.Lock()
	defer vq.mu.Unlock()
	if old := vq.ErrFD; old >= 0 {
		syscall.Close(old)
	}
	vq.ErrFD = fd
	return nil
}

// SetVringCall sets the call eventfd. QEMU may change it while the vring
// runs (interrupt masking), so it is swapped under vq.mu, which
// queueNotify holds while writing to it.
func (d *Device) SetVringCall(fd int, index uint64) error {
	vq, err := d.vq(index &^ (1 << 8))
	if err != nil || index&(1<<8) != 0 {
		syscall.Close(fd)
		if err == nil {
			err = fmt.Errorf("SET_VRING_CALL: invalid fd flag is not supported")
		}
		return err
	}
	vq.mu.Lock()
	defer vq.mu.Unlock()
	if old := vq.CallFD; old >= 0 {
		syscall.Close(old)
	}
	vq.CallFD = fd
	return nil
}

func (d *Device) SetOwner() {

}

func (d *Device) SetReqFD(fd int) {
	if d.reqFD >= 0 {
		syscall.Close(d.reqFD)
	}
	d.reqFD = fd
}

func (d *Device) GetQueueNum() uint64 {
	return uint64(len(d.vqs))
}

func (h *Device) GetFeatures() []int {
	return []int{
		//"\0\0\0p\1\0\0\0"
		RING_F_INDIRECT_DESC,
		RING_F_EVENT_IDX,
		F_PROTOCOL_FEATURES,
		F_VERSION_1,
	}
}

func (h *Device) SetFeatures(fs []int) {

}

func (h *Device) SetProtocolFeatures([]int) {

}

func (h *Device) GetProtocolFeatures() []int {
	// not supporting VHOST_USER_PROTOCOL_F_PAGEFAULT, so no support for
	// postcopy listening.

	// NOTE: PROTOCOL_F_LOG_SHMFD is not advertised here, but SetLogBase is
	// implemented and reachable.  Either advertise the feature or remove the
	// handler.

	// ")\204\0\0\0\0\0\0"
	// x29 x84
	return []int{
		PROTOCOL_F_MQ,
		PROTOCOL_F_REPLY_ACK,
		PROTOCOL_F_BACKEND_REQ,
		PROTOCOL_F_BACKEND_SEND_FD,
		PROTOCOL_F_CONFIGURE_MEM_SLOTS,
	}
}
