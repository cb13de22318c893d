// Command jobs benchmarks a Rails backup job (jobs.Backup) against the
// same commands run by hand: mariadb-dump | gzip, and rsync of releases/,
// shared/ and the shared/var data directory.
//
// It starts a throw-away MariaDB server (jobs/dbtest), fills a database
// whose dump is about -dump-mb MB, builds a Capistrano tree with -files
// release files, then runs the job and the hand commands -runs times each
// in rotated order, each into an empty target (a full nightly copy), and
// prints the medians and their ratio. The job does more than the hand
// commands: it reads the whole dump back to verify it, writes its run
// file twice and counts the tree; the target is at most 1.1x.
//
//	go run ./bench/jobs -dump-mb 1024 -files 20000 -runs 3
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/softxs/v2backup/jobs"
	"github.com/softxs/v2backup/jobs/dbtest"
	"github.com/softxs/v2backup/tiers/inventory"
)

func main() {
	dumpMB := flag.Int("dump-mb", 1024, "size of the database dump, MB of SQL")
	files := flag.Int("files", 20000, "files in releases/")
	runs := flag.Int("runs", 3, "runs of each contender (the median is reported)")
	dir := flag.String("dir", "/var/tmp", "where to build the app and targets (a disk, not tmpfs)")
	verbose := flag.Bool("v", false, "log the job's steps and their times")
	flag.Parse()
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if err := run(*dumpMB, *files, *runs, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "bench/jobs:", err)
		os.Exit(1)
	}
}

// logger receives the job's step log with -v.
var logger *slog.Logger

const (
	dbName = "bench_production"
	dbUser = "bench"
	dbPass = "bench-pw"
	// rowBytes is the SQL one row adds to the dump, roughly.
	rowBytes = 1024
)

func run(dumpMB, files, runs int, dir string) error {
	base, err := os.MkdirTemp(dir, "v2backup-bench-jobs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	fmt.Printf("bench/jobs: %d MB dump, %d release files, %d runs, in %s\n", dumpMB, files, runs, base)
	m, err := dbtest.StartMariaDB()
	if err != nil {
		return err
	}
	defer m.Stop()
	t0 := time.Now()
	if err := fillDB(m, dumpMB); err != nil {
		return err
	}
	fmt.Printf("database filled in %s\n", time.Since(t0).Round(time.Second))
	appDir, err := buildApp(base, m, files)
	if err != nil {
		return err
	}
	app := &inventory.App{Name: "bench", Type: inventory.TypeRails, Path: appDir, Relpath: "bench.softxs.ch/app", KeepDumps: 1}
	ctx := context.Background()

	var jobT, handT []time.Duration
	for i := 0; i < runs*2; i++ {
		target := filepath.Join(base, fmt.Sprintf("target-%d", i))
		// Rotate: job first on even rounds, hand first on odd ones.
		useJob := (i%2 == 0) == ((i/2)%2 == 0)
		var d time.Duration
		if useJob {
			t := time.Now()
			res, err := jobs.Backup(ctx, app, jobs.Options{Target: target, Logger: logger})
			if err != nil {
				return err
			}
			d = time.Since(t)
			jobT = append(jobT, d)
			fmt.Printf("  job  %6.1fs  (%d files, %.0f MB in the tree)\n", d.Seconds(), res.Record.Files, float64(res.Record.Bytes)/1e6)
		} else {
			t := time.Now()
			if err := byHand(appDir+"-app", target, m); err != nil {
				return err
			}
			d = time.Since(t)
			handT = append(handT, d)
			fmt.Printf("  hand %6.1fs\n", d.Seconds())
		}
		if err := os.RemoveAll(target); err != nil {
			return err
		}
	}
	j, h := median(jobT), median(handT)
	ratio := j.Seconds() / h.Seconds()
	verdict := "ok"
	if ratio > 1.1 {
		verdict = "OVER TARGET"
	}
	fmt.Printf("\nmedian job %.1fs, by hand %.1fs: %.2fx (target <= 1.10x: %s)\n", j.Seconds(), h.Seconds(), ratio, verdict)
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	return s[len(s)/2]
}

// fillDB creates the database with about mb MB of dump: rows of hex text
// (compressible about 2:1, like real application data), generated inside
// the server from MariaDB's sequence engine.
func fillDB(m *dbtest.MariaDB, mb int) error {
	rows := mb * 1000 * 1000 / rowBytes
	sql := fmt.Sprintf(`CREATE DATABASE %[1]s;
CREATE USER '%[2]s'@'localhost' IDENTIFIED BY '%[3]s';
GRANT ALL ON %[1]s.* TO '%[2]s'@'localhost';
CREATE TABLE %[1]s.documents (id INT PRIMARY KEY, title VARCHAR(100), body TEXT) ENGINE=InnoDB;
USE %[1]s;
INSERT INTO %[1]s.documents SELECT seq, CONCAT('document ', seq),
  CONCAT(SHA2(seq, 512), SHA2(seq+1, 512), SHA2(seq+2, 512), SHA2(seq+3, 512), SHA2(seq+4, 512), SHA2(seq+5, 512), SHA2(seq+6, 512))
  FROM seq_1_to_%[4]d;`, dbName, dbUser, dbPass, rows)
	_, err := m.SQL(sql)
	return err
}

// buildApp makes a Capistrano tree: files spread over 4 releases, a
// small shared/, and a data directory on "the HD" with 1000 files.
func buildApp(base string, m *dbtest.MariaDB, files int) (string, error) {
	app := filepath.Join(base, "bench-app")
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte('a' + rng.IntN(26))
	}
	write := func(p string, n int) error {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, buf[:n], 0o644)
	}
	releases := []string{"20260101000000", "20260201000000", "20260301000000", "20260401000000"}
	for i := 0; i < files; i++ {
		r := releases[i%len(releases)]
		p := filepath.Join(app, "releases", r, fmt.Sprintf("app/d%03d/f%05d.rb", (i/len(releases))%200, i))
		if err := write(p, 512+rng.IntN(8192)); err != nil {
			return "", err
		}
	}
	yml := fmt.Sprintf("production:\n  adapter: mysql2\n  database: %s\n  username: %s\n  password: %s\n  socket: %s\n", dbName, dbUser, dbPass, m.Socket)
	if err := os.MkdirAll(filepath.Join(app, "shared/config"), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(app, "shared/config/database.yml"), []byte(yml), 0o644); err != nil {
		return "", err
	}
	for _, r := range releases {
		if err := os.Symlink(filepath.Join(app, "shared/config/database.yml"), filepath.Join(app, "releases", r, "database.yml")); err != nil {
			return "", err
		}
		os.MkdirAll(filepath.Join(app, "releases", r, "config"), 0o755)
		os.Symlink(filepath.Join(app, "shared/config/database.yml"), filepath.Join(app, "releases", r, "config/database.yml"))
	}
	if err := os.Symlink(filepath.Join(app, "releases", releases[len(releases)-1]), filepath.Join(app, "current")); err != nil {
		return "", err
	}
	if err := write(filepath.Join(app, "shared/log/production.log"), 60000); err != nil {
		return "", err
	}
	hd := filepath.Join(base, "hd/var")
	for i := 0; i < 1000; i++ {
		if err := write(filepath.Join(hd, fmt.Sprintf("file_assets/%03d/a%04d.bin", i/50, i)), 4096+rng.IntN(60000)); err != nil {
			return "", err
		}
	}
	if err := os.Symlink(hd, filepath.Join(app, "shared/var")); err != nil {
		return "", err
	}
	return filepath.Join(base, "bench"), nil
}

// byHand runs what an administrator would type: the same dump flags into
// gzip, and the same rsync commands.
func byHand(app, target string, m *dbtest.MariaDB) error {
	if err := os.MkdirAll(filepath.Join(target, "db"), 0o755); err != nil {
		return err
	}
	cnf := filepath.Join(target, "..", "hand.cnf")
	if err := os.WriteFile(cnf, []byte(fmt.Sprintf("[client]\nuser=%s\npassword=%s\nsocket=%s\n", dbUser, dbPass, m.Socket)), 0o600); err != nil {
		return err
	}
	dump := fmt.Sprintf("mariadb-dump --defaults-extra-file=%s %s %s | gzip -c > %s", cnf, strings.Join(jobs.MySQLDumpFlags, " "), dbName,
		filepath.Join(target, "db", dbName+"-"+time.Now().Format(jobs.DumpStamp)+".sql.gz"))
	cmds := [][]string{
		{"bash", "-o", "pipefail", "-c", dump},
		{"rsync", "-a", "--numeric-ids", "--delete", app + "/releases/", target + "/releases/"},
		{"rsync", "-a", "--numeric-ids", app + "/current", target + "/"},
		{"rsync", "-a", "--numeric-ids", "--delete", "--exclude=/var", "--exclude=/log/", "--exclude=pids/", "--exclude=*.log", "--exclude=*.pid", "--exclude=/tmp/sockets/", app + "/shared/", target + "/shared/"},
		{"rsync", "-a", "--numeric-ids", "--delete", app + "/shared/var/", target + "/shared/var/"},
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}
