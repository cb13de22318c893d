package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/jobs"
	"github.com/softxs/v2backup/jobs/report"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

type backupOptions struct {
	All    bool
	VM     string
	Target string
}

func init() { commands = append(commands, newBackupCommand) }

func newBackupCommand(g *globalOptions) *cobra.Command {
	var o backupOptions
	c := &cobra.Command{
		Use:   "backup (APP... | --all [--vm VM]) [--target DIR]",
		Short: "Back up applications into the well-known backup directory with their real tools",
		Long: `Runs each application's backup job: databases dumped (mysqldump/mariadb-dump,
pg_dump) under a temporary name, verified and renamed into db/; files copied
with rsync; git repositories bundled and verified; CVS repositories copied
when no lock is held. The job writes into {target}/{relpath}: /backup inside a
VM (the host daemon's mount), the host mount for applications with no VM
(--target overrides). It reports its run in {relpath}/.v2backup-job, which the
host daemon records in the catalog.

--all backs up every application of one VM (--vm, default this host's short
name) or, with --vm ` + string(tiers.NoVM) + `, those of --server with no VM. A failed job
leaves the previous backup in place, says what failed and why, and the
command exits 1. Progress is shown on a terminal, nothing under cron.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBackup(cmd.Context(), g, o, args, cmd.Flags().Changed("server"))
		},
	}
	c.Flags().BoolVar(&o.All, "all", false, "every application of this VM")
	c.Flags().StringVar(&o.VM, "vm", "", "the VM whose applications --all means (default: this host's short name)")
	c.Flags().StringVar(&o.Target, "target", "", "the well-known directory (default: the VM's guest_dir or the server's host_mount)")
	return c
}

func runBackup(ctx context.Context, g *globalOptions, o backupOptions, names []string, serverSet bool) error {
	if !o.All && len(names) == 0 {
		return usagef("backup: name applications or give --all")
	}
	inv, err := g.loadInventory()
	if err != nil {
		return err
	}
	var apps []*inventory.App
	if o.All {
		server, vm, err := whereAmI(g, inv, o.VM, serverSet)
		if err != nil {
			return err
		}
		if apps, err = jobs.Select(inv, server, vm, nil, true); err != nil {
			return usagef("backup: %v", err)
		}
	} else {
		for _, n := range names {
			a, ok := inv.App(n)
			if !ok {
				return usagef("backup: no application %q in %s", n, inv.File)
			}
			apps = append(apps, a)
		}
	}
	jo := jobs.Options{Logger: g.log, Progress: jobs.ProgressTo(os.Stderr)}
	failed := 0
	for _, a := range apps {
		jo.Target = o.Target
		if jo.Target == "" {
			jo.Target = jobs.TargetDir(inv, a)
		}
		res, err := jobs.Backup(ctx, a, jo)
		if err != nil {
			failed++
			fmt.Fprintf(g.stderr, "v2backup: backup %v\n", err)
			continue
		}
		r := res.Record
		fmt.Fprintf(g.stdout, "%s: ok, %d files, %s, in %s -> %s\n", a.Name, r.Files, report.HumanBytes(r.Bytes),
			r.End.Sub(r.Start).Round(1e6), res.Dir)
	}
	if failed > 0 {
		return exitCodeError{code: exitFailed, err: fmt.Errorf("%d of %d backups failed", failed, len(apps))}
	}
	return nil
}

// whereAmI finds the server and VM whose applications --all means: --vm or
// this host's short name; the server is --server when given, else the one
// server that has such a VM.
func whereAmI(g *globalOptions, inv *inventory.Inventory, vmFlag string, serverSet bool) (tiers.Server, tiers.VM, error) {
	vmName := vmFlag
	if vmName == "" {
		h, _ := os.Hostname()
		vmName, _, _ = strings.Cut(h, ".")
	}
	vm, err := tiers.ParseVM(vmName)
	if err != nil {
		return "", "", usagef("--vm: %v", err)
	}
	if serverSet || vm == tiers.NoVM {
		s, err := g.server()
		return s, vm, err
	}
	var found []tiers.Server
	for _, v := range inv.VMs {
		if v.Name == vm {
			found = append(found, v.Server)
		}
	}
	switch len(found) {
	case 0:
		return "", "", usagef("backup: no VM %q in %s (use --vm)", vm, inv.File)
	case 1:
		return found[0], vm, nil
	}
	return "", "", usagef("backup: VM %q exists on several servers (%v): use --server", vm, found)
}
