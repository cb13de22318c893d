package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := slices.Clone(tc.in)
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("median reordered its input: %v", tc.in)
		}
	}
	if ratio(1, 0) != 0 || ratio(3, 2) != 1.5 {
		t.Error("ratio")
	}
}

func TestRotate(t *testing.T) {
	l := []string{"a", "b", "c"}
	for n, want := range [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}} {
		if got := rotate(l, n); !slices.Equal(got, want) {
			t.Errorf("rotate(%v, %d) = %v, want %v", l, n, got, want)
		}
	}
	if rotate([]string(nil), 2) != nil {
		t.Error("rotate(nil)")
	}
	if !slices.Equal(l, []string{"a", "b", "c"}) {
		t.Errorf("rotate changed its input: %v", l)
	}
}

func secs(xs ...float64) []sample {
	var out []sample
	for i, x := range xs {
		out = append(out, sample{Round: i + 1, Seconds: x})
	}
	return out
}

func TestWorkloadVerdictSmallFile(t *testing.T) {
	all := []string{nameNative, nameV2backup, nameBindfs, nameMergerfs, nameLoopback}
	samples := map[string][]sample{
		nameNative:   secs(1, 1.2, 0.8),
		nameV2backup: secs(4, 4, 5),
		nameBindfs:   secs(10, 11, 9),
		nameMergerfs: secs(9, 9, 9),
		nameLoopback: secs(8, 100, 8.5),
	}
	wr := workloadVerdict(wlRsync, "rsync", true, all, samples)
	v := wr.V2backup
	if v == nil || v.BestPeer != nameLoopback || v.BestPeerRatio != 8.5 || v.RatioToBestPeer != 4.0/8.5 {
		t.Fatalf("verdict %+v", v)
	}
	if !v.TargetMet || !v.FloorHeld || v.RatioToNative != 4 {
		t.Errorf("verdict %+v", v)
	}
	// Slower than twice as fast, faster than the best peer: floor only.
	samples[nameV2backup] = secs(6, 6, 6)
	v = workloadVerdict(wlRsync, "rsync", true, all, samples).V2backup
	if v.TargetMet || !v.FloorHeld {
		t.Errorf("verdict %+v", v)
	}
	samples[nameV2backup] = secs(9, 9, 9)
	v = workloadVerdict(wlRsync, "rsync", true, all, samples).V2backup
	if v.TargetMet || v.FloorHeld {
		t.Errorf("slower than the best peer: %+v", v)
	}
	// No peer: no comparison, but no crash.
	v = workloadVerdict(wlRsync, "rsync", true, []string{nameNative, nameV2backup}, samples).V2backup
	if v.BestPeer != "" || v.Target != "no peer ran" {
		t.Errorf("no peers: %+v", v)
	}
	// No v2backup: no verdict.
	if workloadVerdict(wlRsync, "rsync", true, []string{nameNative, nameBindfs}, samples).V2backup != nil {
		t.Error("verdict without v2backup")
	}
}

func TestWorkloadVerdictSequential(t *testing.T) {
	samples := map[string][]sample{nameNative: secs(10), nameV2backup: secs(10.5), nameBindfs: secs(1)}
	v := workloadVerdict(wlSeqWrite, "w", false, []string{nameNative, nameV2backup, nameBindfs}, samples).V2backup
	if !v.TargetMet || v.BestPeer != "" || v.RatioToNative != 1.05 {
		t.Errorf("1.05x native: %+v", v)
	}
	samples[nameV2backup] = secs(11.5)
	if v := workloadVerdict(wlSeqWrite, "w", false, []string{nameNative, nameV2backup}, samples).V2backup; v.TargetMet {
		t.Errorf("1.15x native met the 1.1x target: %+v", v)
	}
}

func testResults() *results {
	cfg, _ := parseFlags([]string{"-contenders", "native,v2backup,loopback", "-workloads", "seqwrite,rsync"}, os.Stderr)
	res := &results{
		cfg:       cfg,
		src:       treeStats{Files: 10, Dirs: 2, Bytes: 100},
		workloads: []*workload{{name: wlSeqWrite, label: "seq write"}, {name: wlRsync, label: "rsync -a", smallFile: true}},
		contenders: []*contender{{name: nameNative}, {name: nameV2backup, argv: []string{"x"}, peakRSSKiB: 2048, readyLine: "ready passthrough=true"},
			{name: nameLoopback, argv: []string{"y"}, peakRSSKiB: 1024}},
		samples: map[string]map[string][]sample{
			wlSeqWrite: {nameNative: secs(2), nameV2backup: secs(2.1), nameLoopback: secs(2.4)},
			wlRsync:    {nameNative: secs(1), nameV2backup: secs(3), nameLoopback: secs(8)},
		},
		rss:      &rssResult{Files: 1000, Seconds: 2, RSSAfterKiB: 40 * 1024, PeakRSSKiB: 41 * 1024},
		versions: map[string]string{"kernel": "test"},
		started:  time.Unix(0, 0),
		elapsed:  time.Minute,
	}
	return res
}

func TestReportPrint(t *testing.T) {
	var out strings.Builder
	buildReport(testResults()).print(&out)
	for _, want := range []string{
		"seq write", "2.100 (1.05x)", "3.000 (3.00x)", "8.000 (8.00x)",
		"0.38x best peer (loopback, 8.00x native)", "met, floor held",
		`v2backup said: "ready passthrough=true"`,
		"v2backup 2.0 MiB; loopback 1.0 MiB;",
		"1000 written through one v2backup mount", "after 40.0 MiB (limit 150 MiB: met)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestReportJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	rep := buildReport(testResults())
	if err := rep.writeJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Workloads) != 2 || back.Workloads[1].V2backup.BestPeer != nameLoopback || back.SmallFiles.Files != 1000 ||
		back.Config.Rounds != 3 || back.Daemons[0].PeakRSSKiB != 2048 || back.Workloads[1].Results[2].RatioToNative != 8 {
		t.Errorf("JSON round trip: %s", b)
	}
	err = rep.writeJSON(filepath.Join(t.TempDir(), "missing", "r.json"))
	if err == nil || !strings.Contains(err.Error(), "-json ") {
		t.Errorf("JSON into a missing directory: %v", err)
	}
}

func TestMemTotal(t *testing.T) {
	if memTotalKiB() <= 0 {
		t.Error("memTotalKiB")
	}
}
