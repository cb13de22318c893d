// Command v2backup is every tier's backup tool: the host daemon that mounts
// each VM's backup directory, the application jobs that write into it, the
// snapshots, the backup servers' pulls, the off-site copies and the
// operators' reports.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/inventory"
)

// Exit codes; part of the interface, documented in the README.
const (
	exitOK     = 0 // the operation succeeded
	exitFailed = 1 // the operation failed
	exitUsage  = 2 // bad usage or bad configuration
)

// defaultConfig is the inventory's place unless --config or V2BACKUP_CONFIG says otherwise.
const defaultConfig = "/etc/v2backup/v2backup.toml"

// globalOptions are the flags every subcommand has.
type globalOptions struct {
	Config  string
	Server  string
	Verbose bool

	stdout, stderr io.Writer
	log            *slog.Logger
}

// usageError is bad usage: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// exitCodeError carries an explicit exit code (e.g. a Nagios plugin state).
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}
func (e exitCodeError) Unwrap() error { return e.err }

// exitCode maps an error to the process's exit status, in one place.
func exitCode(err error) int {
	var ec exitCodeError
	var ue usageError
	var ie *inventory.Error
	var ies inventory.Errors
	var ne *tiers.NameError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ec):
		return ec.code
	case errors.As(err, &ue), errors.As(err, &ie), errors.As(err, &ies), errors.As(err, &ne):
		return exitUsage
	case strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "unknown flag"),
		strings.HasPrefix(err.Error(), "unknown shorthand flag"), strings.Contains(err.Error(), "flag needs an argument"),
		strings.HasPrefix(err.Error(), "invalid argument"), strings.Contains(err.Error(), "accepts "),
		strings.Contains(err.Error(), "requires at least"):
		// cobra's own argument and flag errors.
		return exitUsage
	}
	return exitFailed
}

func newRootCommand(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   "v2backup",
		Short: "Backups for V2 hosts, VMs, backup servers and off-site drives",
		Long: `v2backup does every tier's job of the V2 backup system: the host daemon
(serve) that mounts each VM's backup directory, the application jobs (backup),
snapshots and history, backup-server pulls, off-site copies, and reports.

Every host reads the same inventory (--config) and acts on its own rows
(--server, default this host's FQDN).`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			// The daemon logs what it does; a command prints its result
			// and logs only warnings unless -v.
			level := slog.LevelWarn
			if cmd.Name() == "serve" {
				level = slog.LevelInfo
			}
			if g.Verbose {
				level = slog.LevelDebug
			}
			g.log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
			if g.Server == "" {
				g.Server = hostFQDN()
			}
			return nil
		},
	}
	config := os.Getenv("V2BACKUP_CONFIG")
	if config == "" {
		config = defaultConfig
	}
	root.PersistentFlags().StringVar(&g.Config, "config", config, "inventory file (env V2BACKUP_CONFIG)")
	root.PersistentFlags().StringVar(&g.Server, "server", "", "act as this server (default: this host's FQDN)")
	root.PersistentFlags().BoolVarP(&g.Verbose, "verbose", "v", false, "log debug messages")
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err.Error()} })
	for _, add := range commands {
		root.AddCommand(add(g))
	}
	return root
}

// commands holds one constructor per subcommand file (cmd_*.go).
var commands []func(*globalOptions) *cobra.Command

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes a command line and returns the exit code; tests call it.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := &globalOptions{stdout: stdout, stderr: stderr}
	root := newRootCommand(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	code := exitCode(err)
	if err != nil && err.Error() != "" {
		fmt.Fprintf(stderr, "v2backup: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "Run 'v2backup help' for usage.")
		}
	}
	return code
}

func isConfigError(err error) bool {
	var ie *inventory.Error
	var ies inventory.Errors
	var ne *tiers.NameError
	return errors.As(err, &ie) || errors.As(err, &ies) || errors.As(err, &ne)
}

// hostFQDN is this host's fully qualified name: the kernel's host name, or
// the canonical name DNS gives for it when that has no dot.
func hostFQDN() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	if strings.Contains(h, ".") {
		return h
	}
	if cname, err := net.LookupCNAME(h); err == nil && strings.Contains(strings.TrimSuffix(cname, "."), ".") {
		return strings.TrimSuffix(cname, ".")
	}
	return h
}

// loadInventory loads the inventory named by --config.
// Any failure to load it (missing, unreadable, invalid) is a configuration
// error: exit 2.
func (g *globalOptions) loadInventory() (*inventory.Inventory, error) {
	inv, err := inventory.Load(g.Config)
	if err != nil && !isConfigError(err) {
		return nil, exitCodeError{code: exitUsage, err: err}
	}
	return inv, err
}

// inventoryAndServer loads the inventory, then validates --server: a broken
// or missing inventory is the more useful message.
func (g *globalOptions) inventoryAndServer() (*inventory.Inventory, tiers.Server, error) {
	inv, err := g.loadInventory()
	if err != nil {
		return nil, "", err
	}
	s, err := g.server()
	return inv, s, err
}

// server is --server, validated.
func (g *globalOptions) server() (tiers.Server, error) {
	s, err := tiers.ParseServer(g.Server)
	if err != nil {
		return "", usagef("--server: %v", err)
	}
	return s, nil
}
