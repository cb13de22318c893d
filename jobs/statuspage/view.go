package statuspage

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/report"
)

// The page's view model: everything formatted here, so the template only
// places (and escapes) strings.

const timeLayout = "2006-01-02 15:04 MST"

// maxPulls is how many of a host's pulls the page lists.
const maxPulls = 10

// Trend chart geometry, in SVG user units (= CSS pixels).
const (
	chartW, chartH = 160, 32
	chartPad       = 3
)

type page struct {
	Title     string
	Generated string
	Summary   string
	Hosts     []host
}

type host struct {
	Server    string
	ID        string
	Missing   string
	Apps      []app
	Counts    string
	Snapshots snaps
	Pulls     []pull
	MorePulls int
	Drives    []drive
}

type app struct {
	Name, Description, Server, VM, Path, Relpath, Type string
	State                                              string
	LastSuccess, Age                                   string
	Files, Size                                        string
	Trend                                              chart
	Run                                                string // last run's result word, "" if none
	RunClass                                           string
	RunAt                                              string
	Error                                              string
}

type snaps struct {
	Count           int
	Latest, At, Age string
	Files, Size     string
	Stale           bool
}

type pull struct {
	BackupServer, Snapshot string
	Start, Took            string
	Result, Class          string
	Files, Size, Error     string
}

type drive struct {
	Label, UUID   string
	LastSeen, Age string
	Copy          string // "server tier/snapshot", "" if none
	CopyAt        string
	Verified      string // date, "" if never
	VerifiedClass string
}

// chart is an inline SVG sparkline of an application's bytes per night.
type chart struct {
	W, H    int
	Points  string // polyline points, "" when there is nothing to draw
	Dots    []dot  // one per night; carried nights are marked
	Label   string // what the chart says, for screen readers and tooltips
	Nights  int
	Carried int
}

type dot struct {
	X, Y    string
	Carried bool
	Title   string
}

func newPage(reps []*report.Report) page {
	p := page{Title: "v2backup status"}
	var gen time.Time
	total := map[report.State]int{}
	var servers []string
	for _, r := range reps {
		if r == nil {
			continue
		}
		if r.Generated.After(gen) {
			gen = r.Generated
		}
		h := newHost(r)
		for _, a := range r.Apps {
			total[a.State]++
		}
		servers = append(servers, r.Server)
		p.Hosts = append(p.Hosts, h)
	}
	if gen.IsZero() {
		gen = time.Now()
	}
	p.Generated = gen.Format(timeLayout)
	p.Summary = counts(total)
	if len(servers) > 0 {
		p.Title = "v2backup status: " + strings.Join(servers, ", ")
	}
	if n := total[report.Failed] + total[report.Stale] + total[report.Never]; n > 0 {
		// A problem shows in the browser tab too.
		p.Title = fmt.Sprintf("(%d not ok) %s", n, p.Title)
	}
	return p
}

func counts(c map[report.State]int) string {
	var parts []string
	for _, s := range []report.State{report.OK, report.Stale, report.Failed, report.Never} {
		if c[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c[s], s))
		}
	}
	if len(parts) == 0 {
		return "no applications"
	}
	return strings.Join(parts, ", ")
}

func newHost(r *report.Report) host {
	now := r.Generated
	h := host{Server: r.Server, ID: "host-" + r.Server, Missing: r.Missing}
	c := map[report.State]int{}
	for _, a := range r.Apps {
		c[a.State]++
		h.Apps = append(h.Apps, newApp(a))
	}
	h.Counts = counts(c)
	s := r.Snapshots
	h.Snapshots = snaps{Count: s.Count, Latest: s.Latest, Files: strconv.FormatInt(s.Files, 10), Size: report.HumanBytes(s.Bytes)}
	if !s.At.IsZero() {
		h.Snapshots.At, h.Snapshots.Age = s.At.Format(timeLayout), report.RoundAge(now.Sub(s.At))
		h.Snapshots.Stale = now.Sub(s.At) > report.DefaultWarnAge
	}
	for i, p := range r.Pulls {
		if i == maxPulls {
			h.MorePulls = len(r.Pulls) - maxPulls
			break
		}
		v := pull{BackupServer: p.BackupServer, Snapshot: p.Snapshot, Start: p.Start.Format(timeLayout),
			Result: string(p.Result), Class: runClass(p.Result), Files: strconv.FormatInt(p.Files, 10),
			Size: report.HumanBytes(p.Bytes), Error: p.Error}
		if !p.End.IsZero() {
			v.Took = p.End.Sub(p.Start).Round(time.Second).String()
		}
		h.Pulls = append(h.Pulls, v)
	}
	for _, d := range r.Drives {
		v := drive{Label: d.Label, UUID: d.FSUUID}
		if !d.LastSeen.IsZero() {
			v.LastSeen, v.Age = d.LastSeen.Format(timeLayout), report.RoundAge(now.Sub(d.LastSeen))
		}
		v.VerifiedClass = "stale"
		if d.Copy != nil {
			v.Copy = fmt.Sprintf("%s %s/%s", d.Copy.Server, d.Copy.Tier, d.Copy.Snapshot)
			v.CopyAt = d.Copy.At.Format(timeLayout)
			if !d.Copy.VerifiedAt.IsZero() {
				v.Verified, v.VerifiedClass = d.Copy.VerifiedAt.Format(timeLayout), "ok"
			}
		}
		h.Drives = append(h.Drives, v)
	}
	return h
}

func newApp(a report.App) app {
	v := app{Name: a.Name, Description: a.Description, Server: a.Server, VM: a.VM, Path: a.Path, Relpath: a.Relpath, Type: a.Type,
		State: string(a.State), Files: strconv.FormatInt(a.Files, 10), Size: report.HumanBytes(a.Bytes),
		Trend: newChart(a.Trend), Error: a.Error}
	if v.Description == "" {
		v.Description = a.Name
	}
	if !a.LastSuccess.IsZero() {
		v.LastSuccess, v.Age = a.LastSuccess.Format(timeLayout), report.RoundAge(a.Age)
	}
	if r := a.LastRun; r != nil {
		v.Run, v.RunClass, v.RunAt = string(r.Status), runClass(r.Status), r.Start.Format(timeLayout)
		if a.State != report.Failed && r.Status != catalog.RunOK && r.Status != catalog.RunRunning {
			// A failed or partial run older than the last success still
			// deserves its message next to its word.
			v.Error = r.Error
		}
	}
	return v
}

// runClass maps a run or pull result to the page's state colours.
func runClass(s catalog.RunStatus) string {
	switch s {
	case catalog.RunOK:
		return "ok"
	case catalog.RunFailed:
		return "failed"
	case catalog.RunPartial:
		return "stale"
	}
	return "never"
}

// newChart scales the nights' bytes into the chart box: oldest left,
// largest at the top; equal values draw a flat line in the middle.
func newChart(nights []report.Night) chart {
	c := chart{W: chartW, H: chartH, Nights: len(nights)}
	if len(nights) == 0 {
		c.Label = "no snapshots yet"
		return c
	}
	lo, hi := nights[0].Bytes, nights[0].Bytes
	for _, n := range nights {
		lo, hi = min(lo, n.Bytes), max(hi, n.Bytes)
	}
	innerW, innerH := float64(chartW-2*chartPad), float64(chartH-2*chartPad)
	var pts []string
	for i, n := range nights {
		x := float64(chartW) / 2
		if len(nights) > 1 {
			x = chartPad + innerW*float64(i)/float64(len(nights)-1)
		}
		y := float64(chartH) / 2
		if hi == 0 { // nothing at all: on the floor, not mid-air
			y = chartH - chartPad
		} else if hi > lo {
			y = chartPad + innerH*(1-float64(n.Bytes-lo)/float64(hi-lo))
		}
		xs, ys := coord(x), coord(y)
		pts = append(pts, xs+","+ys)
		carried := n.State == catalog.AppCarried
		if carried {
			c.Carried++
		}
		title := fmt.Sprintf("%s: %s, %d files", n.Snapshot, report.HumanBytes(n.Bytes), n.Files)
		if carried {
			title += " (carried: the night's backup was not complete)"
		}
		c.Dots = append(c.Dots, dot{X: xs, Y: ys, Carried: carried, Title: title})
	}
	c.Points = strings.Join(pts, " ")
	c.Label = fmt.Sprintf("size over %d nights: %s to %s", len(nights), report.HumanBytes(lo), report.HumanBytes(hi))
	if c.Carried > 0 {
		c.Label += fmt.Sprintf(", %d carried", c.Carried)
	}
	return c
}

func coord(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }
