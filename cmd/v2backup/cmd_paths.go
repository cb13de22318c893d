package main

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/tiers"
)

func init() { commands = append(commands, newPathsCommand) }

func newPathsCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "paths APP",
		Short: "Print every path of one application at every tier",
		Long: `Prints where an application's data lives: its own directory, the
well-known backup directory inside its VM, the host mount, the local tier,
local snapshots and history view, the remote view, each backup server's
remote tier and snapshots, history files and off-site drives. {snapshot},
{yyyymmdd} and {drive} stand for the parts that vary.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runPaths(g, args[0]) },
	}
}

func runPaths(g *globalOptions, name string) error {
	inv, err := g.loadInventory()
	if err != nil {
		return err
	}
	a, ok := inv.App(name)
	if !ok {
		return usagef("no application %q in %s", name, inv.File)
	}
	srv, _ := inv.Server(a.Server)
	p := inv.Partition(a.Server)
	rel := string(a.Relpath)
	tierPath := tiers.TierPath(a.VM, a.Relpath)
	host := string(a.Server) + ":"
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	line("application", fmt.Sprintf("%s (%s), type %s", a.Name, a.Description, a.Type))
	if a.VM == tiers.NoVM {
		line("source", host+a.Path)
		line("host mount", host+filepath.Join(srv.HostMount, rel))
	} else {
		vm, _ := inv.VM(a.Server, a.VM)
		line("source", string(a.VM)+":"+a.Path)
		line("in VM", string(a.VM)+":"+filepath.Join(vm.GuestDir, rel))
		line("history in VM", string(a.VM)+":"+filepath.Join(vm.GuestDir, ".history", "{snapshot}", rel))
		line("host mount", host+filepath.Join(vm.Mount, rel))
	}
	line("local tier", host+p.Local(a.VM, a.Relpath))
	line("local snapshots", host+p.SnapshotLocal("{snapshot}", a.VM, a.Relpath))
	line("remote view", host+filepath.Join(srv.RemoteView, tierPath))
	line("history file", host+filepath.Join(inv.HistoryDir(a.Server), "backup-"+a.Name+"-{yyyymmdd}"))
	for _, bs := range pullersOf(inv, a.Server) {
		bp := inv.Partition(bs.Name)
		bhost := string(bs.Name) + ":"
		line("remote tier", bhost+bp.Remote(a.Server, a.VM, a.Relpath))
		line("remote snapshots", bhost+filepath.Join(bp.Snapshot(tiers.Remote, "{snapshot}"), string(a.Server), tierPath))
		line("remote history file", bhost+filepath.Join(inv.HistoryDir(bs.Name), "backup-"+a.Name+"-{yyyymmdd}"))
	}
	line("off-site", filepath.Join("{drive}", "v2backup", string(a.Server), string(tiers.Local), tierPath))
	return tw.Flush()
}
