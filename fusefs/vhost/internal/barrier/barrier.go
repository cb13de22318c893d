// Copyright 2024 the Go-FUSE Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

// Package barrier provides the memory fences the vring protocol needs
// (copied from go-fuse's internal/barrier).
package barrier

// Write orders earlier stores before later stores.
func Write()

// Read orders earlier loads before later loads.
func Read()

// Full orders earlier loads and stores before later ones.
func Full()

// LoadUint16 loads *ptr with a single instruction.
func LoadUint16(ptr *uint16) uint16
