package metrics

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/softxs/v2backup/jobs/report"
)

// Handler serves /metrics: src's reports and, if live is not nil, the
// daemon's live counters, plus the Go runtime's and the process's standard
// metrics, from a private registry (never the global one).
func Handler(src report.Source, live Live) http.Handler {
	return NewCollector(src, live).Handler()
}

// Handler serves /metrics from c, plus the Go runtime's and the process's
// standard metrics, from a private registry.
func (c *Collector) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// ContinueOnError: one bad series must not hide the others.
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// TextfileName is the file WriteTextfile writes in its directory;
// node_exporter's textfile collector reads every *.prom there.
const TextfileName = "v2backup.prom"

// WriteText writes src's metrics (not the live daemon's) to w in the text
// exposition format. If src fails, it still writes v2backup_scrape_error 1
// and then returns the source's error.
func WriteText(ctx context.Context, w io.Writer, src report.Source) error {
	c := NewCollector(src, nil)
	var srcErr error
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(collectorFunc{c.Describe, func(ch chan<- prometheus.Metric) { srcErr = c.collect(ctx, ch) }}); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		return fmt.Errorf("metrics: gathering: %w", err)
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
			return fmt.Errorf("metrics: writing %s: %w", mf.GetName(), err)
		}
	}
	return srcErr
}

// WriteTextfile writes src's metrics (not the live daemon's) to
// dir/TextfileName atomically, for node_exporter's textfile collector. If
// src fails, the file is still written, with v2backup_scrape_error 1 (so a
// stale file does not go on looking healthy), and the error is returned.
func WriteTextfile(ctx context.Context, dir string, src report.Source) error {
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("metrics: textfile directory: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("metrics: textfile directory %s: not a directory", dir)
	}
	var b bytes.Buffer
	srcErr := WriteText(ctx, &b, src)
	if srcErr != nil && b.Len() == 0 {
		return srcErr
	}
	path := filepath.Join(dir, TextfileName)
	// 0644: node_exporter usually runs as its own user.
	if err := renameio.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("metrics: writing %s: %w", path, err)
	}
	if srcErr != nil {
		return fmt.Errorf("metrics: %s written with v2backup_scrape_error 1: %w", path, srcErr)
	}
	return nil
}

// collectorFunc makes a prometheus.Collector of two functions.
type collectorFunc struct {
	describe func(chan<- *prometheus.Desc)
	collect  func(chan<- prometheus.Metric)
}

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) { f.describe(ch) }
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f.collect(ch) }
