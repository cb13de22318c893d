package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

type inventoryOptions struct {
	VM   string
	JSON bool
}

func init() { commands = append(commands, newInventoryCommand) }

func newInventoryCommand(g *globalOptions) *cobra.Command {
	var o inventoryOptions
	c := &cobra.Command{
		Use:   "inventory [--server S] [--vm V] [--json]",
		Short: "Validate the inventory and print its applications with their backup paths",
		Long: `Validates the inventory and prints the applications as the seed's summary
table (Description, Server, VM, Local path, Relpath, Type, Status) with each
one's local backup path and its remote backup paths on the backup servers that
pull its server. Without --server every server's applications are listed.
An invalid inventory prints file:line:column, field and reason, and exits 2.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("server") {
				g.Server = ""
			}
			return runInventory(g, o)
		},
	}
	c.Flags().StringVar(&o.VM, "vm", "", "only this VM's applications ("+string(tiers.NoVM)+" for those with no VM)")
	c.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	return c
}

// appRow is one application with its paths, as inventory prints it.
type appRow struct {
	Name          string       `json:"name"`
	Description   string       `json:"description"`
	Server        string       `json:"server"`
	VM            string       `json:"vm"`
	LocalPath     string       `json:"local_path"`
	Relpath       string       `json:"relpath"`
	Type          string       `json:"type"`
	Status        string       `json:"status"`
	LocalBackup   string       `json:"local_backup"`
	RemoteBackups []remotePath `json:"remote_backups"`
}

type remotePath struct {
	BackupServer string `json:"backup_server"`
	Path         string `json:"path"`
}

func runInventory(g *globalOptions, o inventoryOptions) error {
	inv, err := g.loadInventory()
	if err != nil {
		return err
	}
	if g.Server != "" {
		if _, ok := inv.Server(tiers.Server(g.Server)); !ok {
			return usagef("--server %s: no such server in %s", g.Server, inv.File)
		}
	}
	var rows []appRow
	for i := range inv.Apps {
		a := &inv.Apps[i]
		if g.Server != "" && string(a.Server) != g.Server || o.VM != "" && string(a.VM) != o.VM {
			continue
		}
		rows = append(rows, appRowOf(inv, a))
	}
	if o.JSON {
		if rows == nil {
			rows = []appRow{}
		}
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DESCRIPTION\tSERVER\tVM\tLOCAL PATH\tRELPATH\tTYPE\tSTATUS\tLOCAL BACKUP\tREMOTE BACKUPS")
	for _, r := range rows {
		var remotes []string
		for _, rp := range r.RemoteBackups {
			remotes = append(remotes, rp.BackupServer+":"+rp.Path)
		}
		if remotes == nil {
			remotes = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Description, r.Server, r.VM, r.LocalPath,
			r.Relpath, r.Type, r.Status, r.LocalBackup, strings.Join(remotes, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%d applications; inventory %s is valid\n", len(rows), inv.File)
	return nil
}

func appRowOf(inv *inventory.Inventory, a *inventory.App) appRow {
	r := appRow{
		Name: a.Name, Description: a.Description, Server: string(a.Server), VM: string(a.VM),
		LocalPath: a.Path, Relpath: string(a.Relpath), Type: string(a.Type), Status: a.Status,
		LocalBackup:   inv.Partition(a.Server).Local(a.VM, a.Relpath),
		RemoteBackups: []remotePath{},
	}
	for _, bs := range pullersOf(inv, a.Server) {
		r.RemoteBackups = append(r.RemoteBackups, remotePath{string(bs.Name), inv.Partition(bs.Name).Remote(a.Server, a.VM, a.Relpath)})
	}
	return r
}

// pullersOf lists the backup servers that pull server, in inventory order.
func pullersOf(inv *inventory.Inventory, server tiers.Server) []*inventory.BackupServer {
	var out []*inventory.BackupServer
	for i := range inv.BackupServers {
		bs := &inv.BackupServers[i]
		for _, p := range bs.Pulls {
			if p == server {
				out = append(out, bs)
				break
			}
		}
	}
	return out
}
