package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestDdBytesAndDuKiB(t *testing.T) {
	n, err := ddBytes([]byte("64+0 records in\n64+0 records out\n67108864 bytes (67 MB, 64 MiB) copied, 0.1 s, 600 MB/s\n"))
	if err != nil || n != 64<<20 {
		t.Errorf("ddBytes = %d, %v", n, err)
	}
	if _, err := ddBytes([]byte("dd: error reading 'x': Input/output error\n")); err == nil || !strings.Contains(err.Error(), "no byte count") {
		t.Errorf("ddBytes of an error: %v", err)
	}
	if k, err := duKiB([]byte("1234\t/x y\n")); err != nil || k != 1234 {
		t.Errorf("duKiB = %d, %v", k, err)
	}
	for _, in := range []string{"", "1234\n", "abc\t/x\n"} {
		if _, err := duKiB([]byte(in)); err == nil || !strings.Contains(err.Error(), "unexpected output") {
			t.Errorf("duKiB(%q) = %v", in, err)
		}
	}
}

func TestStdoutSink(t *testing.T) {
	var s stdoutSink
	line := strings.Repeat("a", 99) + "\n"
	for i := 0; i < 100; i++ {
		if n, err := io.WriteString(&s, line); n != 100 || err != nil {
			t.Fatal(n, err)
		}
	}
	if s.lines != 100 || len(s.head) != headMax || string(s.head[:100]) != line {
		t.Errorf("sink: %d lines, %d head bytes", s.lines, len(s.head))
	}
}

func TestExecTimed(t *testing.T) {
	res, err := execTimed(context.Background(), []string{"sh", "-c", "printf 'a\\nb\\n'; echo oops >&2"})
	if err != nil || res.lines != 2 || string(res.head) != "a\nb\n" || string(res.stderr) != "oops\n" || res.elapsed <= 0 {
		t.Errorf("execTimed = %+v, %v", res, err)
	}
	_, err = execTimed(context.Background(), []string{"sh", "-c", "echo disk on fire >&2; exit 4"})
	if err == nil || !strings.Contains(err.Error(), "exit status 4: disk on fire") || !strings.Contains(err.Error(), "sh -c") {
		t.Errorf("failing command: %v", err)
	}
}

func TestRemoveIfExists(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := removeIfExists(p); err != nil {
		t.Error(err)
	}
	if err := removeIfExists(p); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "d", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := removeIfExists(filepath.Join(dir, "d")); err == nil {
		t.Error("removing a non-empty directory succeeded")
	}
}

func TestWriteSmallFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "many")
	if err := writeSmallFiles(context.Background(), dir, 2500); err != nil {
		t.Fatal(err)
	}
	st, err := statTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 2500 || st.Dirs != 4 {
		t.Errorf("wrote %v", st)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "d0000", "f000000"))
	b, _ := os.ReadFile(filepath.Join(dir, "d0002", "f002499"))
	if len(a) < 1000 || string(a) == string(b) {
		t.Errorf("small files not distinct ~1 KiB: %d bytes", len(a))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := writeSmallFiles(ctx, dir, 10); err == nil {
		t.Error("cancelled writeSmallFiles succeeded")
	}
	if err := writeSmallFiles(context.Background(), "/proc/nope", 1); err == nil {
		t.Error("writeSmallFiles into /proc succeeded")
	}
}

// TestWorkloadsNative runs every workload for real on a native directory,
// then damages what each left behind and checks its verify catches it.
func TestWorkloadsNative(t *testing.T) {
	ctx := context.Background()
	cfg, err := parseFlags([]string{"-seq-mib", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	src, err := stageSource(ctx, makeTree(t, 120), filepath.Join(t.TempDir(), "src"), 0)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	c := &contender{name: nameNative, work: work, backingWork: work, log: testLogger()}
	wls := buildWorkloads(cfg, src)
	if len(wls) != len(allWorkloads) || wls[0].label != "seq write 2 MiB +fsync" || !strings.Contains(wls[2].label, "120 files") {
		t.Fatalf("workloads %v", wls)
	}
	byName := map[string]*workload{}
	results := map[string]execResult{}
	for round := 0; round < 2; round++ { // the second round starts over what the first left
		for _, w := range wls {
			byName[w.name] = w
			if w.roundSetup != nil {
				if err := w.roundSetup(ctx); err != nil {
					t.Fatal(err)
				}
			}
			s, err := runOne(ctx, w, c, round, testLogger())
			if err != nil {
				t.Fatalf("%s: %v", w.name, err)
			}
			if s.Seconds <= 0 || s.Round != round+1 {
				t.Errorf("%s: sample %+v", w.name, s)
			}
			if w.name == wlFind {
				res, err := execTimed(ctx, w.argv(c))
				if err != nil {
					t.Fatal(err)
				}
				results[w.name] = res
			}
		}
	}

	// Each verify must reject a result a broken mount could produce.
	seq := filepath.Join(work, seqFile)
	if err := os.Truncate(seq, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := byName[wlSeqWrite].verify(c, execResult{}); err == nil || !strings.Contains(err.Error(), "1048576 bytes after dd") {
		t.Errorf("short sequential file: %v", err)
	}
	if err := byName[wlSeqRead].verify(c, execResult{stderr: []byte("5 bytes (5 B) copied")}); err == nil || !strings.Contains(err.Error(), "dd read 5 bytes") {
		t.Errorf("short read: %v", err)
	}
	if err := byName[wlSeqRead].verify(c, execResult{}); err == nil {
		t.Error("read without dd statistics passed")
	}
	os.Remove(seq)
	if err := byName[wlSeqWrite].verify(c, execResult{}); err == nil {
		t.Error("missing sequential file passed")
	}
	if _, err := runOne(ctx, byName[wlSeqRead], c, 0, testLogger()); err == nil || !strings.Contains(err.Error(), seq) {
		t.Errorf("reading a missing file: %v, want an error naming %s", err, seq)
	}
	find := results[wlFind]
	find.lines--
	if err := byName[wlFind].verify(c, find); err == nil || !strings.Contains(err.Error(), "entries, the tree has") {
		t.Errorf("find missing an entry: %v", err)
	}
	if err := byName[wlDu].verify(c, execResult{head: []byte("1\t" + work + "\n")}); err == nil || !strings.Contains(err.Error(), "less than") {
		t.Errorf("du too small: %v", err)
	}
	if err := byName[wlDu].verify(c, execResult{head: []byte("garbage")}); err == nil {
		t.Error("du garbage passed")
	}
	for _, w := range []string{wlRsync, wlCp} {
		dir := filepath.Join(work, map[string]string{wlRsync: rsyncDir, wlCp: cpDir}[w])
		if err := os.Remove(filepath.Join(dir, "d1", "f001")); err != nil {
			t.Fatal(err)
		}
		if err := byName[w].verify(c, execResult{}); err == nil || !strings.Contains(err.Error(), "incomplete") {
			t.Errorf("%s missing a file: %v", w, err)
		}
	}
	// A failing prepare is reported as such.
	if err := os.MkdirAll(filepath.Join(seq, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := runOne(ctx, byName[wlSeqWrite], c, 0, testLogger()); err == nil || !strings.Contains(err.Error(), "prepare") {
		t.Errorf("prepare failure: %v", err)
	}
}

// TestMoveAside: a previous round's tree goes below .old (kept, not
// deleted), an absent one is no error, and a .old that is not a directory
// is reported.
func TestMoveAside(t *testing.T) {
	work := t.TempDir()
	if err := moveAside(work, cpDir); err != nil {
		t.Fatalf("absent tree: %v", err)
	}
	for round := 0; round < 2; round++ {
		if err := os.MkdirAll(filepath.Join(work, cpDir, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := moveAside(work, cpDir); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(work, cpDir)); !os.IsNotExist(err) {
			t.Errorf("round %d: %s still there: %v", round, cpDir, err)
		}
	}
	kept, err := filepath.Glob(filepath.Join(work, oldDir, cpDir+".*", cpDir, "d"))
	if err != nil || len(kept) != 2 {
		t.Errorf("kept trees %v (%v), want 2", kept, err)
	}
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, oldDir), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(bad, cpDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := moveAside(bad, cpDir); err == nil {
		t.Error("a file in the way of .old was not reported")
	}
}

// TestDropCaches: the pages of the files named are no longer cached
// afterwards (mincore), and a file that is not there is named.
func TestDropCaches(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(p); err != nil {
		t.Fatal(err)
	}
	resident := func() int {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		m, err := unix.Mmap(int(f.Fd()), 0, 1<<20, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(m)
		vec := make([]byte, (1<<20+os.Getpagesize()-1)/os.Getpagesize())
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			t.Fatal("mincore:", e)
		}
		n := 0
		for _, v := range vec {
			n += int(v & 1)
		}
		return n
	}
	if n := resident(); n == 0 {
		t.Skip("SKIP: the file's pages were not cached after reading it")
	}
	if err := dropCaches([]string{p}); err != nil {
		t.Fatal(err)
	}
	if n := resident(); n != 0 {
		t.Errorf("%d pages of %s still cached after dropCaches", n, p)
	}
	missing := filepath.Join(t.TempDir(), "gone")
	if err := dropCaches([]string{missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("dropCaches of a missing file: %v, want an error naming %s", err, missing)
	}
}
