package roview

import (
	"hash/fnv"
	"syscall"
)

// Inode numbers. Bit 63 is left to go-fuse's automatic numbers (the
// read-write VM mount that embeds History may use them). Bit 62 marks
// synthesized nodes (snapshot lists, generated files). Backing nodes are
// st_ino XOR a per-snapshot salt in bits 40-61, so within one snapshot the
// mapping is one-to-one and stable across remounts, and the same backing
// inode seen through two snapshots is two inodes here.
const (
	synthBit = uint64(1) << 62
	lowMask  = synthBit - 1
)

func fnv64(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// snapshotSalt is never 0, so a backing node never gets its raw st_ino
// (which the read-write mount may use for the live file of a hard link).
func snapshotSalt(snapshot string) uint64 {
	return ((fnv64("snapshot", snapshot) & (1<<22 - 1)) | 1) << 40
}

func backingIno(st *syscall.Stat_t, salt uint64) uint64 {
	ino := (st.Ino ^ salt) & lowMask
	if ino <= 1 { // 1 is the FUSE root
		ino |= 1 << 39
	}
	return ino
}

func synthIno(parts ...string) uint64 {
	return fnv64(parts...)&lowMask | synthBit
}
