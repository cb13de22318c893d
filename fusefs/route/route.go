// Package route holds the decisions of a VM mount that need no FUSE: which
// application a virtual path belongs to, whether a symlink, rename or device
// node stays confined to its application, and whether a backing file is
// shared with a snapshot and must be copied before it changes.
//
// Virtual paths are slash-separated, relative to the mount root, clean and
// without a leading slash; "" is the root. Because the backing tree of a VM
// mirrors its visible tree ({partition}/local/{vm}/{relpath}), a virtual path
// inside an application is also its path relative to the VM's backing
// directory.
package route

import (
	"fmt"
	"path"
	"sort"
	"strings"
	"syscall"
)

// App is one application of a VM: its inventory name and relpath.
type App struct {
	Name    string
	Relpath string
}

// Kind classifies a virtual path.
type Kind int

// The kinds of virtual path.
const (
	// Absent paths are neither synthesized nor inside an application.
	Absent Kind = iota
	// Root is the mount root.
	Root
	// Synthetic directories are strict prefixes of relpaths
	// (e.g. "demo.softxs.ch"): read-only, listing only routed names.
	Synthetic
	// AppRoot is the directory of a relpath itself.
	AppRoot
	// InApp is anything below an application's relpath.
	InApp
)

func (k Kind) String() string {
	switch k {
	case Root:
		return "root"
	case Synthetic:
		return "synthetic"
	case AppRoot:
		return "app-root"
	case InApp:
		return "in-app"
	}
	return "absent"
}

// Place is the result of Classify.
type Place struct {
	Kind Kind
	App  string // for AppRoot and InApp: the innermost application
}

// Table routes virtual paths of one VM. It is immutable once built, so a
// mount swaps whole tables on reload.
type Table struct {
	apps     []App             // sorted by Relpath
	byRel    map[string]string // relpath -> app name
	byName   map[string]string // app name -> relpath
	children map[string][]string
}

// NewTable builds the routing table of a VM's applications. It rejects
// empty, unclean, absolute or dotted relpaths and duplicate names or
// relpaths, naming the application and the value.
func NewTable(apps []App) (*Table, error) {
	t := &Table{
		byRel:    make(map[string]string, len(apps)),
		byName:   make(map[string]string, len(apps)),
		children: map[string][]string{},
	}
	kids := map[string]map[string]bool{}
	for _, a := range apps {
		if a.Name == "" {
			return nil, fmt.Errorf("route: application with relpath %q: empty name", a.Relpath)
		}
		if err := checkRelpath(a.Relpath); err != nil {
			return nil, fmt.Errorf("route: application %q: relpath %q: %v", a.Name, a.Relpath, err)
		}
		if other, ok := t.byRel[a.Relpath]; ok {
			return nil, fmt.Errorf("route: application %q: relpath %q already used by application %q", a.Name, a.Relpath, other)
		}
		if _, ok := t.byName[a.Name]; ok {
			return nil, fmt.Errorf("route: application %q listed twice", a.Name)
		}
		t.byRel[a.Relpath] = a.Name
		t.byName[a.Name] = a.Relpath
		t.apps = append(t.apps, a)
		// Register every prefix as a child of its parent so synthetic
		// directories can be listed without scanning.
		p := a.Relpath
		for p != "" {
			dir, base := split(p)
			if kids[dir] == nil {
				kids[dir] = map[string]bool{}
			}
			kids[dir][base] = true
			p = dir
		}
	}
	sort.Slice(t.apps, func(i, j int) bool { return t.apps[i].Relpath < t.apps[j].Relpath })
	for dir, set := range kids {
		names := make([]string, 0, len(set))
		for n := range set {
			names = append(names, n)
		}
		sort.Strings(names)
		t.children[dir] = names
	}
	return t, nil
}

func checkRelpath(rel string) error {
	switch {
	case rel == "":
		return fmt.Errorf("empty")
	case strings.HasPrefix(rel, "/"):
		return fmt.Errorf("must be relative")
	case path.Clean(rel) != rel:
		return fmt.Errorf("must be clean (no empty, '.' or '..' segments, no trailing slash)")
	}
	for _, seg := range strings.Split(rel, "/") {
		if seg == ".." || strings.HasPrefix(seg, ".") {
			return fmt.Errorf("segment %q must not start with '.'", seg)
		}
		if strings.ContainsAny(seg, "\x00") {
			return fmt.Errorf("segment %q contains NUL", seg)
		}
	}
	return nil
}

// split returns the parent and last segment of a non-root virtual path.
func split(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// Apps returns the applications sorted by relpath.
func (t *Table) Apps() []App { return append([]App(nil), t.apps...) }

// Relpath returns the relpath of the named application.
func (t *Table) Relpath(app string) (string, bool) {
	r, ok := t.byName[app]
	return r, ok
}

// AppAt returns the application whose relpath is exactly p.
func (t *Table) AppAt(p string) (string, bool) {
	a, ok := t.byRel[p]
	return a, ok
}

// Children lists, sorted, the routed names directly under a root or
// synthetic directory (and, for an application root with nested
// applications, the nested relpath segments).
func (t *Table) Children(dir string) []string {
	return t.children[dir]
}

// Classify says what the virtual path p is. The innermost application wins
// when relpaths nest ("www.softxs.ch" and "www.softxs.ch/blog").
func (t *Table) Classify(p string) Place {
	if p == "" {
		return Place{Kind: Root}
	}
	if a, ok := t.byRel[p]; ok {
		return Place{Kind: AppRoot, App: a}
	}
	for q := p; ; {
		i := strings.LastIndexByte(q, '/')
		if i < 0 {
			break
		}
		q = q[:i]
		if a, ok := t.byRel[q]; ok {
			return Place{Kind: InApp, App: a}
		}
	}
	if _, ok := t.children[p]; ok {
		return Place{Kind: Synthetic}
	}
	return Place{Kind: Absent}
}

// Within reports whether virtual path p is dir itself or below it.
func Within(dir, p string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// SymlinkCheck decides whether a symlink with the given target may be
// created in the directory linkDir (a virtual path) of the application at
// appRelpath. hostAppDir is the absolute backing directory of that
// application on the host: the symlink is stored there, so an absolute
// target is judged as the host would resolve it.
//
// A target is accepted when it stays inside the application however the
// tree around it changes later: ".." may only appear as a leading run
// (resolved lexically from the link's real directory), never after a
// name, because a name may be (or later become) a symlink, after which
// ".." climbs from wherever that symlink led. With that rule every
// symlink of the application resolves inside it, by induction on the
// resolution depth. It returns nil or an error explaining the refusal.
func SymlinkCheck(appRelpath, linkDir, hostAppDir, target string) error {
	if target == "" {
		return fmt.Errorf("empty symlink target")
	}
	if strings.IndexByte(target, 0) >= 0 {
		return fmt.Errorf("symlink target %q contains NUL", target)
	}
	segs := strings.Split(target, "/")
	if strings.HasPrefix(target, "/") {
		if hostAppDir == "" || !strings.HasPrefix(hostAppDir, "/") {
			return fmt.Errorf("absolute symlink target %q: no host directory to judge it against", target)
		}
		rest, ok := strings.CutPrefix(path.Clean(target), path.Clean(hostAppDir))
		if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
			return fmt.Errorf("absolute symlink target %q is outside the application directory %s", target, hostAppDir)
		}
		for _, s := range segs {
			if s == ".." {
				return fmt.Errorf("absolute symlink target %q contains '..'", target)
			}
		}
		return nil
	}
	base := linkDir
	seenName := false
	for _, s := range segs {
		switch s {
		case "", ".":
			continue
		case "..":
			if seenName {
				return fmt.Errorf("symlink target %q has '..' after a name; it could climb out of %s through another symlink", target, appRelpath)
			}
			if base == "" {
				return fmt.Errorf("symlink target %q leaves the mount", target)
			}
			base, _ = split(base)
			if !Within(appRelpath, base) {
				return fmt.Errorf("symlink target %q leaves the application directory %s", target, appRelpath)
			}
		default:
			seenName = true
		}
	}
	if !Within(appRelpath, base) {
		return fmt.Errorf("symlink in %q is outside the application directory %s", linkDir, appRelpath)
	}
	return nil
}

// Verdict is the outcome of a confinement check, with the errno a kernel
// filesystem would return for it.
type Verdict syscall.Errno

// Verdicts of RenameCheck.
const (
	Allow Verdict = 0
	// CrossApp: the rename would move data between applications. EXDEV,
	// so mv falls back to copy and delete (both allowed, each in its app).
	CrossApp = Verdict(syscall.EXDEV)
	// OutOfTree: source or target is not inside an application, or is an
	// application's own directory. EACCES, as for any creation there.
	OutOfTree = Verdict(syscall.EACCES)
)

// RenameCheck decides a rename (or a hard link, which the mount refuses
// anyway) from virtual path src to dst.
func (t *Table) RenameCheck(src, dst string) Verdict {
	ps, pd := t.Classify(src), t.Classify(dst)
	if ps.Kind != InApp || pd.Kind != InApp {
		return OutOfTree
	}
	// Moving a directory that holds a nested application's directory
	// would carry that application's data along.
	for _, a := range t.apps {
		if strings.HasPrefix(a.Relpath, src+"/") {
			return OutOfTree
		}
	}
	if ps.App != pd.App {
		return CrossApp
	}
	return Allow
}

// MknodCheck allows regular files only: device nodes would give a VM raw
// access to host devices, FIFOs and sockets have no backup meaning.
func MknodCheck(mode uint32) syscall.Errno {
	if mode&syscall.S_IFMT == syscall.S_IFREG || mode&syscall.S_IFMT == 0 {
		return 0
	}
	return syscall.EPERM
}

// NeedsPrivateCopy reports whether a backing file must be replaced by a
// private copy before it is changed in place. The mount refuses hard
// links, so a regular file with more than one link shares its inode with
// a snapshot (or with something the host linked): changing it in place
// would change history too. Directories and symlinks are never shared.
func NeedsPrivateCopy(mode uint32, nlink uint64) bool {
	return mode&syscall.S_IFMT == syscall.S_IFREG && nlink > 1
}
