package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// FileSHA256 returns the SHA-256 (hex) of the regular file at path and
// its info, never following a symlink nor blocking on a FIFO. A file that
// is not regular, or whose size changed while it was read, is an error
// naming path. The host hashes a catalog export with it for SNAPSHOT.json,
// and a backup server checks the pulled copy with it.
func FileSHA256(path string) (string, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", nil, err
	}
	if !st.Mode().IsRegular() {
		return "", nil, fmt.Errorf("%s is not a regular file (%s)", path, st.Mode().Type())
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if n != st.Size() {
		return "", nil, fmt.Errorf("%s changed while it was hashed (%d bytes read, %d stat)", path, n, st.Size())
	}
	return hex.EncodeToString(h.Sum(nil)), st, nil
}
