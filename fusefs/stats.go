package fusefs

import "github.com/softxs/v2backup/fusefs/internal/opstats"

// OpStats is what one kind of FUSE request cost the daemon: its opcode
// name, the requests answered, the time in their handlers, and the errors
// (not counting ENOENT to LOOKUP nor ENODATA to GETXATTR, which a healthy
// filesystem gives all the time).
type OpStats = opstats.Stats

// Stats returns per-opcode request counts, errors and handler time since
// the mount, sorted by opcode; nil unless Config.Stats was set.
func (m *Mount) Stats() []OpStats {
	if m.stats == nil {
		return nil
	}
	return m.stats.Snapshot()
}
