package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/renameio/v2"
)

// Targets from the issue (ratios of medians).
const (
	seqTargetToNative    = 1.10 // sequential write/read: within 1.1x of native
	smallTargetToBest    = 0.50 // small files: twice as fast as the best peer
	smallFloorToBest     = 1.00 // and never slower than it
	rssLimitKiB          = 150 * 1024
	catalogLagTargetSecs = 5.0
)

// report is the JSON document and the source of the printed table.
type report struct {
	Started    time.Time         `json:"started"`
	Seconds    float64           `json:"seconds"`
	Host       hostInfo          `json:"host"`
	Config     reportConfig      `json:"config"`
	Versions   map[string]string `json:"versions"`
	SourceTree treeStats         `json:"source_tree"`
	Workloads  []workloadReport  `json:"workloads"`
	Daemons    []daemonReport    `json:"daemons"`
	SmallFiles *rssResult        `json:"small_files_rss,omitempty"`
}

type hostInfo struct {
	CPUs   int   `json:"cpus"`
	MemKiB int64 `json:"mem_kib"`
}

type reportConfig struct {
	Rounds       int      `json:"rounds"`
	SeqMiB       int      `json:"seq_mib"`
	Src          string   `json:"src"`
	TreeFiles    int      `json:"tree_files"`
	RSSFiles     int      `json:"rss_files"`
	Contenders   []string `json:"contenders"`
	Workloads    []string `json:"workloads"`
	MergerfsOpts string   `json:"mergerfs_opts"`
	BindfsOpts   []string `json:"bindfs_opts"`
	Dir          string   `json:"dir"`
}

type workloadReport struct {
	Name      string            `json:"name"`
	Label     string            `json:"label"`
	SmallFile bool              `json:"small_file"`
	Results   []contenderResult `json:"results"`
	V2backup  *v2backupVerdict  `json:"v2backup,omitempty"`
	byName    map[string]*contenderResult
}

type contenderResult struct {
	Contender     string   `json:"contender"`
	Samples       []sample `json:"samples"`
	MedianSeconds float64  `json:"median_seconds"`
	RatioToNative float64  `json:"ratio_to_native"`
	// MedianSettleSeconds: daemon CPU activity after the command returned.
	MedianSettleSeconds float64 `json:"median_settle_seconds"`
	// MedianCatalogSeconds: until every file had a hash (rsync, v2backup).
	MedianCatalogSeconds float64 `json:"median_catalog_seconds,omitempty"`
}

// v2backupVerdict compares v2backup with the target for a workload.
type v2backupVerdict struct {
	RatioToNative   float64 `json:"ratio_to_native"`
	BestPeer        string  `json:"best_peer,omitempty"`
	BestPeerRatio   float64 `json:"best_peer_ratio_to_native,omitempty"`
	RatioToBestPeer float64 `json:"ratio_to_best_peer,omitempty"`
	Target          string  `json:"target"`
	TargetMet       bool    `json:"target_met"`
	FloorHeld       bool    `json:"floor_held"`
}

type daemonReport struct {
	Contender string `json:"contender"`
	ReadyLine string `json:"ready_line,omitempty"`
	// CatalogFiles and CatalogHashed: file rows below the workloads'
	// directory in the daemon's catalog after it exited (queue drained),
	// and how many of them have a hash.
	CatalogFiles  int   `json:"catalog_files,omitempty"`
	CatalogHashed int   `json:"catalog_hashed,omitempty"`
	PeakRSSKiB    int64 `json:"peak_rss_kib"` // VmHWM just before unmount
	RSSKiB        int64 `json:"rss_kib"`      // VmRSS just before unmount
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

func buildReport(res *results) *report {
	cfg := res.cfg
	rep := &report{
		Started:    res.started,
		Seconds:    res.elapsed.Seconds(),
		Host:       hostInfo{CPUs: runtime.NumCPU(), MemKiB: memTotalKiB()},
		Versions:   res.versions,
		SourceTree: res.src,
		SmallFiles: res.rss,
		Config: reportConfig{
			Rounds: cfg.rounds, SeqMiB: cfg.seqMiB, Src: cfg.src, TreeFiles: cfg.treeFiles, RSSFiles: cfg.rssFiles,
			Contenders: cfg.contenders, Workloads: cfg.workloads, MergerfsOpts: cfg.mergerfsOpts,
			BindfsOpts: cfg.bindfsOpts, Dir: cfg.dir,
		},
	}
	for _, w := range res.workloads {
		rep.Workloads = append(rep.Workloads, workloadVerdict(w.name, w.label, w.smallFile, cfg.contenders, res.samples[w.name]))
	}
	for _, c := range res.contenders {
		if c.isFUSE() {
			rep.Daemons = append(rep.Daemons, daemonReport{Contender: c.name, ReadyLine: c.readyLine, CatalogFiles: c.catalogRows, CatalogHashed: c.catalogHashed, PeakRSSKiB: c.peakRSSKiB, RSSKiB: c.lastRSSKiB})
		}
	}
	return rep
}

// workloadVerdict computes medians, ratios to native and, when v2backup
// ran, its verdict against the targets.
func workloadVerdict(name, label string, smallFile bool, contenders []string, samples map[string][]sample) workloadReport {
	wr := workloadReport{Name: name, Label: label, SmallFile: smallFile, byName: map[string]*contenderResult{}}
	for _, cn := range contenders {
		ss := samples[cn]
		var secs, settles, cats []float64
		for _, s := range ss {
			secs = append(secs, s.Seconds)
			settles = append(settles, s.SettleSeconds)
			if s.CatalogSeconds > 0 {
				cats = append(cats, s.CatalogSeconds)
			}
		}
		wr.Results = append(wr.Results, contenderResult{Contender: cn, Samples: ss, MedianSeconds: median(secs),
			MedianSettleSeconds: median(settles), MedianCatalogSeconds: median(cats)})
	}
	for i := range wr.Results {
		wr.byName[wr.Results[i].Contender] = &wr.Results[i]
	}
	native := wr.byName[nameNative].MedianSeconds
	for i := range wr.Results {
		wr.Results[i].RatioToNative = ratio(wr.Results[i].MedianSeconds, native)
	}
	v2, ok := wr.byName[nameV2backup]
	if !ok {
		return wr
	}
	v := &v2backupVerdict{RatioToNative: v2.RatioToNative}
	if !smallFile {
		v.Target = fmt.Sprintf("<= %.2fx native", seqTargetToNative)
		v.TargetMet = v.RatioToNative <= seqTargetToNative
		v.FloorHeld = v.TargetMet
	} else {
		for _, p := range peers {
			if r, ok := wr.byName[p]; ok && (v.BestPeer == "" || r.MedianSeconds < wr.byName[v.BestPeer].MedianSeconds) {
				v.BestPeer = p
			}
		}
		if v.BestPeer == "" {
			v.Target = "no peer ran"
		} else {
			best := wr.byName[v.BestPeer]
			v.BestPeerRatio = best.RatioToNative
			v.RatioToBestPeer = ratio(v2.MedianSeconds, best.MedianSeconds)
			v.Target = fmt.Sprintf("<= %.2fx best peer, floor <= %.2fx", smallTargetToBest, smallFloorToBest)
			v.TargetMet = v.RatioToBestPeer <= smallTargetToBest
			v.FloorHeld = v.RatioToBestPeer <= smallFloorToBest
		}
	}
	wr.V2backup = v
	return wr
}

func (rep *report) print(out io.Writer) {
	fmt.Fprintf(out, "\nv2backup FUSE benchmark: %d round(s), medians in seconds, (ratio to native)\n", rep.Config.Rounds)
	fmt.Fprintf(out, "source tree: %s; mergerfs -o %s\n\n", rep.SourceTree, rep.Config.MergerfsOpts)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "workload\t")
	for _, c := range rep.Config.Contenders {
		fmt.Fprintf(tw, "%s\t", c)
	}
	fmt.Fprintln(tw)
	for _, w := range rep.Workloads {
		fmt.Fprintf(tw, "%s\t", w.Label)
		for _, r := range w.Results {
			if r.Contender == nameNative {
				fmt.Fprintf(tw, "%.3f\t", r.MedianSeconds)
			} else {
				fmt.Fprintf(tw, "%.3f (%.2fx)\t", r.MedianSeconds, r.RatioToNative)
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()

	var verdicts []string
	for _, w := range rep.Workloads {
		v := w.V2backup
		if v == nil {
			continue
		}
		var line string
		switch {
		case !w.SmallFile:
			line = fmt.Sprintf("%-28s %.2fx native (target %s): %s", w.Label, v.RatioToNative, v.Target, metWord(v.TargetMet))
		case v.BestPeer == "":
			line = fmt.Sprintf("%-28s %.2fx native (no peer ran)", w.Label, v.RatioToNative)
		default:
			floor := "floor held"
			if !v.FloorHeld {
				floor = "FLOOR BROKEN (slower than the best peer)"
			}
			line = fmt.Sprintf("%-28s %.2fx native, %.2fx best peer (%s, %.2fx native) (target %s): %s, %s",
				w.Label, v.RatioToNative, v.RatioToBestPeer, v.BestPeer, v.BestPeerRatio, v.Target, metWord(v.TargetMet), floor)
		}
		verdicts = append(verdicts, line)
	}
	if len(verdicts) > 0 {
		fmt.Fprintln(out, "\nv2backup against the issue's targets:")
		for _, l := range verdicts {
			fmt.Fprintln(out, "  "+l)
		}
	}
	for _, w := range rep.Workloads {
		if r, ok := w.byName[nameV2backup]; ok && (w.Name == wlRsync || w.Name == wlCp) {
			fmt.Fprintf(out, "  v2backup busy after %s returned (median daemon CPU activity): %.2f s\n",
				w.Name, r.MedianSettleSeconds)
			if r.MedianCatalogSeconds > 0 {
				fmt.Fprintf(out, "  v2backup catalog: every file of %s hashed %.2f s after it returned (median; target %.0f s: %s)\n",
					w.Name, r.MedianCatalogSeconds, catalogLagTargetSecs, metWord(r.MedianCatalogSeconds <= catalogLagTargetSecs))
			}
		}
	}
	for _, d := range rep.Daemons {
		if d.ReadyLine != "" {
			fmt.Fprintf(out, "  %s said: %q\n", d.Contender, d.ReadyLine)
		}
		if d.CatalogFiles > 0 {
			fmt.Fprintf(out, "  %s's catalog after its exit: %d files, %d hashed\n", d.Contender, d.CatalogFiles, d.CatalogHashed)
		}
	}
	if len(rep.Daemons) > 0 {
		fmt.Fprint(out, "\ndaemon peak RSS (VmHWM at unmount):")
		for _, d := range rep.Daemons {
			fmt.Fprintf(out, " %s %.1f MiB;", d.Contender, float64(d.PeakRSSKiB)/1024)
		}
		fmt.Fprintln(out)
	}
	if s := rep.SmallFiles; s != nil {
		fmt.Fprintf(out, "small files: %d written through one v2backup mount in %.1f s (%.0f files/s), daemon busy %.1f s more;\n",
			s.Files, s.Seconds, float64(s.Files)/s.Seconds, s.SettleSeconds)
		fmt.Fprintf(out, "  RSS before %.1f MiB, after %.1f MiB (limit %d MiB: %s), peak %.1f MiB\n",
			float64(s.RSSBeforeKiB)/1024, float64(s.RSSAfterKiB)/1024, rssLimitKiB/1024, metWord(s.RSSAfterKiB < rssLimitKiB), float64(s.PeakRSSKiB)/1024)
	}
	fmt.Fprintf(out, "\nrun took %s\n", time.Duration(rep.Seconds*float64(time.Second)).Round(time.Second))
}

func metWord(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// writeJSON writes the report atomically: a reader never sees half a file.
func (rep *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("-json %s: %w", path, err)
	}
	return nil
}

func memTotalKiB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kib int64
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kib); err == nil {
			return kib
		}
	}
	return 0
}
