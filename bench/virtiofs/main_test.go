package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTreeTar(t *testing.T) {
	b, total, err := treeTar(250)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(b))
	files, dirs := 0, 0
	var sum int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			dirs++
		case tar.TypeReg:
			files++
			sum += h.Size
		}
	}
	if files != 250 || dirs != 3 || sum != total {
		t.Errorf("tree: %d files, %d dirs, %d bytes (reported %d); want 250, 3", files, dirs, sum, total)
	}
}

func TestCheckLanded(t *testing.T) {
	dir := t.TempDir()
	if err := checkLanded(dir, 10, 1); err == nil || !strings.Contains(err.Error(), "big") {
		t.Errorf("nothing written: %v, want an error naming big", err)
	}
	for _, n := range []string{"big", "big-direct"} {
		if err := os.WriteFile(filepath.Join(dir, n), make([]byte, 10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkLanded(dir, 11, 1); err == nil || !strings.Contains(err.Error(), "10 bytes, want 11") {
		t.Errorf("short file: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tree", "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tree", "d", "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkLanded(dir, 10, 2); err == nil || !strings.Contains(err.Error(), "holds 1 files, want 2") {
		t.Errorf("missing files: %v", err)
	}
	if err := checkLanded(dir, 10, 1); err != nil {
		t.Errorf("complete: %v", err)
	}
}
