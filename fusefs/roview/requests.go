package roview

import "github.com/softxs/v2backup/fusefs/internal/opstats"

// RequestCount is how many requests of one FUSE opcode a mount answered,
// the time its handlers took (not the kernel's round trip), and those
// answered with an error. The same counters as the VM mounts'
// (fusefs.OpStats): a clock read and a few atomic adds per request, cheap
// enough to be always on.
type RequestCount = opstats.Stats
