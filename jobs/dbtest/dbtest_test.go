package dbtest

import (
	"strings"
	"testing"
)

func TestMariaDB(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a MariaDB server")
	}
	m := MariaDBT(t)
	out, err := m.SQL("CREATE DATABASE d; CREATE TABLE d.t (x INT); INSERT INTO d.t VALUES (41),(1); SELECT SUM(x) FROM d.t;")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "42" {
		t.Fatalf("sum = %q, want 42", out)
	}
	if _, err := m.SQL("SELECT * FROM nosuch.t"); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Fatalf("error for a missing table = %v", err)
	}
	m.Kill()
	if _, err := m.SQL("SELECT 1"); err == nil {
		t.Fatal("query on a killed server succeeded")
	}
}

// Servers started at once (test packages run in parallel) do not spoil
// each other's install: without a tmpdir each, 3 of 8 failed.
func TestMariaDBConcurrentStarts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB servers")
	}
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			m, err := StartMariaDB()
			if err == nil {
				_, err = m.SQL("SELECT 1")
				m.Stop()
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server")
	}
	p := PostgresT(t)
	if _, err := p.SQL("postgres", "CREATE DATABASE d"); err != nil {
		t.Fatal(err)
	}
	out, err := p.SQL("d", "CREATE TABLE t (x int); INSERT INTO t VALUES (41), (1); SELECT sum(x) FROM t;")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "42" {
		t.Fatalf("sum = %q, want 42", out)
	}
	p.Kill()
	if _, err := p.SQL("d", "SELECT 1"); err == nil {
		t.Fatal("query on a killed server succeeded")
	}
}
