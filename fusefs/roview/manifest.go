package roview

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"
)

// Names of the files the remote view generates at its root, beside the
// VM directories (whose names are lower case, so they cannot collide).
const (
	SumsName = "SHA256SUMS"
	DescName = "SNAPSHOT.json"
)

// ManifestEntry is one regular file of a snapshot.
type ManifestEntry struct {
	Path   string // relative to the snapshot root: vm/relpath/..., "/"-separated
	SHA256 string // 64 lower-case hex digits
	Size   int64
}

// ManifestFunc gives the manifest of a snapshot of the local tier (the
// catalog records one for each snapshot).
type ManifestFunc func(snapshot string) ([]ManifestEntry, error)

// Description is the content of SNAPSHOT.json: which snapshot the remote
// view shows, for the puller to record and check.
type Description struct {
	Server   string    `json:"server"`
	Snapshot string    `json:"snapshot"`
	Time     time.Time `json:"time"`
	Files    int       `json:"files"`
	Bytes    int64     `json:"bytes"`
	Manifest string    `json:"manifest"` // the checksum file's name, SHA256SUMS
}

// HashSnapshot computes the manifest of {snapDir}/{snapshot} by reading
// every regular file, sorted by path. Symlinks are neither followed nor
// listed (sha256sum -c would follow them); other special files are left
// out too.
func HashSnapshot(snapDir, snapshot string) ([]ManifestEntry, error) {
	if !isSnapshotName(snapshot) {
		return nil, fmt.Errorf("hash snapshot %q in %s: not a snapshot name", snapshot, snapDir)
	}
	r := newSnapRoot(snapDir)
	defer r.close()
	var out []ManifestEntry
	if err := hashDir(r, snapshot, "", &out); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func hashDir(r *snapRoot, snapshot, rel string, out *[]ManifestEntry) error {
	dir := snapshot
	if rel != "" {
		dir += "/" + rel
	}
	ents, err := r.readDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := e.name
		if rel != "" {
			p = rel + "/" + e.name
		}
		mode := e.mode
		if mode == 0 {
			st, err := r.stat(snapshot + "/" + p)
			if err != nil {
				return err
			}
			mode = st.Mode & syscall.S_IFMT
		}
		switch mode {
		case syscall.S_IFDIR:
			if err := hashDir(r, snapshot, p, out); err != nil {
				return err
			}
		case syscall.S_IFREG:
			sum, size, err := hashFile(r, snapshot+"/"+p)
			if err != nil {
				return err
			}
			*out = append(*out, ManifestEntry{Path: p, SHA256: sum, Size: size})
		}
	}
	return nil
}

func hashFile(r *snapRoot, rel string) (string, int64, error) {
	fd, err := r.open(rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_NONBLOCK)
	if err != nil {
		return "", 0, err
	}
	f := os.NewFile(uintptr(fd), r.full(rel))
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", r.full(rel), err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// checkEntry rejects what would make SHA256SUMS wrong or unsafe: a
// checksum that is not 64 lower-case hex digits, a path that is absolute,
// unclean or climbs out with "..".
func checkEntry(e ManifestEntry) error {
	if len(e.SHA256) != sha256.Size*2 || strings.Trim(e.SHA256, "0123456789abcdef") != "" {
		return fmt.Errorf("manifest entry %q: SHA256 %q is not 64 lower-case hex digits", e.Path, e.SHA256)
	}
	if e.Path == "" || strings.HasPrefix(e.Path, "/") || filepath.Clean(e.Path) != e.Path ||
		e.Path == ".." || strings.HasPrefix(e.Path, "../") || strings.Contains(e.Path, "\x00") {
		return fmt.Errorf("manifest entry %q: path must be relative, clean and inside the snapshot", e.Path)
	}
	if e.Size < 0 {
		return fmt.Errorf("manifest entry %q: negative size %d", e.Path, e.Size)
	}
	return nil
}

// FormatSHA256SUMS renders entries the way sha256sum writes them
// ("HEX  path", paths relative, so sha256sum -c works from the view's root
// or from a copy of it), sorted by path. A name holding a backslash or a
// newline is escaped as GNU sha256sum does: the line starts with '\'.
func FormatSHA256SUMS(entries []ManifestEntry) ([]byte, error) {
	sorted := make([]ManifestEntry, len(entries))
	copy(sorted, entries)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	var b bytes.Buffer
	for i, e := range sorted {
		if err := checkEntry(e); err != nil {
			return nil, err
		}
		if i > 0 && sorted[i-1].Path == e.Path {
			return nil, fmt.Errorf("manifest entry %q: listed twice", e.Path)
		}
		name := e.Path
		if strings.ContainsAny(name, "\\\n") {
			b.WriteByte('\\')
			name = strings.NewReplacer("\\", "\\\\", "\n", "\\n").Replace(name)
		}
		b.WriteString(e.SHA256)
		b.WriteString("  ")
		b.WriteString(name)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// describe renders SNAPSHOT.json.
func describe(server, snapshot string, at time.Time, entries []ManifestEntry) []byte {
	d := Description{Server: server, Snapshot: snapshot, Time: at, Files: len(entries), Manifest: SumsName}
	for _, e := range entries {
		d.Bytes += e.Size
	}
	out, _ := json.MarshalIndent(d, "", "  ") // cannot fail: plain fields
	return append(out, '\n')
}

// manifestCache keeps computed manifests in a state directory, so a
// restart does not hash a whole snapshot again. Snapshots never change,
// so a name is a valid key forever.
type manifestCache struct {
	dir string
}

func (c manifestCache) path(snapshot string) string {
	return filepath.Join(c.dir, "remoteview-"+snapshot+".manifest.json")
}

func (c manifestCache) load(snapshot string) ([]ManifestEntry, bool, error) {
	if c.dir == "" {
		return nil, false, nil
	}
	data, err := os.ReadFile(c.path(snapshot))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var ents []ManifestEntry
	if err := json.Unmarshal(data, &ents); err != nil {
		return nil, false, fmt.Errorf("manifest cache %s: %w", c.path(snapshot), err)
	}
	return ents, true, nil
}

func (c manifestCache) store(snapshot string, ents []ManifestEntry) error {
	if c.dir == "" {
		return nil
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	data, err := json.Marshal(ents)
	if err != nil {
		return err
	}
	return renameio.WriteFile(c.path(snapshot), data, 0o600)
}

// prune removes cached manifests of snapshots that no longer exist.
func (c manifestCache) prune(keep []string) {
	if c.dir == "" {
		return
	}
	matches, _ := filepath.Glob(filepath.Join(c.dir, "remoteview-*.manifest.json"))
	live := map[string]bool{}
	for _, k := range keep {
		live[c.path(k)] = true
	}
	for _, m := range matches {
		if !live[m] {
			os.Remove(m)
		}
	}
}
