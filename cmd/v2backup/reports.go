package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// reportSource is the reports this machine answers for: its own
// applications if it is a host (from own, its catalog), then each host it
// pulls if it is a backup server, from the catalog that host shipped with
// its last good pull. inv is read on every call, so a daemon's SIGHUP
// reload shows at once.
func reportSource(inv func() *inventory.Inventory, server tiers.Server, own *catalog.DB) report.Source {
	return func(ctx context.Context) ([]*report.Report, error) {
		in := inv()
		var out []*report.Report
		if in.IsHost(server) {
			r, err := report.Build(ctx, report.Options{Inventory: in, Server: server, DB: own})
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		bs, ok := in.BackupServer(server)
		if !ok {
			return out, nil
		}
		for _, host := range bs.Pulls {
			if host == server {
				continue // a machine that pulls itself: already reported
			}
			r, err := hostReport(ctx, in, server, host, own)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
}

// hostReport is the report of a pulled host, from the catalog it
// shipped. A host never pulled yet (no file) is reported with every
// application Never and the reason; an unreadable file is an error.
func hostReport(ctx context.Context, inv *inventory.Inventory, server, host tiers.Server, own *catalog.DB) (*report.Report, error) {
	o := report.Options{Inventory: inv, Server: host, Own: own}
	db, path, err := openHostCatalog(inv, server, host)
	switch {
	case err != nil:
		return nil, fmt.Errorf("report of %s: %w", host, err)
	case db == nil:
		o.Missing = fmt.Sprintf("no catalog of %s at %s yet: no good pull since v2backup ships catalogs", host, path)
	default:
		defer db.Close()
		o.DB = db
	}
	return report.Build(ctx, o)
}

// openHostCatalog opens, read-only, the catalog host shipped to backup
// server server with its last good pull, at path. A host not pulled since
// v2backup ships catalogs has none: db and err are both nil.
func openHostCatalog(inv *inventory.Inventory, server, host tiers.Server) (db *catalog.DB, path string, err error) {
	path = inv.Partition(server).HostCatalog(host)
	db, err = catalog.OpenReadOnly(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, nil
	}
	return db, path, err
}
