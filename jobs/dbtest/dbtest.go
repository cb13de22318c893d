// Package dbtest starts real, throw-away database servers for tests and
// benchmarks: a MariaDB server (mariadb-install-db + mariadbd on a unix
// socket, no networking) and a PostgreSQL server (initdb + postgres on a
// unix socket, run as the postgres user), each in its own temporary
// directory, stopped and removed by Stop or the test's cleanup.
//
// It is not internal so that the project's integration tests and benchmarks
// can use it too.
package dbtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 2 * time.Minute

// MariaDB is a running MariaDB server. Root connects over Socket with no
// password.
type MariaDB struct {
	Dir    string // data, socket, log
	Socket string
	cmd    *exec.Cmd
	done   chan error
}

// Postgres is a running PostgreSQL server. The superuser "postgres" has
// password SuperPassword; SocketDir is the PGHOST to use.
type Postgres struct {
	Dir       string
	SocketDir string
	Port      int
	cmd       *exec.Cmd
	done      chan error
	uid, gid  uint32
}

// SuperPassword is the PostgreSQL superuser's password.
const SuperPassword = "postgres-test-pw"

func tool(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	for _, n := range names {
		m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + n)
		if len(m) > 0 {
			return m[len(m)-1], nil
		}
	}
	return "", fmt.Errorf("dbtest: none of %v installed", names)
}

func runOut(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("dbtest: %s: %w: %s", strings.Join(cmd.Args, " "), err, lastN(out.String(), 2000))
	}
	return nil
}

func lastN(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// StartMariaDB initialises and starts a MariaDB server in a new temporary
// directory (short, for the socket path limit).
func StartMariaDB() (*MariaDB, error) {
	installDB, err := tool("mariadb-install-db", "mysql_install_db")
	if err != nil {
		return nil, err
	}
	mariadbd, err := tool("mariadbd", "mysqld")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mdb-")
	if err != nil {
		return nil, err
	}
	m := &MariaDB{Dir: dir, Socket: filepath.Join(dir, "sock")}
	data := filepath.Join(dir, "data")
	// A tmpdir of its own: a starting server removes the #sql temporary
	// files it finds there, so servers sharing /tmp (tests run in
	// parallel) failed each other's install ("Unknown table
	// 'mysql.tmp_user_sys'"; 3 of 8 concurrent installs).
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := runOut(exec.Command(installDB, "--no-defaults", "--datadir="+data, "--tmpdir="+tmp, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db")); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf := filepath.Join(dir, "error.log")
	m.cmd = exec.Command(mariadbd, "--no-defaults", "--datadir="+data, "--tmpdir="+tmp, "--socket="+m.Socket,
		"--skip-networking", "--user=root", "--pid-file="+filepath.Join(dir, "pid"),
		"--log-error="+logf, "--innodb-buffer-pool-size=64M", "--skip-log-bin")
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	m.done = make(chan error, 1)
	go func() { m.done <- m.cmd.Wait() }()
	if err := waitSocket(m.Socket, m.done); err != nil {
		log, _ := os.ReadFile(logf)
		m.Stop()
		return nil, fmt.Errorf("dbtest: mariadbd did not start: %w: %s", err, lastN(string(log), 2000))
	}
	return m, nil
}

// waitSocket polls until a unix socket accepts connections, the server
// exits, or startTimeout passes.
func waitSocket(sock string, done chan error) error {
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("server exited: %v", err)
		default:
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("socket %s not ready after %s", sock, startTimeout)
}

// SQL runs statements as root and returns the tab-separated output.
func (m *MariaDB) SQL(sql string) (string, error) {
	client, err := tool("mariadb", "mysql")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(client, "--no-defaults", "--socket="+m.Socket, "-uroot", "--batch", "--skip-column-names")
	cmd.Stdin = strings.NewReader(sql)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("dbtest: mariadb: %w: %s", err, errb.String())
	}
	return out.String(), nil
}

// Stop shuts the server down (SIGTERM, then SIGKILL) and removes its
// directory. It is safe to call twice.
func (m *MariaDB) Stop() {
	stopProc(m.cmd, m.done)
	if m.Dir != "" {
		os.RemoveAll(m.Dir)
		m.Dir = ""
	}
}

// Kill stops the server abruptly, keeping its directory: "database down".
func (m *MariaDB) Kill() { stopProc(m.cmd, m.done) }

func stopProc(cmd *exec.Cmd, done chan error) {
	if cmd == nil || cmd.Process == nil || done == nil {
		return
	}
	select {
	case err := <-done:
		done <- err
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err := <-done
		done <- err
	}
}

// StartPostgres initialises and starts a PostgreSQL server as the postgres
// user in a new temporary directory, listening only on a unix socket with
// password (scram-sha-256) authentication.
func StartPostgres() (*Postgres, error) {
	initdb, err := tool("initdb")
	if err != nil {
		return nil, err
	}
	postgres, err := tool("postgres")
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("dbtest: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{Dir: dir, SocketDir: dir, Port: 5432, uid: uint32(uid), gid: uint32(gid)}
	if err := os.Chown(dir, uid, gid); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(SuperPassword+"\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	os.Chown(pw, uid, gid)
	data := filepath.Join(dir, "data")
	cmd := exec.Command(initdb, "-D", data, "-U", "postgres", "--pwfile="+pw, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	cmd.SysProcAttr = p.asPostgres()
	cmd.Dir = dir
	if err := runOut(cmd); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf := filepath.Join(dir, "log")
	lf, err := os.Create(logf)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer lf.Close()
	p.cmd = exec.Command(postgres, "-D", data, "-k", dir, "-c", "listen_addresses=", "-c", "fsync=off", "-p", strconv.Itoa(p.Port))
	p.cmd.SysProcAttr = p.asPostgres()
	p.cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	p.cmd.SysProcAttr.Setpgid = true
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
	if err := waitSocket(filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(p.Port)), p.done); err != nil {
		log, _ := os.ReadFile(logf)
		p.Stop()
		return nil, fmt.Errorf("dbtest: postgres did not start: %w: %s", err, lastN(string(log), 2000))
	}
	// The socket appears before the server accepts queries: poll a query.
	deadline := time.Now().Add(startTimeout)
	for {
		_, err := p.SQL("postgres", "SELECT 1")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p, nil
}

func (p *Postgres) asPostgres() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: p.uid, Gid: p.gid, Groups: []uint32{}}}
}

// SQL runs statements in database db as the superuser and returns the
// unaligned, tuples-only output.
func (p *Postgres) SQL(db, sql string) (string, error) {
	psql, err := tool("psql")
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1")
	cmd.Env = append(os.Environ(), "PGHOST="+p.SocketDir, "PGPORT="+strconv.Itoa(p.Port), "PGUSER=postgres",
		"PGPASSWORD="+SuperPassword, "PGDATABASE="+db)
	cmd.Stdin = strings.NewReader(sql)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("dbtest: psql: %w: %s", err, errb.String())
	}
	return out.String(), nil
}

// Stop shuts the server down and removes its directory; safe twice.
func (p *Postgres) Stop() {
	stopProc(p.cmd, p.done)
	if p.Dir != "" {
		os.RemoveAll(p.Dir)
		p.Dir = ""
	}
}

// Kill stops the server, keeping its directory: "database down".
func (p *Postgres) Kill() { stopProc(p.cmd, p.done) }

// MariaDBT starts a MariaDB server for t, stopped in t.Cleanup.
func MariaDBT(t testing.TB) *MariaDB {
	t.Helper()
	m, err := StartMariaDB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

// PostgresT starts a PostgreSQL server for t, stopped in t.Cleanup.
func PostgresT(t testing.TB) *Postgres {
	t.Helper()
	p, err := StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}
