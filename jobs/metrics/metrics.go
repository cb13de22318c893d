// Package metrics exports the operators' report (jobs/report) and the
// daemon's live counters as Prometheus metrics: on the daemon's /metrics
// (Handler) and as a node_exporter textfile (WriteTextfile). Every scrape
// builds the reports afresh from the catalogs, so a metric never says
// something `v2backup status` would not.
//
// Labels: server is the host whose backups a series is about (on a backup
// server, the pulled host), app/vm/type the application's inventory names,
// drive/uuid an off-site drive's label and filesystem UUID, vm/op a FUSE
// mount and opcode. A catalog that cannot be read is reported as
// v2backup_scrape_error 1 with the live counters still exported, never as a
// failed scrape.
package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/report"
)

// OpCount is what one VM mount answered for one FUSE opcode since it was
// mounted.
type OpCount struct {
	VM       string  // e.g. "web"
	Op       string  // FUSE opcode, e.g. "LOOKUP"
	Requests uint64  // requests answered
	Errors   uint64  // of which with an error status (fusefs.OpStats.Errors)
	Seconds  float64 // total time in the handlers
}

// InodeCount is how many file inodes one VM mount (or the remote view) has
// the kernel remember, and how many it asked the kernel to forget
// (fusefs.Mount.FileInodes, roview.RemoteView.FileInodes).
type InodeCount struct {
	VM     string
	Live   int64
	Pruned int64
}

// Live is what only the running daemon knows: its catalog queue and its
// FUSE mounts. Implementations must be safe for concurrent use.
type Live interface {
	// QueueDepth is the number of catalog events queued or in flight.
	QueueDepth() int
	// Dropped is the number of catalog events dropped since the start.
	Dropped() uint64
	// FUSEOps lists the request counters of every mounted VM.
	FUSEOps() []OpCount
	// FileInodes lists the file inodes of every mounted VM and the view.
	FileInodes() []InodeCount
}

// DefaultTimeout bounds the catalog reads of one scrape.
const DefaultTimeout = 30 * time.Second

var (
	appLabels   = []string{"server", "app", "vm", "type"}
	hostLabels  = []string{"server"}
	driveLabels = []string{"drive", "uuid"}
	fuseLabels  = []string{"vm", "op"}
	vmLabels    = []string{"vm"}
)

func desc(name, help string, labels []string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc("v2backup_"+name, help, append(append([]string(nil), labels...), extra...), nil)
}

var (
	scrapeError = desc("scrape_error", "1 if the reports could not be built (a catalog is unreadable; see the daemon's log), else 0.", nil)

	appLastSuccess = desc("app_last_success_timestamp_seconds", "End of the application's last successful backup (job run or complete snapshot), unix seconds; 0 if none.", appLabels)
	appAge         = desc("app_age_seconds", "Seconds since the application's last successful backup; absent if none.", appLabels)
	appFiles       = desc("app_files", "Files in the application's live tree in the catalog.", appLabels)
	appBytes       = desc("app_bytes", "Bytes in the application's live tree in the catalog.", appLabels)
	appState       = desc("app_state", "1 for the application's state (ok, stale, failed, never), 0 for the others.", appLabels, "state")
	appRunTime     = desc("app_last_run_timestamp_seconds", "End (start while running) of the latest backup job run, unix seconds.", appLabels)
	appRunStatus   = desc("app_last_run_status", "1 for the latest backup job run's status (ok, failed, partial, running), 0 for the others.", appLabels, "status")
	appRunOK       = desc("app_last_run_ok", "1 if the latest finished backup job run ended ok, else 0; absent while it runs.", appLabels)
	appRunDuration = desc("app_last_run_duration_seconds", "Duration of the latest finished backup job run.", appLabels)
	appRunFiles    = desc("app_last_run_files", "Files the latest backup job run reported.", appLabels)
	appRunBytes    = desc("app_last_run_bytes", "Bytes the latest backup job run reported.", appLabels)

	hostCatalog   = desc("host_catalog_up", "1 if the host's catalog was read, 0 if there is none yet (a backup server before the host's first pull).", hostLabels)
	snapCount     = desc("snapshots", "Complete local-tier snapshots of the host.", hostLabels)
	snapTime      = desc("snapshot_latest_timestamp_seconds", "Creation of the host's latest complete snapshot, unix seconds.", hostLabels)
	snapAge       = desc("snapshot_latest_age_seconds", "Seconds since the host's latest complete snapshot.", hostLabels)
	snapFiles     = desc("snapshot_latest_files", "Files in the host's latest complete snapshot.", hostLabels)
	snapBytes     = desc("snapshot_latest_bytes", "Bytes in the host's latest complete snapshot.", hostLabels)
	pullTime      = desc("pull_last_timestamp_seconds", "End of the latest pull of the host, unix seconds.", hostLabels)
	pullOK        = desc("pull_last_ok", "1 if the latest pull of the host ended ok, else 0.", hostLabels)
	pullResult    = desc("pull_last_result", "1 for the latest pull's result (ok, failed, partial), 0 for the others.", hostLabels, "result")
	pullSuccess   = desc("pull_last_success_timestamp_seconds", "End of the latest successful pull of the host among the recent ones, unix seconds; 0 if none.", hostLabels)
	pullFiles     = desc("pull_last_files", "Files the latest pull of the host transferred into the remote tier.", hostLabels)
	pullBytes     = desc("pull_last_bytes", "Bytes the latest pull of the host transferred into the remote tier.", hostLabels)
	pullDuration  = desc("pull_last_duration_seconds", "Duration of the latest pull of the host.", hostLabels)
	driveSeen     = desc("drive_last_seen_timestamp_seconds", "When the off-site drive was last connected, unix seconds.", driveLabels)
	driveCopy     = desc("drive_last_copy_timestamp_seconds", "When the newest copy on the off-site drive was made, unix seconds; 0 if none.", driveLabels)
	driveCopyAge  = desc("drive_last_copy_age_seconds", "Seconds since the newest copy on the off-site drive was made; absent if none.", driveLabels)
	driveVerified = desc("drive_last_copy_verified_timestamp_seconds", "When the newest copy on the off-site drive was last verified, unix seconds; 0 if never.", driveLabels)

	queueDepth   = desc("catalog_queue_depth", "Catalog events queued or in flight in the daemon.", nil)
	dropped      = desc("catalog_dropped_events_total", "Catalog events the daemon dropped because its queue was full (a rescan follows).", nil)
	fuseRequests = desc("fuse_requests_total", "FUSE requests answered, per VM mount and opcode.", fuseLabels)
	fuseErrors   = desc("fuse_errors_total", "FUSE replies with an error status, per VM mount and opcode (not ENOENT to LOOKUP nor ENODATA to GETXATTR).", fuseLabels)
	fuseSeconds  = desc("fuse_request_seconds_total", "Time the daemon spent answering FUSE requests, per VM mount and opcode.", fuseLabels)
)

var reportDescs = []*prometheus.Desc{scrapeError,
	appLastSuccess, appAge, appFiles, appBytes, appState, appRunTime, appRunStatus, appRunOK, appRunDuration, appRunFiles, appRunBytes,
	hostCatalog, snapCount, snapTime, snapAge, snapFiles, snapBytes,
	pullTime, pullOK, pullResult, pullSuccess, pullFiles, pullBytes, pullDuration,
	driveSeen, driveCopy, driveCopyAge, driveVerified}

var (
	fuseInodes = desc("fuse_file_inodes", "File inodes the kernel remembers through the VM mount or the remote view (the daemon keeps one for each; capped per mount).", vmLabels)
	fusePruned = desc("fuse_pruned_inodes_total", "File inodes the VM mount or the remote view asked the kernel to forget to stay under its cap.", vmLabels)
)

var liveDescs = []*prometheus.Desc{queueDepth, dropped, fuseRequests, fuseErrors, fuseSeconds, fuseInodes, fusePruned}

// Collector is a prometheus.Collector that builds the reports of Source on
// every collection and exports them, plus Live's counters when Live is set.
type Collector struct {
	src  report.Source
	live Live
	// Timeout bounds one collection's catalog reads; 0 means DefaultTimeout.
	Timeout time.Duration
	// Logger receives the source's errors; nil means slog.Default().
	Logger *slog.Logger
}

// NewCollector returns a Collector of src's reports and, if live is not
// nil, the daemon's live counters.
func NewCollector(src report.Source, live Live) *Collector {
	return &Collector{src: src, live: live}
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range reportDescs {
		ch <- d
	}
	if c.live != nil {
		for _, d := range liveDescs {
			ch <- d
		}
	}
}

// Collect builds the reports and sends their metrics; a source error is
// logged and exported as v2backup_scrape_error 1.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.collect(ctx, ch); err != nil {
		lg := c.Logger
		if lg == nil {
			lg = slog.Default()
		}
		lg.Error("metrics: building the reports", "err", err)
	}
}

// collect is Collect with a context; it returns the source's error.
func (c *Collector) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	if c.live != nil {
		collectLive(ch, c.live)
	}
	reps, err := c.src(ctx)
	if err != nil {
		ch <- gauge(scrapeError, 1)
		return err
	}
	ch <- gauge(scrapeError, 0)
	drives := map[int64]bool{}
	servers := map[string]bool{}
	for _, r := range reps {
		if servers[r.Server] {
			continue // a duplicate would fail the whole scrape
		}
		servers[r.Server] = true
		collectReport(ch, r)
		// Every report carries the same drives (the machine's own
		// catalog): export each once.
		for _, d := range r.Drives {
			if !drives[d.ID] {
				drives[d.ID] = true
				collectDrive(ch, d, r.Generated)
			}
		}
	}
	return nil
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

// unix is t in unix seconds, 0 for the zero time.
func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	states      = []report.State{report.OK, report.Stale, report.Failed, report.Never}
	runStatuses = []catalog.RunStatus{catalog.RunOK, catalog.RunFailed, catalog.RunPartial, catalog.RunRunning}
	pullResults = []catalog.RunStatus{catalog.RunOK, catalog.RunFailed, catalog.RunPartial}
)

func collectReport(ch chan<- prometheus.Metric, r *report.Report) {
	host := []string{r.Server}
	ch <- gauge(hostCatalog, boolf(r.Missing == ""), host...)
	for _, a := range r.Apps {
		l := []string{a.Server, a.Name, a.VM, a.Type}
		ch <- gauge(appLastSuccess, unix(a.LastSuccess), l...)
		if !a.LastSuccess.IsZero() {
			ch <- gauge(appAge, a.Age.Seconds(), l...)
		}
		ch <- gauge(appFiles, float64(a.Files), l...)
		ch <- gauge(appBytes, float64(a.Bytes), l...)
		for _, s := range states {
			ch <- gauge(appState, boolf(a.State == s), append(l, string(s))...)
		}
		if run := a.LastRun; run != nil {
			at := run.End
			if at.IsZero() {
				at = run.Start
			}
			ch <- gauge(appRunTime, unix(at), l...)
			for _, s := range runStatuses {
				ch <- gauge(appRunStatus, boolf(run.Status == s), append(l, string(s))...)
			}
			if run.Status != catalog.RunRunning {
				ch <- gauge(appRunOK, boolf(run.Status == catalog.RunOK), l...)
				if !run.End.IsZero() {
					ch <- gauge(appRunDuration, run.End.Sub(run.Start).Seconds(), l...)
				}
			}
			ch <- gauge(appRunFiles, float64(run.Files), l...)
			ch <- gauge(appRunBytes, float64(run.Bytes), l...)
		}
	}
	if r.Missing == "" {
		s := r.Snapshots
		ch <- gauge(snapCount, float64(s.Count), host...)
		if s.Latest != "" {
			ch <- gauge(snapTime, unix(s.At), host...)
			ch <- gauge(snapAge, max(r.Generated.Sub(s.At), 0).Seconds(), host...)
			ch <- gauge(snapFiles, float64(s.Files), host...)
			ch <- gauge(snapBytes, float64(s.Bytes), host...)
		}
	}
	if len(r.Pulls) > 0 {
		p := r.Pulls[0] // newest first
		ch <- gauge(pullTime, unix(p.End), host...)
		ch <- gauge(pullOK, boolf(p.Result == catalog.RunOK), host...)
		for _, s := range pullResults {
			ch <- gauge(pullResult, boolf(p.Result == s), append(host, string(s))...)
		}
		var ok time.Time
		for _, q := range r.Pulls {
			if q.Result == catalog.RunOK {
				ok = q.End
				break
			}
		}
		ch <- gauge(pullSuccess, unix(ok), host...)
		ch <- gauge(pullFiles, float64(p.Files), host...)
		ch <- gauge(pullBytes, float64(p.Bytes), host...)
		ch <- gauge(pullDuration, p.End.Sub(p.Start).Seconds(), host...)
	}
}

func collectDrive(ch chan<- prometheus.Metric, d report.Drive, now time.Time) {
	l := []string{d.Label, d.FSUUID}
	ch <- gauge(driveSeen, unix(d.LastSeen), l...)
	if d.Copy == nil {
		ch <- gauge(driveCopy, 0, l...)
		ch <- gauge(driveVerified, 0, l...)
		return
	}
	ch <- gauge(driveCopy, unix(d.Copy.At), l...)
	ch <- gauge(driveCopyAge, max(now.Sub(d.Copy.At), 0).Seconds(), l...)
	ch <- gauge(driveVerified, unix(d.Copy.VerifiedAt), l...)
}

func collectLive(ch chan<- prometheus.Metric, live Live) {
	ch <- gauge(queueDepth, float64(live.QueueDepth()))
	ch <- counter(dropped, float64(live.Dropped()))
	for _, o := range live.FUSEOps() {
		ch <- counter(fuseRequests, float64(o.Requests), o.VM, o.Op)
		ch <- counter(fuseErrors, float64(o.Errors), o.VM, o.Op)
		ch <- counter(fuseSeconds, o.Seconds, o.VM, o.Op)
	}
	for _, c := range live.FileInodes() {
		ch <- gauge(fuseInodes, float64(c.Live), c.VM)
		ch <- counter(fusePruned, float64(c.Pruned), c.VM)
	}
}
