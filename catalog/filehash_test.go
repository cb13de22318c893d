package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestFileSHA256(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "export.db")
	if err := os.WriteFile(p, []byte("catalog"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, st, err := FileSHA256(p)
	want := sha256.Sum256([]byte("catalog"))
	if err != nil || sum != hex.EncodeToString(want[:]) || st.Size() != 7 {
		t.Fatalf("FileSHA256 = %s, %v, %v", sum, st, err)
	}

	if err := os.Symlink(p, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := FileSHA256(filepath.Join(dir, "link")); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("a symlink: %v, want ELOOP (never followed)", err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := FileSHA256(filepath.Join(dir, "fifo")); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a FIFO: %v, want not a regular file (and no hang)", err)
	}
	if _, _, err := FileSHA256(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v, want ErrNotExist", err)
	}
}
