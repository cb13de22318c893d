// Package sums reads and writes SHA256SUMS manifests (the format of GNU
// sha256sum, which `sha256sum -c` checks) and verifies a whole tree against
// one: every listed file present with its hash, no regular file unlisted.
// Pulls check the staging tree with it before switching, off-site copies
// the drive's copy.
package sums

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/google/renameio/v2"
	"golang.org/x/sys/unix"
)

// File names a remote view puts at its root, and that every verified copy
// keeps at its root.
const (
	SumsName = "SHA256SUMS"
	DescName = "SNAPSHOT.json"
)

// Entry is one line of a SHA256SUMS file.
type Entry struct {
	Path   string // slash-separated, relative to the manifest's directory
	SHA256 string // 64 lower-case hex digits
}

// Description is SNAPSHOT.json, written by the host's remote view (and by
// an off-site copy of a local tier): which snapshot the tree is.
type Description struct {
	Server   string `json:"server"`
	Snapshot string `json:"snapshot"`
	// Time is when the snapshot was taken, RFC 3339.
	Time     string `json:"time"`
	Files    int64  `json:"files"`
	Bytes    int64  `json:"bytes"`
	Manifest string `json:"manifest"`
	// Catalog names the host's catalog shipped beside the manifest
	// (CATALOG.db) and CatalogSHA256 is its SHA-256; both empty when the
	// snapshot has none.
	Catalog       string `json:"catalog,omitempty"`
	CatalogSHA256 string `json:"catalog_sha256,omitempty"`
}

// ReadDescription parses a SNAPSHOT.json file.
func ReadDescription(file string) (Description, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Description{}, err
	}
	var d Description
	if err := json.Unmarshal(b, &d); err != nil {
		return Description{}, fmt.Errorf("%s: %w", file, err)
	}
	if d.Server == "" || d.Snapshot == "" {
		return Description{}, fmt.Errorf("%s: server %q and snapshot %q must both be set", file, d.Server, d.Snapshot)
	}
	return d, nil
}

// WriteDescription writes d as dir/SNAPSHOT.json, atomically.
func WriteDescription(dir string, d Description) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(dir, DescName)
	if err := renameio.WriteFile(p, append(b, '\n'), 0o644, renameio.WithTempDir(dir)); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return nil
}

// Parse reads a SHA256SUMS file; name is used in errors. It accepts the
// text-mode ("  ") and binary-mode (" *") separators and GNU's escaped
// lines (a leading '\', with \\ and \n inside the name).
func Parse(r io.Reader, name string) ([]Entry, error) {
	var out []Entry
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		escaped := strings.HasPrefix(line, "\\")
		if escaped {
			line = line[1:]
		}
		if len(line) < 67 || (line[64:66] != "  " && line[64:66] != " *") {
			return nil, fmt.Errorf("%s:%d: not a sha256sum line (want 64 hex digits, two spaces, a path): %q", name, ln, sc.Text())
		}
		sum, p := line[:64], line[66:]
		if strings.Trim(sum, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("%s:%d: checksum %q is not 64 lower-case hex digits", name, ln, sum)
		}
		if escaped {
			var err error
			if p, err = unescape(p); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, ln, err)
			}
		}
		if err := checkPath(p); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, ln, err)
		}
		if seen[p] {
			return nil, fmt.Errorf("%s:%d: %q is listed twice", name, ln, p)
		}
		seen[p] = true
		out = append(out, Entry{Path: p, SHA256: sum})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return out, nil
}

func unescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", fmt.Errorf("name %q ends with a lone backslash", s)
		}
		i++
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		default:
			return "", fmt.Errorf("name %q has an unknown escape \\%c", s, s[i])
		}
	}
	return b.String(), nil
}

// checkPath refuses a manifest path that would leave the tree.
func checkPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." ||
		strings.HasPrefix(p, "../") || strings.ContainsRune(p, 0) {
		return fmt.Errorf("path %q must be relative, clean and inside the tree", p)
	}
	return nil
}

// ReadFile parses the SHA256SUMS file at file.
func ReadFile(file string) ([]Entry, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, file)
}

// Format renders entries as sha256sum writes them, sorted by path.
func Format(entries []Entry) ([]byte, error) {
	sorted := append([]Entry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	var b bytes.Buffer
	for i, e := range sorted {
		if err := checkPath(e.Path); err != nil {
			return nil, err
		}
		if len(e.SHA256) != 64 || strings.Trim(e.SHA256, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("%s: checksum %q is not 64 lower-case hex digits", e.Path, e.SHA256)
		}
		if i > 0 && sorted[i-1].Path == e.Path {
			return nil, fmt.Errorf("%s: listed twice", e.Path)
		}
		name := e.Path
		if strings.ContainsAny(name, "\\\n") {
			b.WriteByte('\\')
			name = strings.NewReplacer("\\", "\\\\", "\n", "\\n").Replace(name)
		}
		fmt.Fprintf(&b, "%s  %s\n", e.SHA256, name)
	}
	return b.Bytes(), nil
}

// WriteFile writes entries as dir/SHA256SUMS, atomically.
func WriteFile(dir string, entries []Entry) error {
	b, err := Format(entries)
	if err != nil {
		return fmt.Errorf("manifest for %s: %w", dir, err)
	}
	p := filepath.Join(dir, SumsName)
	if err := renameio.WriteFile(p, b, 0o644, renameio.WithTempDir(dir)); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return nil
}

// File is a regular file of a verified tree.
type File struct {
	Path    string
	SHA256  string
	Size    int64
	MTimeNs int64
	Ino     uint64
	Known   bool // the hash came from Options.Known; the file was not read
}

// Problem is one disagreement between a tree and its manifest.
type Problem struct {
	Path string
	What string // "missing", "not in the manifest", "SHA-256 ... , manifest says ...", ...
}

// MismatchError lists every problem Verify found.
type MismatchError struct {
	Root     string
	Problems []Problem
}

func (e *MismatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s does not match its manifest: %d problem(s)", e.Root, len(e.Problems))
	for i, p := range e.Problems {
		if i == 10 {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i)
			break
		}
		fmt.Fprintf(&b, "; %s: %s", p.Path, p.What)
	}
	return b.String()
}

// Options tunes Verify.
type Options struct {
	// Workers hash files in parallel; 0 means 2 per CPU (reads wait on the
	// disk as much as hashing waits on the CPU).
	Workers int
	// Ignore lists paths that are neither checked nor counted as extra
	// (the manifest files themselves).
	Ignore []string
	// Known, if set, may vouch for a file without reading it: given its
	// path and the inode it is (device, inode number, size, mtime), it
	// returns the content's SHA-256 if that very inode was verified before
	// (a pull's hard link to the last verified copy). It is called from
	// several goroutines at once.
	Known func(rel string, dev, ino uint64, size, mtimeNs int64) (sha256hex string, ok bool)
}

// resolve keeps every open inside the tree: no symlink followed, no "..",
// no other filesystem.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// Verify hashes every regular file under root and compares the tree with
// want: each listed path must be a regular file with that SHA-256, and
// each regular file must be listed. Directories and symlinks are not
// listed by a remote view's manifest and are accepted; symlinks are never
// followed. It returns the files it hashed, sorted by path, and a
// *MismatchError listing every problem.
func Verify(ctx context.Context, root string, want []Entry, o Options) ([]File, error) {
	if o.Workers <= 0 {
		o.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	rootfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", root, err)
	}
	defer unix.Close(rootfd)
	ignore := map[string]bool{}
	for _, p := range o.Ignore {
		ignore[p] = true
	}
	wanted := make(map[string]string, len(want))
	for _, e := range want {
		wanted[e.Path] = e.SHA256
	}

	var paths []string
	var probs []Problem
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("verify: walking %s: %w", p, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p == root {
			return nil
		}
		rel := filepath.ToSlash(p[len(root)+1:])
		if ignore[rel] || !d.Type().IsRegular() {
			if _, listed := wanted[rel]; listed && !ignore[rel] {
				probs = append(probs, Problem{rel, fmt.Sprintf("is a %s, the manifest lists a file", typeName(d.Type()))})
				delete(wanted, rel)
			}
			return nil
		}
		if _, listed := wanted[rel]; !listed {
			probs = append(probs, Problem{rel, "is not in the manifest"})
			return nil
		}
		paths = append(paths, rel)
		return nil
	})
	if err != nil {
		return nil, err
	}

	files, err := hashPaths(ctx, rootfd, root, paths, o.Workers, o.Known)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if w := wanted[f.Path]; w != f.SHA256 {
			probs = append(probs, Problem{f.Path, fmt.Sprintf("SHA-256 %s, manifest says %s", f.SHA256, w)})
		}
		delete(wanted, f.Path)
	}
	for p := range wanted {
		if !ignore[p] {
			probs = append(probs, Problem{p, "is missing"})
		}
	}
	if len(probs) > 0 {
		sort.Slice(probs, func(i, j int) bool { return probs[i].Path < probs[j].Path })
		return files, &MismatchError{Root: root, Problems: probs}
	}
	return files, nil
}

// hashPaths hashes paths (relative to rootfd) with workers goroutines.
func hashPaths(ctx context.Context, rootfd int, root string, paths []string, workers int, known knownFunc) ([]File, error) {
	files := make([]File, len(paths))
	errs := make([]error, len(paths))
	idx := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for i := range idx {
				files[i], errs[i] = hashAt(rootfd, paths[i], buf, known)
			}
		}()
	}
	for i := range paths {
		if ctx.Err() != nil {
			break
		}
		idx <- i
	}
	close(idx)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("hashing %s: %w", filepath.Join(root, paths[i]), err)
		}
	}
	return files, nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	default:
		return "special file"
	}
}

type knownFunc = func(rel string, dev, ino uint64, size, mtimeNs int64) (string, bool)

func hashAt(rootfd int, rel string, buf []byte, known knownFunc) (File, error) {
	fd, err := unix.Openat2(rootfd, rel, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK, Resolve: resolve})
	if err != nil {
		return File{}, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return File{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return File{}, errors.New("is no longer a regular file")
	}
	if known != nil {
		if sum, ok := known(rel, st.Dev, st.Ino, st.Size, st.Mtim.Nano()); ok {
			return File{Path: rel, SHA256: sum, Size: st.Size, MTimeNs: st.Mtim.Nano(), Ino: st.Ino, Known: true}, nil
		}
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, onlyReader{f}, buf)
	if err != nil {
		return File{}, err
	}
	return File{Path: rel, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n, MTimeNs: st.Mtim.Nano(), Ino: st.Ino}, nil
}

// onlyReader hides os.File's WriterTo, so CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }

// Hash hashes every regular file under root in parallel, without
// following symlinks, and returns them sorted by path; o.Ignore lists
// paths to leave out.
func Hash(ctx context.Context, root string, o Options) ([]File, error) {
	if o.Workers <= 0 {
		o.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	rootfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("hashing %s: %w", root, err)
	}
	defer unix.Close(rootfd)
	ignore := map[string]bool{}
	for _, p := range o.Ignore {
		ignore[p] = true
	}
	var paths []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("hashing: walking %s: %w", p, err)
		}
		if p != root && d.Type().IsRegular() {
			if rel := filepath.ToSlash(p[len(root)+1:]); !ignore[rel] {
				paths = append(paths, rel)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return hashPaths(ctx, rootfd, root, paths, o.Workers, o.Known)
}

// Entries turns verified files into manifest entries.
func Entries(files []File) []Entry {
	out := make([]Entry, len(files))
	for i, f := range files {
		out[i] = Entry{Path: f.Path, SHA256: f.SHA256}
	}
	return out
}
