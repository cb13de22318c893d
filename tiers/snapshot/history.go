package snapshot

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/renameio/v2"
	"github.com/softxs/v2backup/tiers"
)

// Status of an application in a snapshot, as its history file reports it.
type Status string

// The statuses a history file may carry.
const (
	// StatusComplete: the application's backup of the night is in the snapshot.
	StatusComplete Status = "complete"
	// StatusIncomplete: it was still being written at the deadline, so the
	// snapshot holds its last complete state instead.
	StatusIncomplete Status = "incomplete"
	// StatusFailed: its backup job failed; the snapshot holds its last
	// complete state, if any.
	StatusFailed Status = "failed"
)

func (s Status) valid() bool {
	return s == StatusComplete || s == StatusIncomplete || s == StatusFailed
}

// History is one application's line of monitoring for one snapshot: the
// seed's history file "backup-{name}-{yyyymmdd}" in the {history}
// directory, with the number of files and MB and a little more.
//
// The file is UTF-8 text, one "key: value" per line, keys in this order,
// so that both people and scripts (grep '^mb:', awk -F': ') read it:
//
//		# v2backup history file, format 1
//		app: web+demo.softxs.ch+hydro
//		server: zg-3.softxs.ch
//		vm: web
//		relpath: demo.softxs.ch/hydro
//		snapshot: 2026-11-28T050000
//		status: complete
//		files: 1234
//		mb: 56.789
//		bytes: 56789012
//		changed: 12
//		note: job failed: mariadb-dump exited 2
//		written: 2026-11-28T05:03:12Z
//
//	  - app: the {name} of the file name (see HistoryName).
//	  - server, vm, relpath: where the application's backup lives; may be empty.
//	  - snapshot: the snapshot's name; its date is the file name's yyyymmdd.
//	  - status: complete, incomplete (still being written at the deadline:
//	    the snapshot holds the last complete state) or failed (the job failed:
//	    likewise).
//	  - files: number of regular files of the application in the snapshot.
//	  - mb: their size in decimal megabytes (1 MB = 1,000,000 bytes), three
//	    decimals; bytes: the same, exact.
//	  - changed: files added or whose content changed since the previous
//	    snapshot (every file, in the first one).
//	  - note: present only when there is something to explain.
//	  - written: when the file was written, RFC 3339, UTC.
//
// Lines starting with '#' and unknown keys are ignored by readers, so keys
// can be added without breaking them. A file is replaced atomically
// (written beside, fsynced, renamed), so a reader never sees half of one;
// a second run on the same night replaces that night's file.
type History struct {
	App      string
	Server   string
	VM       string
	Relpath  string
	Snapshot string
	Status   Status
	Files    int64
	Bytes    int64
	Changed  int64
	Note     string
	Written  time.Time
}

// HistoryName is the default {name} of an application's history file:
// vm and the relpath's segments joined with '+', e.g.
// "web+demo.softxs.ch+hydro". '+' and '%' inside a segment are written %2B
// and %25, so that different applications never share a name.
func HistoryName(vm, relpath string) string {
	esc := strings.NewReplacer("%", "%25", "+", "%2B")
	segs := strings.Split(relpath, "/")
	for i, s := range segs {
		segs[i] = esc.Replace(s)
	}
	return esc.Replace(vm) + "+" + strings.Join(segs, "+")
}

// HistoryPath returns the file WriteHistory writes for h in dir:
// {dir}/backup-{h.App}-{yyyymmdd of h.Snapshot}.
func HistoryPath(dir string, h History) (string, error) {
	if err := checkHistory(h); err != nil {
		return "", err
	}
	t, _ := ParseName(h.Snapshot)
	return filepath.Join(dir, "backup-"+h.App+"-"+t.Format("20060102")), nil
}

func checkHistory(h History) error {
	switch {
	case h.App == "":
		return fmt.Errorf("history: app must not be empty")
	case strings.ContainsAny(h.App, "/") || strings.HasPrefix(h.App, "."):
		return fmt.Errorf("history: app %q must be a plain file name part (no '/', not starting with '.')", h.App)
	case !h.Status.valid():
		return fmt.Errorf("history of %s: status %q is not one of complete, incomplete, failed", h.App, h.Status)
	case h.Files < 0 || h.Bytes < 0 || h.Changed < 0:
		return fmt.Errorf("history of %s: negative count (files %d, bytes %d, changed %d)", h.App, h.Files, h.Bytes, h.Changed)
	}
	if _, err := ParseName(h.Snapshot); err != nil {
		return fmt.Errorf("history of %s: %w", h.App, err)
	}
	for _, f := range []struct{ k, v string }{{"app", h.App}, {"server", h.Server}, {"vm", h.VM}, {"relpath", h.Relpath}, {"note", h.Note}} {
		for _, c := range f.v {
			if c < 0x20 || c == 0x7f {
				return fmt.Errorf("history of %s: %s %q contains control character %U", h.App, f.k, f.v, c)
			}
		}
	}
	return nil
}

// WriteHistory writes h's history file in dir (see History for the
// format) atomically and durably: temporary file in dir, fsync, rename,
// fsync of dir. A zero h.Written is set to now.
func WriteHistory(dir string, h History) error {
	path, err := HistoryPath(dir, h)
	if err != nil {
		return err
	}
	if h.Written.IsZero() {
		h.Written = time.Now()
	}
	var b bytes.Buffer
	b.WriteString("# v2backup history file, format 1\n")
	kv := func(k, v string) { fmt.Fprintf(&b, "%s: %s\n", k, v) }
	kv("app", h.App)
	kv("server", h.Server)
	kv("vm", h.VM)
	kv("relpath", h.Relpath)
	kv("snapshot", h.Snapshot)
	kv("status", string(h.Status))
	kv("files", strconv.FormatInt(h.Files, 10))
	kv("mb", fmt.Sprintf("%d.%03d", h.Bytes/1e6, h.Bytes%1e6/1e3))
	kv("bytes", strconv.FormatInt(h.Bytes, 10))
	kv("changed", strconv.FormatInt(h.Changed, 10))
	if h.Note != "" {
		kv("note", h.Note)
	}
	kv("written", h.Written.UTC().Format(time.RFC3339))
	if err := renameio.WriteFile(path, b.Bytes(), 0o644, renameio.WithTempDir(dir)); err != nil {
		return fmt.Errorf("writing history file %s: %w", path, err)
	}
	return tiers.SyncDir(dir)
}

// ReadHistory parses a history file written by WriteHistory. Errors name
// the file, and the line and key where one is wrong.
func ReadHistory(path string) (History, error) {
	f, err := os.Open(path)
	if err != nil {
		return History{}, fmt.Errorf("reading history file: %w", err)
	}
	defer f.Close()
	var h History
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			k, ok = strings.CutSuffix(line, ":")
		}
		if !ok {
			return History{}, fmt.Errorf("%s:%d: %q is not a \"key: value\" line", path, ln, line)
		}
		if seen[k] {
			return History{}, fmt.Errorf("%s:%d: key %q appears twice", path, ln, k)
		}
		seen[k] = true
		num := func(dst *int64) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("%s:%d: %s %q is not a non-negative integer", path, ln, k, v)
			}
			*dst = n
			return nil
		}
		switch k {
		case "app":
			h.App = v
		case "server":
			h.Server = v
		case "vm":
			h.VM = v
		case "relpath":
			h.Relpath = v
		case "snapshot":
			h.Snapshot = v
		case "status":
			h.Status = Status(v)
			if !h.Status.valid() {
				return History{}, fmt.Errorf("%s:%d: status %q is not one of complete, incomplete, failed", path, ln, v)
			}
		case "files":
			err = num(&h.Files)
		case "bytes":
			err = num(&h.Bytes)
		case "changed":
			err = num(&h.Changed)
		case "note":
			h.Note = v
		case "written":
			h.Written, err = time.Parse(time.RFC3339, v)
			if err != nil {
				err = fmt.Errorf("%s:%d: written %q is not an RFC 3339 time", path, ln, v)
			}
		}
		if err != nil {
			return History{}, err
		}
	}
	if err := sc.Err(); err != nil {
		return History{}, fmt.Errorf("reading history file %s: %w", path, err)
	}
	for _, k := range []string{"app", "snapshot", "status", "files", "bytes", "changed", "written"} {
		if !seen[k] {
			return History{}, fmt.Errorf("%s: key %q is missing", path, k)
		}
	}
	return h, nil
}

// AppCounts is one application's share of a snapshot's manifest.
type AppCounts struct {
	Files   int64 // regular files
	Bytes   int64 // their total size
	Changed int64 // regular files added or changed since the previous snapshot
}

// Tally aggregates manifest entries per application, for history files.
// Add it to Options.Emit. It is safe for concurrent use.
type Tally struct {
	mu     sync.Mutex
	counts map[string]*AppCounts
	prev   func(rel string) (string, bool)
}

// NewTally counts the entries under each of apps, given as paths relative
// to the snapshot root ("web/demo.softxs.ch/hydro"). prev returns a path's
// SHA-256 in the previous snapshot (ok=false if it was not there); a file
// is changed if it is new, its hash differs, or its hash is unknown. With
// prev nil, there is no previous snapshot and every file is changed.
func NewTally(apps []string, prev func(rel string) (sha256hex string, ok bool)) *Tally {
	t := &Tally{counts: make(map[string]*AppCounts, len(apps)), prev: prev}
	for _, a := range apps {
		t.counts[strings.Trim(a, "/")] = &AppCounts{}
	}
	return t
}

// Add counts a batch of entries; entries in no application are ignored.
func (t *Tally) Add(batch []Entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range batch {
		e := &batch[i]
		if !e.Mode.IsRegular() {
			continue
		}
		c := t.app(e.Path)
		if c == nil {
			continue
		}
		c.Files++
		c.Bytes += e.Size
		changed := true
		if t.prev != nil && e.SHA256 != "" {
			if old, ok := t.prev(e.Path); ok && old == e.SHA256 {
				changed = false
			}
		}
		if changed {
			c.Changed++
		}
	}
}

// app finds the innermost application containing path.
func (t *Tally) app(path string) *AppCounts {
	for i := len(path) - 1; i > 0; i-- {
		if path[i] == '/' {
			if c, ok := t.counts[path[:i]]; ok {
				return c
			}
		}
	}
	return nil
}

// Counts returns the totals so far, by application path as given to
// NewTally without leading or trailing '/'.
func (t *Tally) Counts() map[string]AppCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]AppCounts, len(t.counts))
	for k, v := range t.counts {
		out[k] = *v
	}
	return out
}
