// Package retention decides which snapshots to keep: N nightly, W weekly
// and M monthly, the way restic's forget --keep-daily/--keep-weekly/
// --keep-monthly does. It is pure: it looks at times only, and the caller
// deletes.
package retention

import (
	"fmt"
	"sort"
	"time"
)

// Policy is how many snapshots to keep per tier. A negative count keeps
// every period's newest snapshot, without limit.
type Policy struct {
	Nightly int // newest snapshot of each of the last N days that have one
	Weekly  int // newest of each of the last W ISO weeks that have one
	Monthly int // newest of each of the last M calendar months that have one
}

// Decision is one snapshot's fate, with the rules that keep it.
type Decision struct {
	Time    time.Time
	Reasons []string // e.g. "nightly 1", "weekly 3", "newest"; none if pruned
}

// Select sorts snaps into those to keep and those to prune, each newest
// first.
//
// Periods are counted among those that have a snapshot, not back from now:
// a week without snapshots (the backup was broken) does not make older
// history expire. Days, weeks and months are those of each time's own
// location. The newest snapshot is always kept, even with an all-zero
// policy. Snapshots after now (a clock that went back) are kept and do not
// count towards any rule.
func Select(snaps []time.Time, keep Policy, now time.Time) (kept, pruned []Decision) {
	s := append([]time.Time(nil), snaps...)
	sort.Slice(s, func(i, j int) bool { return s[i].After(s[j]) })

	type rule struct {
		name  string
		left  int
		key   func(time.Time) string
		last  string
		count int
	}
	rules := []*rule{
		{name: "nightly", left: keep.Nightly, key: func(t time.Time) string { return t.Format("2006-01-02") }},
		{name: "weekly", left: keep.Weekly, key: func(t time.Time) string {
			y, w := t.ISOWeek()
			return fmt.Sprintf("%04d-W%02d", y, w)
		}},
		{name: "monthly", left: keep.Monthly, key: func(t time.Time) string { return t.Format("2006-01") }},
	}
	newest := true
	for _, t := range s {
		d := Decision{Time: t}
		if t.After(now) {
			d.Reasons = append(d.Reasons, "after now")
			kept = append(kept, d)
			continue
		}
		if newest {
			d.Reasons = append(d.Reasons, "newest")
			newest = false
		}
		for _, r := range rules {
			if r.left == 0 {
				continue
			}
			if k := r.key(t); k != r.last {
				r.last = k
				r.count++
				d.Reasons = append(d.Reasons, fmt.Sprintf("%s %d", r.name, r.count))
				if r.left > 0 {
					r.left--
				}
			}
		}
		if len(d.Reasons) > 0 {
			kept = append(kept, d)
		} else {
			pruned = append(pruned, d)
		}
	}
	return kept, pruned
}
