package jobs

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/softxs/v2backup/tiers"
)

// DumpStamp is the time layout in dump names, {database}-{stamp}.sql.gz:
// sortable, no colons (like snapshot names).
const DumpStamp = "2006-01-02T150405"

// DumpDir is the directory of an application's backup tree that holds its
// database dumps.
const DumpDir = "db"

// The lines that end a complete dump.
const (
	mysqlDoneLine = "-- Dump completed"
	pgDoneLine    = "-- PostgreSQL database dump complete"
)

// MySQLDumpFlags are the flags of every MariaDB/MySQL dump after the
// option file: one consistent transaction, rows streamed, routines and
// triggers, no CREATE DATABASE (so a dump loads into any database name).
var MySQLDumpFlags = []string{"--single-transaction", "--quick", "--routines", "--triggers", "--default-character-set=utf8mb4"}

// PgDumpFlags are the flags of every pg_dump: plain SQL, objects owned by
// whoever loads it and no grants, so it loads into a duplicate as another
// role.
var PgDumpFlags = []string{"--no-owner", "--no-privileges"}

// creds holds a client's credentials in a private directory: a MariaDB
// option file or a libpq password file, never the command line.
type creds struct {
	dir  string
	args []string // leading arguments (mysql)
	env  []string // child environment (postgres)
}

// newCreds writes c's credentials 0600 in a fresh 0700 directory.
func newCreds(c *conn) (*creds, error) {
	dir, err := os.MkdirTemp("", "v2backup-cred-")
	if err != nil {
		return nil, err
	}
	cr := &creds{dir: dir}
	switch c.Adapter {
	case AdapterMySQL:
		var b strings.Builder
		b.WriteString("[client]\n")
		opt := func(k, v string) {
			if v != "" {
				fmt.Fprintf(&b, "%s=\"%s\"\n", k, mysqlOptEscape(v))
			}
		}
		opt("user", c.User)
		opt("password", c.Password)
		opt("host", c.Host)
		opt("socket", c.Socket)
		if c.Port != 0 {
			opt("port", strconv.Itoa(c.Port))
		}
		f := filepath.Join(dir, "client.cnf")
		if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
			cr.close()
			return nil, err
		}
		// --defaults-extra-file must come first on the command line.
		cr.args = []string{"--defaults-extra-file=" + f}
	case AdapterPostgres:
		f := filepath.Join(dir, "pgpass")
		line := "*:*:*:*:" + strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(c.Password) + "\n"
		if err := os.WriteFile(f, []byte(line), 0o600); err != nil {
			cr.close()
			return nil, err
		}
		cr.env = append(cr.env, "PGPASSFILE="+f)
		if c.Socket != "" {
			cr.env = append(cr.env, "PGHOST="+c.Socket)
		} else if c.Host != "" {
			cr.env = append(cr.env, "PGHOST="+c.Host)
		}
		if c.Port != 0 {
			cr.env = append(cr.env, "PGPORT="+strconv.Itoa(c.Port))
		}
		if c.User != "" {
			cr.env = append(cr.env, "PGUSER="+c.User)
		}
	default:
		cr.close()
		return nil, fmt.Errorf("adapter %q: want %s or %s", c.Adapter, AdapterMySQL, AdapterPostgres)
	}
	return cr, nil
}

func (cr *creds) close() { os.RemoveAll(cr.dir) }

func mysqlOptEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`, "\r", `\r`).Replace(s)
}

// dumpCommand is the program and arguments that dump c to stdout.
func dumpCommand(c *conn, cr *creds) (prog string, args, env []string, err error) {
	switch c.Adapter {
	case AdapterMySQL:
		if prog, err = firstTool("mariadb-dump", "mysqldump"); err != nil {
			return "", nil, nil, err
		}
		args = append(append(append([]string{}, cr.args...), MySQLDumpFlags...), c.Name)
		return prog, args, nil, nil
	case AdapterPostgres:
		if prog, err = firstTool("pg_dump"); err != nil {
			return "", nil, nil, err
		}
		return prog, append([]string{}, PgDumpFlags...), append(append([]string{}, cr.env...), "PGDATABASE="+c.Name), nil
	}
	return "", nil, nil, fmt.Errorf("adapter %q: want %s or %s", c.Adapter, AdapterMySQL, AdapterPostgres)
}

// withDump dumps c, then runs copies while the dump is read back and
// verified (the verification is CPU work, the copies mostly I/O), and
// returns the first failure: the dump's, else the copies'.
func (r *run) withDump(c *conn, copies func() error) error {
	step := "dump database " + c.Name
	var verify func() error
	if err := r.step(step, func() (err error) {
		verify, err = r.dump(c)
		return err
	}); err != nil {
		return err
	}
	cerr := copies()
	if err := verify(); err != nil {
		return &stepError{step, err}
	}
	return cerr
}

// dump writes a compressed dump of c into {dir}/db under .tmp-{name}, and
// returns a function that finishes it: the dump is read back whole and
// verified, renamed into place only then, and older dumps pruned. The
// verification runs in the background until that function is called. A
// failure leaves the previous dumps as they were.
func (r *run) dump(c *conn) (finish func() error, err error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	keep := r.app.KeepDumps
	if keep == 0 {
		keep = DefaultKeepDumps
	}
	if keep < 0 {
		return nil, fmt.Errorf("app %s: keep_dumps %d: must be at least 1", r.app.Name, keep)
	}
	dbdir := filepath.Join(r.dir, DumpDir)
	if err := os.MkdirAll(dbdir, 0o755); err != nil {
		return nil, err
	}
	if err := removeStaleTemps(dbdir); err != nil {
		return nil, fmt.Errorf("removing a failed run's temporary files: %w", err)
	}
	name := c.Name + "-" + r.rec.Start.Format(DumpStamp) + ".sql.gz"
	final := filepath.Join(dbdir, name)
	tmp := filepath.Join(dbdir, ".tmp-"+name)
	if err := dumpTo(r.ctx, c, tmp, r.o.Progress, r.toolVersion); err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			size, err := verifyDump(tmp, c.Adapter)
			if err != nil {
				os.Remove(tmp)
				return err
			}
			if err := os.Rename(tmp, final); err != nil {
				os.Remove(tmp)
				return err
			}
			if err := tiers.SyncDir(dbdir); err != nil {
				return err
			}
			r.check("dump %s/%s: gzip stream intact, %s of SQL, completion line present", DumpDir, name, humanBytes(size))
			removed, err := pruneDumps(dbdir, c.Name, keep)
			if err != nil {
				return fmt.Errorf("removing old dumps: %w", err)
			}
			if len(removed) > 0 {
				r.check("removed %d old dump(s) beyond keep_dumps=%d: %s", len(removed), keep, strings.Join(removed, ", "))
			}
			return nil
		}()
	}()
	return func() error { return <-done }, nil
}

// dumpTo runs the dump tool into gzip into a new file at path, fsynced. On
// failure the file is removed.
func dumpTo(ctx context.Context, c *conn, path string, progress io.Writer, version func(string)) (err error) {
	cr, err := newCreds(c)
	if err != nil {
		return err
	}
	defer cr.close()
	prog, args, env, err := dumpCommand(c, cr)
	if err != nil {
		return err
	}
	if version != nil {
		version(prog)
		version("gzip")
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(path)
		}
	}()
	dump, dumpErr := command(ctx, prog, args...)
	dump.Env = childEnv(env...)
	gz, gzErr := command(ctx, "gzip", "-c")
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	dump.Stdout, gz.Stdin, gz.Stdout = pw, pr, out
	if err := gz.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("gzip: %w", err)
	}
	pr.Close()
	if err := dump.Start(); err != nil {
		pw.Close()
		gz.Wait()
		return fmt.Errorf("%s: %w", prog, err)
	}
	pw.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if progress == nil {
			return
		}
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if fi, err := out.Stat(); err == nil {
					fmt.Fprintf(progress, "  %s: %s compressed\n", filepath.Base(path), humanBytes(fi.Size()))
				}
			}
		}
	}()
	derr := dump.Wait()
	gerr := gz.Wait()
	close(stop)
	<-done
	switch {
	case gerr != nil && derr != nil:
		return fmt.Errorf("writing %s: %w (and %v)", path, cmdError("gzip", gerr, gzErr), cmdError(prog, derr, dumpErr))
	case gerr != nil:
		return fmt.Errorf("writing %s: %w", path, cmdError("gzip", gerr, gzErr))
	case derr != nil:
		return cmdError(prog, derr, dumpErr)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return out.Close()
}

// tailHead keeps the first and the last bytes written through it.
type tailHead struct {
	head, tail []byte
	n          int64
}

const keepBytes = 4096

func (t *tailHead) Write(p []byte) (int, error) {
	t.n += int64(len(p))
	if len(t.head) < keepBytes {
		t.head = append(t.head, p[:min(len(p), keepBytes-len(t.head))]...)
	}
	if len(p) >= keepBytes {
		t.tail = append(t.tail[:0], p[len(p)-keepBytes:]...)
	} else {
		t.tail = append(t.tail, p...)
		if len(t.tail) > keepBytes {
			t.tail = append(t.tail[:0], t.tail[len(t.tail)-keepBytes:]...)
		}
	}
	return len(p), nil
}

// dumpFlavor tells a MariaDB/MySQL dump from a PostgreSQL one by its header.
func dumpFlavor(head []byte) string {
	h := string(head)
	switch {
	case strings.Contains(h, "-- MariaDB dump") || strings.Contains(h, "-- MySQL dump"):
		return AdapterMySQL
	case strings.Contains(h, "-- PostgreSQL database dump"):
		return AdapterPostgres
	}
	return ""
}

// VerifyDump reads a compressed dump back whole: the gzip stream must be
// intact (CRC and length of every member), the dump must be of the
// expected kind (AdapterMySQL or AdapterPostgres; empty accepts either)
// and end with its tool's completion line. It returns the SQL's size and
// the dump's kind.
func VerifyDump(path, adapter string) (size int64, kind string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return 0, "", fmt.Errorf("dump %s: not a gzip stream: %w", path, err)
	}
	th := &tailHead{}
	if _, err := io.Copy(th, zr); err != nil {
		return 0, "", fmt.Errorf("dump %s: compressed stream damaged after %d bytes of SQL: %w", path, th.n, err)
	}
	kind = dumpFlavor(th.head)
	if kind == "" {
		return 0, "", fmt.Errorf("dump %s: no MariaDB/MySQL or PostgreSQL dump header", path)
	}
	if adapter != "" && kind != adapter {
		return 0, "", fmt.Errorf("dump %s: a %s dump, want %s", path, kind, adapter)
	}
	tail := strings.TrimRight(string(th.tail), "\n")
	switch kind {
	case AdapterMySQL:
		last := tail[strings.LastIndex(tail, "\n")+1:]
		if !strings.HasPrefix(last, mysqlDoneLine) {
			return 0, "", fmt.Errorf("dump %s: does not end with %q: the dump was cut short", path, mysqlDoneLine)
		}
	case AdapterPostgres:
		if !strings.Contains(tail, pgDoneLine) {
			return 0, "", fmt.Errorf("dump %s: does not end with %q: the dump was cut short", path, pgDoneLine)
		}
	}
	return th.n, kind, nil
}

func verifyDump(path, adapter string) (int64, error) {
	n, _, err := VerifyDump(path, adapter)
	return n, err
}

// dumpTime parses the stamp of a dump named {db}-{stamp}.sql.gz.
func dumpTime(name, db string) (time.Time, bool) {
	s, ok := strings.CutPrefix(name, db+"-")
	if !ok {
		return time.Time{}, false
	}
	s, ok = strings.CutSuffix(s, ".sql.gz")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(DumpStamp, s)
	return t, err == nil
}

// pruneDumps removes all but the keep newest dumps of database db in dir.
func pruneDumps(dir, db string, keep int) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if _, ok := dumpTime(e.Name(), db); ok && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if len(names) <= keep {
		return nil, nil
	}
	var removed []string
	for _, n := range names[:len(names)-keep] {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			return removed, err
		}
		removed = append(removed, n)
	}
	return removed, tiers.SyncDir(dir)
}

// NewestDump is the newest {db}-{stamp}.sql.gz in dir, any database name.
func NewestDump(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var best string
	var bestT time.Time
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".sql.gz") || !e.Type().IsRegular() {
			continue
		}
		base := strings.TrimSuffix(n, ".sql.gz")
		if len(base) <= len(DumpStamp)+1 {
			continue
		}
		t, err := time.Parse(DumpStamp, base[len(base)-len(DumpStamp):])
		if err != nil {
			continue
		}
		if best == "" || t.After(bestT) || (t.Equal(bestT) && n > best) {
			best, bestT = n, t
		}
	}
	if best == "" {
		return "", fmt.Errorf("%s: no database dump ({database}-%s.sql.gz)", dir, DumpStamp)
	}
	return filepath.Join(dir, best), nil
}

// loadDump loads a compressed dump into c's database, creating it. A
// database that already holds tables is refused unless overwrite (MariaDB
// dumps drop and recreate their tables; PostgreSQL ones need an empty one).
func loadDump(ctx context.Context, path string, c *conn, overwrite bool) error {
	if err := c.validate(); err != nil {
		return err
	}
	if _, _, err := VerifyDump(path, c.Adapter); err != nil {
		return err
	}
	cr, err := newCreds(c)
	if err != nil {
		return err
	}
	defer cr.close()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return fmt.Errorf("dump %s: %w", path, err)
	}
	switch c.Adapter {
	case AdapterMySQL:
		prog, err := firstTool("mariadb", "mysql")
		if err != nil {
			return err
		}
		q := func(stdin io.Reader, args ...string) (string, error) {
			cmd, stderr := command(ctx, prog, append(append([]string{}, cr.args...), args...)...)
			var out strings.Builder
			cmd.Stdout = &out
			cmd.Stdin = stdin
			if err := runCmd(cmd, stderr); err != nil {
				return "", fmt.Errorf("%s: %w", c, err)
			}
			return strings.TrimSpace(out.String()), nil
		}
		n, err := q(nil, "--batch", "--skip-column-names", "-e",
			"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '"+c.Name+"'")
		if err != nil {
			return err
		}
		if n != "0" && !overwrite {
			return fmt.Errorf("%s already has %s tables; restore into a new or empty database, or overwrite", c, n)
		}
		if _, err := q(nil, "-e", "CREATE DATABASE IF NOT EXISTS `"+c.Name+"`"); err != nil {
			return err
		}
		if _, err := q(zr, c.Name); err != nil {
			return fmt.Errorf("loading %s: %w", path, err)
		}
	case AdapterPostgres:
		prog, err := firstTool("psql")
		if err != nil {
			return err
		}
		q := func(db string, stdin io.Reader, args ...string) (string, error) {
			cmd, stderr := command(ctx, prog, append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=1"}, args...)...)
			cmd.Env = childEnv(append(append([]string{}, cr.env...), "PGDATABASE="+db)...)
			var out strings.Builder
			cmd.Stdout = &out
			cmd.Stdin = stdin
			if err := runCmd(cmd, stderr); err != nil {
				return "", fmt.Errorf("%s: %w", c, err)
			}
			return strings.TrimSpace(out.String()), nil
		}
		exists, err := q("postgres", nil, "-tA", "-c", "SELECT 1 FROM pg_database WHERE datname = '"+c.Name+"'")
		if err != nil {
			return err
		}
		if exists == "1" {
			n, err := q(c.Name, nil, "-tA", "-c", `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
				AND c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p')`)
			if err != nil {
				return err
			}
			if n != "0" {
				return fmt.Errorf("%s already has %s relations; a PostgreSQL dump loads only into a new or empty database", c, n)
			}
		} else if _, err := q("postgres", nil, "-c", `CREATE DATABASE "`+c.Name+`"`); err != nil {
			return err
		}
		if _, err := q(c.Name, zr, "--single-transaction"); err != nil {
			return fmt.Errorf("loading %s: %w", path, err)
		}
	default:
		return errors.New("unknown adapter " + c.Adapter)
	}
	return nil
}
