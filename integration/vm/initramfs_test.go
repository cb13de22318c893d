package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

type cpioEntry struct {
	mode uint32
	data []byte
}

// readNewc parses a newc archive the way the kernel does.
func readNewc(t *testing.T, b []byte) map[string]cpioEntry {
	t.Helper()
	out := map[string]cpioEntry{}
	off := 0
	field := func(i int) int {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("header at %d field %d: %v", off, i, err)
		}
		return int(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at %d: %q", off, b[off:off+6])
		}
		mode, size, namesize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		dataOff := align(off + 110 + namesize)
		if name == "TRAILER!!!" {
			return out
		}
		if _, dup := out[name]; dup {
			t.Errorf("%s twice in the archive", name)
		}
		out[name] = cpioEntry{uint32(mode), b[dataOff : dataOff+size]}
		off = align(dataOff + size)
	}
}

func TestInitramfs(t *testing.T) {
	k, err := FindKernel()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "initrd")
	ir := Initramfs{
		Kernel:   k,
		Modules:  VirtiofsModules,
		Binaries: []string{"rsync"},
		Init:     InitPrologue(VirtiofsModules) + "echo hi\n",
		Files:    map[string][]byte{"/deep/dir/file.txt": []byte("abc")},
	}
	if err := ir.Write(dst); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	ents := readNewc(t, b)
	for name, want := range map[string]uint32{
		"init": 0o100755, "bin/busybox": 0o100755, "bin/sh": 0o120777,
		"deep": 0o40755, "deep/dir": 0o40755, "deep/dir/file.txt": 0o100644,
		"lib/modules/virtiofs.ko": 0o100644, "usr/bin/rsync": 0o100755,
	} {
		e, ok := ents[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if e.mode != want {
			t.Errorf("%s mode %o, want %o", name, e.mode, want)
		}
	}
	if string(ents["deep/dir/file.txt"].data) != "abc" || string(ents["bin/sh"].data) != "busybox" {
		t.Errorf("file or symlink content wrong")
	}
	if !bytes.HasPrefix(ents["lib/modules/virtiofs.ko"].data, []byte("\x7fELF")) {
		t.Errorf("virtiofs.ko is not an ELF object (still compressed?)")
	}
	libs, err := withLibraries("rsync")
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) < 3 {
		t.Errorf("rsync libraries: %v", libs)
	}
	for _, l := range libs {
		if _, ok := ents[l[1:]]; !ok {
			t.Errorf("%s (needed by rsync) missing", l)
		}
	}

	bad := ir
	bad.Modules = []string{"no_such_module"}
	if err := bad.Write(dst); err == nil || !bytes.Contains([]byte(err.Error()), []byte("no_such_module")) {
		t.Errorf("unknown module: %v, want an error naming it", err)
	}
	bad = ir
	bad.Files = map[string][]byte{"/deep": []byte("x")}
	bad.Binaries = nil
	ir2 := bad
	ir2.Files["/deep/x"] = nil
	if err := ir2.Write(dst); err == nil {
		t.Errorf("a path that is both a file and a directory: no error")
	}
}

func TestResults(t *testing.T) {
	log := "junk\r\nV2B CP=0\r\n[  1.0] kernel V2B HISTORY=a b \nV2B noequals\n"
	got := Results(log, "V2B ")
	if got["CP"] != "0" || got["HISTORY"] != "a b" || len(got) != 2 {
		t.Errorf("Results = %v", got)
	}
}
