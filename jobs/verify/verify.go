// Package verify re-reads backup files and compares them with what the
// catalog recorded: the live local tier against the live-file rows, or a
// snapshot against its manifest. It reports missing, changed, unreadable,
// unhashed and uncataloged files.
package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/softxs/v2backup/catalog"
)

// Problem kinds.
const (
	Missing     = "missing"     // in the catalog, not on disk
	Changed     = "changed"     // content (or size) differs from the catalog's hash
	Unreadable  = "unreadable"  // cannot be opened or read
	Unhashed    = "unhashed"    // the catalog has no hash to compare with
	Uncataloged = "uncataloged" // on disk, not in the catalog
	NotRegular  = "not-regular" // the catalog has a file, the disk something else
)

// Problem is one file that does not match.
type Problem struct {
	Kind   string
	Path   string // relative to the verified root
	Detail string
}

func (p Problem) String() string {
	if p.Detail == "" {
		return p.Kind + " " + p.Path
	}
	return p.Kind + " " + p.Path + ": " + p.Detail
}

// Report is the outcome of one verification.
type Report struct {
	Root     string
	Files    int64 // files compared
	Bytes    int64 // bytes read
	Problems []Problem
	Elapsed  time.Duration
}

// OK reports whether every file matched.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Want is one file the catalog knows.
type Want struct {
	Path   string
	Size   int64
	MTime  time.Time
	SHA256 string
}

// Options says what to verify.
type Options struct {
	// Root is the directory the paths are relative to (the tier root or
	// the snapshot directory).
	Root string
	// Prefix limits the check to this path and below ("" = everything).
	Prefix string
	// Walk yields the catalog's files under Prefix.
	Walk func(ctx context.Context, fn func(Want) error) error
	// Skip leaves paths out of the uncataloged check (e.g. files written
	// since the catalog was read).
	Skip func(path string) bool
	// Workers hashing in parallel; default the number of CPUs.
	Workers int
}

// Run verifies. A problem with a file is a Problem in the report; only a
// failure to read the catalog or the root is an error.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	root, err := os.Open(o.Root)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer root.Close()
	rep := &Report{Root: o.Root}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		jobs = make(chan Want, 256)
		wg   sync.WaitGroup
	)
	add := func(p Problem) {
		mu.Lock()
		rep.Problems = append(rep.Problems, p)
		mu.Unlock()
	}
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range jobs {
				n, p := check(int(root.Fd()), w)
				mu.Lock()
				rep.Files++
				rep.Bytes += n
				mu.Unlock()
				if p != nil {
					add(*p)
				}
			}
		}()
	}
	walkErr := o.Walk(ctx, func(w Want) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		seen[w.Path] = true
		jobs <- w
		return nil
	})
	close(jobs)
	wg.Wait()
	if walkErr != nil {
		return nil, fmt.Errorf("verify: reading the catalog: %w", walkErr)
	}

	// Files on disk the catalog does not know.
	base := filepath.Join(o.Root, filepath.FromSlash(o.Prefix))
	err = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == base {
				return nil
			}
			rel, _ := filepath.Rel(o.Root, p)
			add(Problem{Unreadable, filepath.ToSlash(rel), err.Error()})
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(o.Root, p)
		rel = filepath.ToSlash(rel)
		if !seen[rel] && (o.Skip == nil || !o.Skip(rel)) {
			add(Problem{Uncataloged, rel, ""})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("verify: walking %s: %w", base, err)
	}
	sort.Slice(rep.Problems, func(i, j int) bool {
		if rep.Problems[i].Path != rep.Problems[j].Path {
			return rep.Problems[i].Path < rep.Problems[j].Path
		}
		return rep.Problems[i].Kind < rep.Problems[j].Kind
	})
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// check re-hashes one file, never following a symlink at any depth.
func check(rootFd int, w Want) (int64, *Problem) {
	fd, err := unix.Openat2(rootFd, w.Path, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NOATIME,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.EPERM) { // O_NOATIME on a file we do not own
		fd, err = unix.Openat2(rootFd, w.Path, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return 0, &Problem{Missing, w.Path, ""}
	case errors.Is(err, unix.ELOOP):
		return 0, &Problem{NotRegular, w.Path, "is a symlink on disk"}
	case err != nil:
		return 0, &Problem{Unreadable, w.Path, err.Error()}
	}
	f := os.NewFile(uintptr(fd), w.Path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, &Problem{Unreadable, w.Path, err.Error()}
	}
	if !st.Mode().IsRegular() {
		return 0, &Problem{NotRegular, w.Path, "is " + st.Mode().Type().String() + " on disk"}
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return n, &Problem{Unreadable, w.Path, err.Error()}
	}
	if w.SHA256 == "" {
		return n, &Problem{Unhashed, w.Path, "the catalog has no hash for it"}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != w.SHA256 {
		return n, &Problem{Changed, w.Path, fmt.Sprintf("sha256 %s, catalog %s (size %d, catalog %d)", short(got), short(w.SHA256), n, w.Size)}
	}
	if n != w.Size {
		return n, &Problem{Changed, w.Path, fmt.Sprintf("size %d, catalog %d", n, w.Size)}
	}
	return n, nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// LiveFiles walks the catalog's live-file rows under prefix.
func LiveFiles(db *catalog.DB, prefix string) func(context.Context, func(Want) error) error {
	return func(ctx context.Context, fn func(Want) error) error {
		return db.WalkFiles(ctx, prefix, func(f catalog.FileRecord) error {
			return fn(Want{Path: f.Path, Size: f.Size, MTime: f.MTime, SHA256: f.SHA256})
		})
	}
}

// SnapshotFiles walks a snapshot's manifest under prefix.
func SnapshotFiles(db *catalog.DB, snapID int64, prefix string) func(context.Context, func(Want) error) error {
	return func(ctx context.Context, fn func(Want) error) error {
		return db.WalkManifest(ctx, snapID, prefix, func(e catalog.ManifestEntry) error {
			return fn(Want{Path: e.Path, Size: e.Size, MTime: e.MTime, SHA256: e.SHA256})
		})
	}
}

// Summary is a one-line account of a report.
func (r *Report) Summary() string {
	if r.OK() {
		return fmt.Sprintf("verified %d files (%.1f MB) in %s: all match the catalog", r.Files, float64(r.Bytes)/1e6, r.Root)
	}
	kinds := map[string]int{}
	for _, p := range r.Problems {
		kinds[p.Kind]++
	}
	var parts []string
	for _, k := range []string{Missing, Changed, Unreadable, Unhashed, Uncataloged, NotRegular} {
		if kinds[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", kinds[k], k))
		}
	}
	return fmt.Sprintf("verified %d files in %s: %s", r.Files, r.Root, strings.Join(parts, ", "))
}
