// Package vm boots a real QEMU guest for v2backup's integration tests and
// benchmarks: Debian's kernel, an initramfs built on the fly (static
// busybox, the kernel's virtio/fuse/virtiofs/9p modules, rsync and its
// libraries) and an /init script supplied by the caller, which reports on
// the serial console.
package vm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// VirtiofsModules are the kernel modules that mount -t virtiofs needs, in
// load order.
var VirtiofsModules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
	"virtio_pci", "fuse", "virtiofs",
}

// NinePModules are the modules for QEMU's own 9p share (-virtfs), in load
// order, after VirtiofsModules.
var NinePModules = []string{"netfs", "fscache", "9pnet", "9pnet_virtio", "9p"}

// Kernel is an installed Debian kernel: its image and module tree.
type Kernel struct {
	Image      string // /boot/vmlinuz-VERSION
	ModulesDir string // /lib/modules/VERSION
}

// FindKernel returns the newest /boot/vmlinuz-* that has its modules
// installed (the guest kernel, not necessarily the host's).
func FindKernel() (Kernel, error) {
	images, err := filepath.Glob("/boot/vmlinuz-*")
	if err != nil {
		return Kernel{}, err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(images)))
	for _, img := range images {
		ver := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		mods := filepath.Join("/lib/modules", ver)
		if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err == nil {
			return Kernel{Image: img, ModulesDir: mods}, nil
		}
	}
	return Kernel{}, fmt.Errorf("no /boot/vmlinuz-* with a /lib/modules/VERSION/modules.dep (found %v): install linux-image-amd64", images)
}

// ModulePath returns the file of module name (e.g. "virtio_pci") in the
// kernel's modules.dep.
func (k Kernel) ModulePath(name string) (string, error) {
	f, err := os.Open(filepath.Join(k.ModulesDir, "modules.dep"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		rel, _, _ := strings.Cut(sc.Text(), ":")
		base := path.Base(rel)
		if stripModuleExt(base) == name || stripModuleExt(base) == strings.ReplaceAll(name, "_", "-") {
			return filepath.Join(k.ModulesDir, rel), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("module %s not in %s/modules.dep", name, k.ModulesDir)
}

func stripModuleExt(name string) string {
	for _, suf := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		if s, ok := strings.CutSuffix(name, suf); ok {
			return s
		}
	}
	return name
}

// readModule returns the module's ELF bytes: busybox insmod does not
// decompress.
func readModule(p string) ([]byte, error) {
	var cmd *exec.Cmd
	switch {
	case strings.HasSuffix(p, ".xz"):
		cmd = exec.Command("xz", "--decompress", "--stdout", p)
	case strings.HasSuffix(p, ".zst"):
		cmd = exec.Command("zstd", "--decompress", "--stdout", p)
	case strings.HasSuffix(p, ".gz"):
		cmd = exec.Command("gzip", "--decompress", "--stdout", p)
	default:
		return os.ReadFile(p)
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("decompress module %s with %s: %w", p, cmd.Path, err)
	}
	return out, nil
}

// Initramfs describes the guest's root file system.
type Initramfs struct {
	Kernel  Kernel
	Modules []string // names, in load order; the init script loads them from /lib/modules/NAME.ko
	// Binaries are host programs copied to the same path with the shared
	// libraries ldd lists for them.
	Binaries []string
	Init     string            // the /init script (busybox sh)
	Files    map[string][]byte // extra files, by absolute guest path
}

// Write builds the initramfs as an uncompressed newc cpio archive at dst.
func (ir Initramfs) Write(dst string) error {
	w := newCpio()
	for _, d := range []string{"/bin", "/sbin", "/usr", "/usr/bin", "/usr/sbin", "/lib", "/lib64",
		"/lib/modules", "/etc", "/proc", "/sys", "/dev", "/tmp", "/backup", "/p9", "/root"} {
		w.dir(d, 0o755)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("busybox not found: install busybox-static: %w", err)
	}
	if err := requireStatic(bb); err != nil {
		return err
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	w.file("/bin/busybox", 0o755, data)
	w.symlink("/bin/sh", "busybox")

	for _, m := range ir.Modules {
		p, err := ir.Kernel.ModulePath(m)
		if err != nil {
			return err
		}
		data, err := readModule(p)
		if err != nil {
			return err
		}
		w.file("/lib/modules/"+m+".ko", 0o644, data)
	}

	for _, b := range ir.Binaries {
		files, err := withLibraries(b)
		if err != nil {
			return err
		}
		for _, f := range files {
			if w.files[path.Clean(f)] {
				continue // a library another binary brought
			}
			data, err := os.ReadFile(f) // follows the lib symlink: one regular file per name
			if err != nil {
				return err
			}
			w.file(f, 0o755, data)
		}
	}
	w.file("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	w.file("/etc/group", 0o644, []byte("root:x:0:\n"))
	for p, data := range ir.Files {
		w.file(p, 0o644, data)
	}
	w.file("/init", 0o755, []byte(ir.Init))

	out, err := w.finish()
	if err != nil {
		return err
	}
	return os.WriteFile(dst, out, 0o644)
}

func requireStatic(bin string) error {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err == nil && !bytes.Contains(out, []byte("not a dynamic executable")) && !bytes.Contains(out, []byte("statically linked")) {
		return fmt.Errorf("%s is dynamically linked: install busybox-static", bin)
	}
	return nil
}

// withLibraries returns bin and the absolute paths of the shared libraries
// ldd lists for it (the dynamic loader included).
func withLibraries(bin string) ([]string, error) {
	p, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%s not found: %w", bin, err)
	}
	out, err := exec.Command("ldd", p).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", p, err)
	}
	files := []string{p}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		for i, f := range fields {
			if strings.HasPrefix(f, "/") && (i == 0 || fields[i-1] == "=>") {
				files = append(files, f)
			}
		}
	}
	return files, nil
}

// cpio writes a newc ("070701") archive, the format the kernel unpacks.
type cpio struct {
	buf   bytes.Buffer
	ino   int
	dirs  map[string]bool
	files map[string]bool // non-directories
	err   error
}

func newCpio() *cpio {
	return &cpio{ino: 1, dirs: map[string]bool{"/": true}, files: map[string]bool{}}
}

func (c *cpio) entry(name string, mode uint32, data []byte) {
	if c.err != nil {
		return
	}
	name = strings.TrimPrefix(path.Clean(name), "/")
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.buf.WriteString(hdr)
	c.buf.WriteString(name)
	c.buf.WriteByte(0)
	c.pad()
	c.buf.Write(data)
	c.pad()
}

func (c *cpio) pad() {
	for c.buf.Len()%4 != 0 {
		c.buf.WriteByte(0)
	}
}

// parents adds the missing directories above p.
func (c *cpio) parents(p string) {
	d := path.Dir(path.Clean(p))
	if c.dirs[d] {
		return
	}
	if c.files[d] {
		c.err = fmt.Errorf("initramfs: %s is both a directory and a file", d)
		return
	}
	c.parents(d)
	c.dirs[d] = true
	c.entry(d, 0o040000|0o755, nil)
}

func (c *cpio) dir(p string, perm uint32) {
	c.parents(p)
	if c.dirs[p] {
		return
	}
	if c.files[p] {
		c.err = fmt.Errorf("initramfs: %s is both a directory and a file", p)
		return
	}
	c.dirs[p] = true
	c.entry(p, 0o040000|perm, nil)
}

func (c *cpio) file(p string, perm uint32, data []byte) {
	c.nondir(p, 0o100000|perm, data)
}

func (c *cpio) symlink(p, target string) {
	c.nondir(p, 0o120000|0o777, []byte(target))
}

// nondir adds a file or symlink; a later entry of the same name replaces
// it (the kernel unpacks in order).
func (c *cpio) nondir(p string, mode uint32, data []byte) {
	p = path.Clean(p)
	if c.dirs[p] {
		c.err = fmt.Errorf("initramfs: %s is both a directory and a file", p)
		return
	}
	c.parents(p)
	c.files[p] = true
	c.entry(p, mode, data)
}

func (c *cpio) finish() ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	c.entry("TRAILER!!!", 0, nil)
	return c.buf.Bytes(), nil
}

// errNoMarker is returned when the guest stopped before printing a marker.
var errNoMarker = errors.New("marker not seen")
