package main

import (
	"strings"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// openCatalog opens the catalog of server named by the inventory and
// records the inventory's applications in it.
func openCatalog(g *globalOptions, inv *inventory.Inventory, server tiers.Server) (*catalog.DB, error) {
	db, err := catalog.Open(inv.CatalogPath(server), catalog.WithLogger(g.log))
	if err != nil {
		return nil, err
	}
	return db, nil
}

// catalogApps is the inventory's applications as catalog rows.
func catalogApps(inv *inventory.Inventory) []catalog.Application {
	out := make([]catalog.Application, len(inv.Apps))
	for i, a := range inv.Apps {
		out[i] = catalog.Application{Name: a.Name, Server: string(a.Server), VM: string(a.VM), Relpath: string(a.Relpath),
			Type: string(a.Type), Description: a.Description, Status: a.Status}
	}
	return out
}

// appAttributor maps a local-tier path ("web/demo.softxs.ch/hydro/x") to
// the application of server that owns it.
func appAttributor(inv *inventory.Inventory, server tiers.Server) func(string) string {
	apps := inv.AppsOn(server, "")
	return func(p string) string {
		for _, a := range apps {
			prefix := tiers.TierPath(a.VM, a.Relpath)
			if p == prefix || strings.HasPrefix(p, prefix+"/") {
				return a.Name
			}
		}
		return ""
	}
}

// hostOnly checks that server is a host of the inventory.
func hostOnly(inv *inventory.Inventory, server tiers.Server, cmd string) error {
	if !inv.IsHost(server) {
		return usagef("%s: %s is not a host in %s (use --server)", cmd, server, inv.File)
	}
	return nil
}
