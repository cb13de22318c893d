package pull

import (
	"fmt"
	"path/filepath"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/pull/sums"
	"github.com/softxs/v2backup/tiers"
)

// verifyCatalog checks the host's catalog pulled into staging against the
// hash SNAPSHOT.json gives for it. After the switch it is
// {partition}/remote/{host}/CATALOG.db (tiers.Partition.HostCatalog).
func verifyCatalog(staging string, desc sums.Description) error {
	if desc.Catalog != "" && desc.Catalog != tiers.ShippedCatalogName {
		return fmt.Errorf("%s names the catalog %q; want %q", sums.DescName, desc.Catalog, tiers.ShippedCatalogName)
	}
	p := filepath.Join(staging, tiers.ShippedCatalogName)
	got, _, err := catalog.FileSHA256(p)
	if err != nil {
		return fmt.Errorf("host catalog listed in %s: %w", sums.DescName, err)
	}
	if got != desc.CatalogSHA256 {
		return fmt.Errorf("host catalog %s: sha256 %s, %s says %s", p, got, sums.DescName, desc.CatalogSHA256)
	}
	return nil
}
