// Package statuspage serves the daemon's small read-only HTML status page:
// per host the seed's summary table of applications with their state, last
// success, size and a trend chart of the last nights, then the host's
// snapshots, pulls and off-site drives. It reads report.Report only, so it
// never disagrees with `status`, `check` or the metrics; it loads nothing
// from anywhere and needs no JavaScript.
package statuspage

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/softxs/v2backup/jobs/report"
)

//go:embed page.html.tmpl
var files embed.FS

var pageTmpl = template.Must(template.New("page.html.tmpl").ParseFS(files, "page.html.tmpl"))

// Paths the handler answers; anything else is 404.
const (
	// PagePath is the HTML page.
	PagePath = "/"
	// JSONPath is the reports as JSON, the same as PagePath?format=json.
	JSONPath = "/status.json"
)

// Option configures Handler.
type Option func(*handler)

// WithLogger logs why a page could not be built to lg instead of
// slog.Default().
func WithLogger(lg *slog.Logger) Option {
	return func(h *handler) { h.log = lg }
}

// Handler serves the status page built from src's reports, fresh on each
// request: PagePath as HTML, JSONPath (or PagePath?format=json) as JSON.
// It answers GET and HEAD only (405 otherwise); a failing src gives a 500
// that says why, and is logged.
func Handler(src report.Source, opts ...Option) http.Handler {
	h := &handler{src: src, log: slog.Default()}
	for _, o := range opts {
		o(h)
	}
	return h
}

type handler struct {
	src report.Source
	log *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var asJSON bool
	switch {
	case r.URL.Path == JSONPath:
		asJSON = true
	case r.URL.Path == PagePath:
		switch f := r.URL.Query().Get("format"); f {
		case "", "html":
		case "json":
			asJSON = true
		default:
			h.fail(w, r, false, http.StatusBadRequest, fmt.Sprintf("format %q: use html or json", f))
			return
		}
	default:
		h.fail(w, r, false, http.StatusNotFound, fmt.Sprintf("no page at %s: the status page is at %s, its JSON at %s", r.URL.Path, PagePath, JSONPath))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.fail(w, r, asJSON, http.StatusMethodNotAllowed, fmt.Sprintf("method %s on %s: the status page is read-only (GET, HEAD)", r.Method, r.URL.Path))
		return
	}
	reps, err := h.src(r.Context())
	if err != nil {
		h.log.Error("status page: cannot build the reports", "err", err)
		h.fail(w, r, asJSON, http.StatusInternalServerError, "cannot build the reports: "+err.Error())
		return
	}
	var buf bytes.Buffer
	if asJSON {
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if reps == nil {
			reps = []*report.Report{}
		}
		err = enc.Encode(reps)
	} else {
		err = pageTmpl.Execute(&buf, newPage(reps))
	}
	if err != nil { // rendered into a buffer so a failure is a clean 500
		h.log.Error("status page: rendering", "err", err)
		h.fail(w, r, asJSON, http.StatusInternalServerError, "rendering the page: "+err.Error())
		return
	}
	write(w, r, asJSON, http.StatusOK, buf.Bytes())
}

// fail answers with an error page (or JSON object) that says why.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, asJSON bool, code int, msg string) {
	var buf bytes.Buffer
	if asJSON {
		json.NewEncoder(&buf).Encode(map[string]string{"error": msg})
	} else if err := pageTmpl.ExecuteTemplate(&buf, "error", errorPage{Code: code, Status: http.StatusText(code), Message: msg}); err != nil {
		buf.Reset()
		asJSON = false
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(&buf, "%d %s: %s\n", code, http.StatusText(code), msg)
	}
	write(w, r, asJSON, code, buf.Bytes())
}

func write(w http.ResponseWriter, r *http.Request, asJSON bool, code int, body []byte) {
	hd := w.Header()
	if hd.Get("Content-Type") == "" {
		if asJSON {
			hd.Set("Content-Type", "application/json")
		} else {
			hd.Set("Content-Type", "text/html; charset=utf-8")
		}
	}
	// The page shows live state and must never pull anything in: no
	// scripts, no remote styles or images, even if a field smuggled markup
	// past the escaping.
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

type errorPage struct {
	Code    int
	Status  string
	Message string
}
