package pull

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/softxs/v2backup/jobs/pull/sums"
	"github.com/softxs/v2backup/tiers"
	"golang.org/x/sys/unix"
)

// verifyCatalog checks the host's catalog pulled into staging against the
// hash SNAPSHOT.json gives for it. After the switch it is
// {partition}/remote/{host}/CATALOG.db (tiers.Partition.HostCatalog).
func verifyCatalog(staging string, desc sums.Description) error {
	if desc.Catalog != "" && desc.Catalog != tiers.ShippedCatalogName {
		return fmt.Errorf("%s names the catalog %q; want %q", sums.DescName, desc.Catalog, tiers.ShippedCatalogName)
	}
	p := filepath.Join(staging, tiers.ShippedCatalogName)
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("host catalog listed in %s: %w", sums.DescName, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("host catalog: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("host catalog %s is not a regular file (%s)", p, st.Mode().Type())
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("host catalog %s: %w", p, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != desc.CatalogSHA256 {
		return fmt.Errorf("host catalog %s: sha256 %s, %s says %s", p, got, sums.DescName, desc.CatalogSHA256)
	}
	return nil
}
