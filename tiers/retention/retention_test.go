package retention

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.ParseInLocation("2006-01-02T15:04", s, time.UTC)
	if err != nil {
		panic(err)
	}
	return t
}

func fmtTimes(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Time.Format("2006-01-02T15:04"))
	}
	return out
}

// nightly returns one snapshot at 05:00 on each of n days ending at last.
func nightly(last string, n int) []time.Time {
	end := at(last)
	var out []time.Time
	for i := range n {
		out = append(out, end.AddDate(0, 0, -i))
	}
	return out
}

func TestSelect(t *testing.T) {
	now := at("2026-11-28T06:00")
	for _, c := range []struct {
		name   string
		snaps  []time.Time
		policy Policy
		keep   []string
	}{
		{
			name:   "nightly only",
			snaps:  nightly("2026-11-28T05:00", 10),
			policy: Policy{Nightly: 3},
			keep:   []string{"2026-11-28T05:00", "2026-11-27T05:00", "2026-11-26T05:00"},
		},
		{
			// 2026-11-28 is a Saturday: ISO week 48 runs 23-29 November.
			name:   "nightly and weekly",
			snaps:  nightly("2026-11-28T05:00", 21),
			policy: Policy{Nightly: 2, Weekly: 3},
			keep:   []string{"2026-11-28T05:00", "2026-11-27T05:00", "2026-11-22T05:00", "2026-11-15T05:00"},
		},
		{
			name:   "monthly spans years",
			snaps:  []time.Time{at("2026-02-01T05:00"), at("2026-01-31T05:00"), at("2026-01-15T05:00"), at("2025-12-31T05:00"), at("2025-12-01T05:00"), at("2025-11-30T05:00")},
			policy: Policy{Monthly: 3},
			keep:   []string{"2026-02-01T05:00", "2026-01-31T05:00", "2025-12-31T05:00"},
		},
		{
			name:   "newest of the day wins",
			snaps:  []time.Time{at("2026-11-28T01:00"), at("2026-11-28T05:00"), at("2026-11-27T23:00"), at("2026-11-27T05:00")},
			policy: Policy{Nightly: 2},
			keep:   []string{"2026-11-28T05:00", "2026-11-27T23:00"},
		},
		{
			name:   "a gap does not expire history",
			snaps:  []time.Time{at("2026-11-01T05:00"), at("2026-10-31T05:00"), at("2026-10-30T05:00")},
			policy: Policy{Nightly: 2},
			keep:   []string{"2026-11-01T05:00", "2026-10-31T05:00"},
		},
		{
			name:   "all zero keeps the newest",
			snaps:  nightly("2026-11-28T05:00", 3),
			policy: Policy{},
			keep:   []string{"2026-11-28T05:00"},
		},
		{
			name:   "negative is unlimited",
			snaps:  nightly("2026-11-28T05:00", 4),
			policy: Policy{Nightly: -1},
			keep:   []string{"2026-11-28T05:00", "2026-11-27T05:00", "2026-11-26T05:00", "2026-11-25T05:00"},
		},
		{
			name:   "future snapshots are kept and not counted",
			snaps:  []time.Time{at("2026-12-05T05:00"), at("2026-11-28T05:00"), at("2026-11-27T05:00")},
			policy: Policy{Nightly: 1},
			keep:   []string{"2026-12-05T05:00", "2026-11-28T05:00"},
		},
		{name: "none", snaps: nil, policy: Policy{Nightly: 7}, keep: nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Input order must not matter.
			in := append([]time.Time(nil), c.snaps...)
			for i, j := 0, len(in)-1; i < j; i, j = i+1, j-1 {
				in[i], in[j] = in[j], in[i]
			}
			kept, pruned := Select(in, c.policy, now)
			if got := fmtTimes(kept); !reflect.DeepEqual(got, c.keep) {
				t.Errorf("kept %v, want %v", got, c.keep)
			}
			if len(kept)+len(pruned) != len(c.snaps) {
				t.Errorf("%d kept + %d pruned of %d", len(kept), len(pruned), len(c.snaps))
			}
			for _, d := range kept {
				if len(d.Reasons) == 0 {
					t.Errorf("%v kept without a reason", d.Time)
				}
			}
			for i, d := range pruned {
				if len(d.Reasons) != 0 || (i > 0 && d.Time.After(pruned[i-1].Time)) {
					t.Errorf("pruned %+v out of order or with reasons", d)
				}
			}
		})
	}
}

func TestSelectReasons(t *testing.T) {
	kept, _ := Select(nightly("2026-11-28T05:00", 40), Policy{Nightly: 1, Weekly: 1, Monthly: 2}, at("2026-11-28T06:00"))
	got := map[string]string{}
	for _, d := range kept {
		got[d.Time.Format("01-02")] = strings.Join(d.Reasons, ",")
	}
	want := map[string]string{
		"11-28": "newest,nightly 1,weekly 1,monthly 1",
		"10-31": "monthly 2",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reasons %v, want %v", got, want)
	}
}
