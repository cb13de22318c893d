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
