// Copyright 2024 the Go-FUSE Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package vhostuser

import (
	"errors"
	"os"
	"syscall"
)

const _HUGETLBFS_MAGIC = 0x958458f6

func getFDHugepagesize(fd int) int {
	var fs syscall.Statfs_t
	var err error
	for {
		err = syscall.Fstatfs(fd, &fs)
		if err != syscall.EINTR {
			break
		}
	}

	if err == nil && fs.Type == _HUGETLBFS_MAGIC {
		return int(fs.Bsize)
	}
	return 0
}

func composeMask(fs []int) uint64 {
	var mask uint64
	for _, f := range fs {
		mask |= (uint64(0x1) << f)
	}
	return mask
}

// readLoop reads kick eventfd notifications and processes virtqueue elements.
//
// Locking follows the virtiofsd model (fuse_virtio.c):
//   - dispatchMu read lock is held only while draining the avail ring
//     (popQueue calls).  This blocks concurrent control-plane messages
//     (ADD_MEM_REG, SET_VRING_*, etc.) which take the write lock.
//   - The lock is released before spawning request goroutines, so
//     control-plane messages can be processed concurrently with in-flight
//     FUSE requests.  That is safe because ADD_MEM_REG only adds regions
//     and never invalidates pointers already held by a request.
func (vq *Virtq) readLoop(ctl *readerControl, kick *os.File, handle func(data *VirtqElem) int) {
	defer close(ctl.done)
	if kick == nil {
		vq.dev.logf("vhost-user: vring enabled without a kick eventfd")
		return
	}
	for {
		select {
		case <-ctl.cancel:
			return
		default:
		}

		var id [8]byte
		if _, err := kick.Read(id[:]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // stop() woke us: cancel is closed
			}
			vq.dev.logf("vhost-user: kick eventfd read: %v", err)
			return
		}

		// Process the batch without holding any lock.
		for _, data := range vq.popBatch() {
			vq.handlers.Add(1)
			go func() {
				defer vq.handlers.Done()
				// The reply buffers are not cleared (go-fuse's copy
				// did): the guest reads only the length we report,
				// and the bytes beyond are its own memory. A 1 MiB
				// READ would otherwise write its buffer twice.

				if *vq.Debug {
					for i, e := range data.Read {
						vq.dev.logf("read %d: %q (%d)", i, e, len(e))
					}
					outlens := []int{}
					for _, e := range data.Write {
						outlens = append(outlens, len(e))
					}
					vq.dev.logf("id %d: write space: %v", data.index, outlens)
				}
				var n int
				if handle != nil {
					n = handle(data)
				}

				if *vq.Debug {
					for i, e := range data.Write {
						vq.dev.logf("write %d: %q (%d)", i, e, len(e))
					}
				}
				vq.pushQueue(data, n)
				vq.queueNotify()
			}()
		}
	}
}
