package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/fusefs"
	"github.com/softxs/v2backup/fusefs/roview"
	"github.com/softxs/v2backup/jobs/metrics"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/jobs/statuspage"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// listenAddress is where server's daemon serves /metrics and the status
// page: its [[server]] listen, else its [[backup_server]] listen; "" is off.
func listenAddress(inv *inventory.Inventory, server tiers.Server) string {
	if s, ok := inv.Server(server); ok && s.Listen != "" {
		return s.Listen
	}
	if b, ok := inv.BackupServer(server); ok {
		return b.Listen
	}
	return ""
}

// httpMux routes the daemon's read-only pages: /metrics, and the status
// page for everything else. A scrape that cannot read a catalog logs to lg.
func httpMux(src report.Source, live metrics.Live, lg *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	c := metrics.NewCollector(src, live)
	c.Logger = lg
	mux.Handle("/metrics", c.Handler())
	mux.Handle("/", statuspage.Handler(src, statuspage.WithLogger(lg)))
	return mux
}

// httpServer is the daemon's HTTP listener.
type httpServer struct {
	srv  *http.Server
	addr string // the bound address (a port 0 resolved)
	done chan struct{}
}

// startHTTP serves h on addr. It returns nil, after logging why, when addr
// is empty or cannot be listened on: like a VM's failing socket, that must
// not stop the daemon's mounts.
func startHTTP(addr string, h http.Handler, lg *slog.Logger) *httpServer {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		lg.Error("http: not serving the status page and metrics; the daemon goes on", "listen", addr, "err", err)
		return nil
	}
	s := &httpServer{
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(lg.Handler(), slog.LevelWarn)},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			lg.Error("http: serving stopped", "listen", s.addr, "err", err)
		}
	}()
	lg.Info(fmt.Sprintf("http: status page and metrics at http://%s/", s.addr))
	return s
}

// Close stops accepting, lets requests in flight finish for a few seconds,
// then closes what is left. A nil server is a no-op.
func (s *httpServer) Close(lg *slog.Logger) {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		lg.Warn("http: shutdown", "listen", s.addr, "err", err)
		s.srv.Close()
	}
	<-s.done
}

// vmStats is one mounted VM's request counters.
type vmStats struct {
	vm tiers.VM
	m  *fusefs.Mount
}

// daemonLive is the host daemon's live counters for /metrics. The mounts
// are published after each change (publishMounts), so a scrape never reads
// the daemon's map while SIGHUP changes it.
type daemonLive struct {
	rec    *catalog.Recorder
	mounts atomic.Pointer[[]vmStats]
	view   *roview.RemoteView // nil when not mounted
}

// remoteViewLabel is the vm label of the remote view's request counters.
const remoteViewLabel = "remote-view"

// QueueDepth is the catalog recorder's queued and in-flight events.
func (l *daemonLive) QueueDepth() int { return l.rec.QueueDepth() }

// Dropped is the catalog events dropped since the daemon started.
func (l *daemonLive) Dropped() uint64 { return l.rec.Dropped() }

// FUSEOps lists every mounted VM's request counters, VMs sorted, then the
// remote view's (vm label "remote-view").
func (l *daemonLive) FUSEOps() []metrics.OpCount {
	var out []metrics.OpCount
	if p := l.mounts.Load(); p != nil {
		for _, v := range *p {
			for _, s := range v.m.Stats() {
				out = append(out, metrics.OpCount{VM: string(v.vm), Op: s.Op, Requests: s.Count, Errors: s.Errors, Seconds: s.Time.Seconds()})
			}
		}
	}
	if l.view != nil {
		// The view is read-only and counts no errors: what it refuses
		// (writes, EROFS) the kernel mostly refuses before asking.
		for _, r := range l.view.Requests() {
			out = append(out, metrics.OpCount{VM: remoteViewLabel, Op: r.Op, Requests: r.Count, Seconds: r.Time.Seconds()})
		}
	}
	return out
}

// FileInodes lists every mounted VM's file inodes, VMs sorted, then the
// remote view's (vm label "remote-view").
func (l *daemonLive) FileInodes() []metrics.InodeCount {
	var out []metrics.InodeCount
	if p := l.mounts.Load(); p != nil {
		for _, v := range *p {
			live, pruned := v.m.FileInodes()
			out = append(out, metrics.InodeCount{VM: string(v.vm), Live: live, Pruned: pruned})
		}
	}
	if l.view != nil {
		live, pruned := l.view.FileInodes()
		out = append(out, metrics.InodeCount{VM: remoteViewLabel, Live: live, Pruned: pruned})
	}
	return out
}

// publishMounts gives the live counters the current mounts.
func (d *daemon) publishMounts() {
	if d.live == nil {
		return
	}
	ms := make([]vmStats, 0, len(d.mounts))
	for _, vm := range sortedVMs(d.mounts) {
		ms = append(ms, vmStats{vm: vm, m: d.mounts[vm].m})
	}
	d.live.mounts.Store(&ms)
}

// startDaemonHTTP starts the host daemon's listener, if configured.
func (d *daemon) startDaemonHTTP(inv *inventory.Inventory) *httpServer {
	d.live = &daemonLive{rec: d.rec, view: d.view}
	d.publishMounts()
	src := reportSource(d.cur.Load, d.server, d.db)
	return startHTTP(listenAddress(inv, d.server), httpMux(src, d.live, d.g.log), d.g.log)
}

// serveBackupServer is `v2backup serve` on a machine that is only a backup
// server: no mounts, only the HTTP listener with its status page and
// /metrics for the hosts it pulls. SIGHUP re-reads the inventory (the
// listen address is read at start only).
func serveBackupServer(ctx context.Context, g *globalOptions, inv *inventory.Inventory, server tiers.Server, hup <-chan os.Signal) error {
	addr := listenAddress(inv, server)
	if addr == "" {
		return usagef("serve: %s is a backup server with no listen address in %s: nothing to serve (set listen in its [[backup_server]])", server, inv.File)
	}
	db, err := catalog.Open(inv.CatalogPath(server), catalog.WithLogger(g.log))
	if err != nil {
		return fmt.Errorf("serve: catalog: %w", err)
	}
	defer db.Close()
	var cur atomic.Pointer[inventory.Inventory]
	cur.Store(inv)
	h := startHTTP(addr, httpMux(reportSource(cur.Load, server, db), nil, g.log), g.log)
	if h == nil {
		return fmt.Errorf("serve: backup server %s: cannot listen on %s (see the log)", server, addr)
	}
	defer h.Close(g.log)
	g.log.Info("serving", "backup_server", server)
	return serveUntilDone(ctx, g, hup, cur.Store)
}
