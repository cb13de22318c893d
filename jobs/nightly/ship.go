package nightly

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
)

// ShippedKeep is how many catalog exports ShipCatalog keeps: the remote
// view shows one of the newest snapshots, so older exports serve nobody.
const ShippedKeep = 3

// ShippedDir is where a host keeps the catalog exports its remote view
// serves as CATALOG.db: {partition}/.v2backup/shipped, one {snapshot}.db
// per local-tier snapshot.
func ShippedDir(p tiers.Partition) string { return filepath.Join(p.StateDir(), "shipped") }

// ShippedCatalog is the export of the catalog taken with snapshot name.
func ShippedCatalog(p tiers.Partition, name string) string {
	return filepath.Join(ShippedDir(p), name+".db")
}

// afterCommit runs once the snapshot is in the catalog: each
// application's digest is stored with it, and on a host the catalog is
// exported for its backup servers (the remote view serves it with the
// snapshot).
func (o *Options) afterCommit(ctx context.Context, snap catalog.Snapshot, apps []app) error {
	prefixes := make(map[string]string, len(apps))
	for _, a := range apps {
		prefixes[a.name] = a.path
	}
	err := o.DB.StoreAppDigests(ctx, snap.ID, prefixes)
	if err != nil {
		err = fmt.Errorf("snapshot %s: application digests: %w", snap.Name, err)
	}
	if o.Tier != tiers.Local {
		return err
	}
	part := o.Inv.Partition(o.Server)
	if e := ShipCatalog(ctx, o.DB, part, snap.Name); e != nil {
		return e
	}
	return err
}

// ShipCatalog exports db as the catalog of snapshot name and removes all
// but the ShippedKeep newest exports.
func ShipCatalog(ctx context.Context, db *catalog.DB, part tiers.Partition, name string) error {
	dst := ShippedCatalog(part, name)
	if err := db.ExportTo(ctx, dst); err != nil {
		return fmt.Errorf("snapshot %s: shipping the catalog: %w", name, err)
	}
	dir := ShippedDir(part)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("snapshot %s: pruning shipped catalogs: %w", name, err)
	}
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".db"); ok && e.Type().IsRegular() {
			if _, err := tiers.ParseSnapshotName(n, time.UTC); err == nil {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	for len(names) > ShippedKeep {
		if err := os.Remove(filepath.Join(dir, names[0])); err != nil {
			return fmt.Errorf("snapshot %s: pruning shipped catalogs: %w", name, err)
		}
		names = names[1:]
	}
	return nil
}
