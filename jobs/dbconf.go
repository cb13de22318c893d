package jobs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/softxs/v2backup/tiers/inventory"
)

// Database adapters, as the inventory names them.
const (
	AdapterMySQL    = "mysql"
	AdapterPostgres = "postgresql"
)

// conn is how to reach a database, with its password (never put on a
// command line) and where the settings came from, for messages.
type conn struct {
	inventory.Database
	Password string
	From     string
}

func (c *conn) String() string {
	where := c.Socket
	if where == "" {
		where = c.Host
		if c.Port != 0 {
			where += ":" + strconv.Itoa(c.Port)
		}
	}
	if where == "" {
		where = "default socket"
	}
	return fmt.Sprintf("%s database %q as %q on %s (settings from %s)", c.Adapter, c.Name, c.User, where, c.From)
}

var dbNameRe = regexp.MustCompile(`^[A-Za-z0-9_$][A-Za-z0-9_$.-]{0,63}$`)

// validate checks what a job needs and that names are safe to quote.
func (c *conn) validate() error {
	switch c.Adapter {
	case AdapterMySQL, AdapterPostgres:
	default:
		return fmt.Errorf("%s: adapter %q: want %s or %s", c.From, c.Adapter, AdapterMySQL, AdapterPostgres)
	}
	if !dbNameRe.MatchString(c.Name) {
		return fmt.Errorf("%s: database name %q: want 1-64 of A-Z a-z 0-9 _ $ . -", c.From, c.Name)
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("%s: port %d: out of range", c.From, c.Port)
	}
	return nil
}

// override applies the non-zero fields of d (the inventory's database
// settings) over c.
func (c *conn) override(d *inventory.Database, what string) error {
	if d == nil {
		return nil
	}
	if d.Adapter != "" {
		c.Adapter = d.Adapter
	}
	if d.Name != "" {
		c.Name = d.Name
	}
	if d.Host != "" {
		c.Host = d.Host
	}
	if d.Port != 0 {
		c.Port = d.Port
	}
	if d.Socket != "" {
		c.Socket = d.Socket
	}
	if d.User != "" {
		c.User = d.User
	}
	if d.PasswordFile != "" {
		b, err := os.ReadFile(d.PasswordFile)
		if err != nil {
			return fmt.Errorf("%s: password_file: %w", what, err)
		}
		c.Password = strings.TrimRight(string(b), "\r\n")
	}
	if c.From == "" {
		c.From = what
	} else {
		c.From += " and " + what
	}
	return nil
}

// adapterOf maps a Rails adapter to ours.
func adapterOf(file, a string) (string, error) {
	switch a {
	case "mysql2", "mysql", "trilogy":
		return AdapterMySQL, nil
	case "postgresql", "postgis":
		return AdapterPostgres, nil
	}
	return "", fmt.Errorf("%s: production.adapter %q is not supported (mysql2, trilogy, postgresql)", file, a)
}

// erbRe matches an ERB tag; erbEnvRe the forms of ENV lookup we resolve.
var (
	erbRe    = regexp.MustCompile(`<%(=?)(.*?)%>`)
	erbEnvRe = regexp.MustCompile(`^ENV(?:\[\s*(?:'([^']*)'|"([^"]*)")\s*\]|\.fetch\(\s*(?:'([^']*)'|"([^"]*)")\s*(?:,\s*(?:'([^']*)'|"([^"]*)")\s*\)|\)\s*\{\s*(?:'([^']*)'|"([^"]*)")\s*\}|\)))$`)
)

// expandERB resolves the ERB tags a database.yml may hold: ENV['X'],
// ENV["X"], ENV.fetch('X'), ENV.fetch('X', 'default'), ENV.fetch('X') {
// 'default' }. Anything else is reported as unsupported, with its line.
func expandERB(file string, b []byte, getenv func(string) string) ([]byte, error) {
	var errs []error
	lines := bytes.Split(b, []byte("\n"))
	for i, line := range lines {
		lines[i] = erbRe.ReplaceAllFunc(line, func(tag []byte) []byte {
			m := erbRe.FindSubmatch(tag)
			expr := strings.TrimSpace(string(m[2]))
			if string(m[1]) != "=" {
				errs = append(errs, fmt.Errorf("%s:%d: ERB tag %q is not supported (only <%%= ENV[...] %%> and ENV.fetch)", file, i+1, string(tag)))
				return tag
			}
			e := erbEnvRe.FindStringSubmatch(expr)
			if e == nil {
				errs = append(errs, fmt.Errorf("%s:%d: ERB expression %q is not supported (only ENV['X'], ENV.fetch('X'), ENV.fetch('X', 'default'), ENV.fetch('X') { 'default' })", file, i+1, expr))
				return tag
			}
			switch {
			case e[1] != "" || e[2] != "":
				return []byte(getenv(e[1] + e[2]))
			default:
				key := e[3] + e[4]
				if v := getenv(key); v != "" {
					return []byte(v)
				}
				if strings.Contains(expr, ",") || strings.Contains(expr, "{") {
					return []byte(e[5] + e[6] + e[7] + e[8])
				}
				errs = append(errs, fmt.Errorf("%s:%d: ENV.fetch(%q): environment variable %s is not set", file, i+1, key, key))
				return tag
			}
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return bytes.Join(lines, []byte("\n")), nil
}

// railsDatabase reads the production section of a Rails database.yml.
func railsDatabase(file string, getenv func(string) string) (*conn, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	b, err = expandERB(file, b, getenv)
	if err != nil {
		return nil, err
	}
	var doc map[string]map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	prod, ok := doc["production"]
	if !ok || prod == nil {
		return nil, fmt.Errorf("%s: no production section", file)
	}
	if _, ok := prod["url"]; ok {
		return nil, fmt.Errorf("%s: production.url is not supported; give adapter, database, username, host/socket", file)
	}
	str := func(k string) (string, error) {
		v, ok := prod[k]
		if !ok || v == nil {
			return "", nil
		}
		switch v := v.(type) {
		case string:
			return v, nil
		case int:
			return strconv.Itoa(v), nil
		}
		return "", fmt.Errorf("%s: production.%s: want a string, got %T", file, k, v)
	}
	c := &conn{From: file}
	var port, adapter string
	for _, f := range []struct {
		key string
		dst *string
	}{{"adapter", &adapter}, {"database", &c.Name}, {"username", &c.User}, {"password", &c.Password},
		{"host", &c.Host}, {"socket", &c.Socket}, {"port", &port}} {
		if *f.dst, err = str(f.key); err != nil {
			return nil, err
		}
	}
	if adapter == "" {
		return nil, fmt.Errorf("%s: production.adapter is missing", file)
	}
	if c.Adapter, err = adapterOf(file, adapter); err != nil {
		return nil, err
	}
	if c.Name == "" {
		return nil, fmt.Errorf("%s: production.database is missing", file)
	}
	if port != "" {
		if c.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("%s: production.port %q: not a number", file, port)
		}
	}
	if c.Adapter == AdapterPostgres && c.Host != "" && strings.HasPrefix(c.Host, "/") {
		// libpq: a host starting with / is the socket directory.
		c.Socket, c.Host = c.Host, ""
	}
	return c, nil
}

// wpDefineRe matches define('DB_X', 'value') with either quote style.
var wpDefineRe = regexp.MustCompile(`define\s*\(\s*['"](DB_NAME|DB_USER|DB_PASSWORD|DB_HOST)['"]\s*,\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|(.*?))\s*\)\s*;`)

var phpBlockComment = regexp.MustCompile(`(?s)/\*.*?\*/`)

// wordpressDatabase reads DB_NAME, DB_USER, DB_PASSWORD and DB_HOST from a
// wp-config.php.
func wordpressDatabase(file string) (*conn, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	src := phpBlockComment.ReplaceAllStringFunc(string(b), func(s string) string {
		return strings.Repeat("\n", strings.Count(s, "\n")) // keep line numbers
	})
	vals := map[string]string{}
	for i, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "//") || strings.HasPrefix(t, "#") {
			continue
		}
		for _, m := range wpDefineRe.FindAllStringSubmatch(line, -1) {
			switch {
			case m[4] != "":
				return nil, fmt.Errorf("%s:%d: %s is set by the PHP expression %q; only string literals are supported", file, i+1, m[1], strings.TrimSpace(m[4]))
			case m[3] != "":
				vals[m[1]] = phpDoubleQuoted(m[3])
			default:
				vals[m[1]] = phpSingleQuoted(m[2])
			}
		}
	}
	for _, k := range []string{"DB_NAME", "DB_USER", "DB_HOST"} {
		if _, ok := vals[k]; !ok {
			return nil, fmt.Errorf("%s: no define('%s', ...)", file, k)
		}
	}
	c := &conn{Database: inventory.Database{Adapter: AdapterMySQL, Name: vals["DB_NAME"], User: vals["DB_USER"]},
		Password: vals["DB_PASSWORD"], From: file}
	// DB_HOST: "localhost", "host:port", "localhost:/path/to/socket".
	h := vals["DB_HOST"]
	if host, rest, ok := strings.Cut(h, ":"); ok {
		if strings.HasPrefix(rest, "/") {
			c.Host, c.Socket = host, rest
		} else if p, err := strconv.Atoi(rest); err == nil {
			c.Host, c.Port = host, p
		} else {
			return nil, fmt.Errorf("%s: DB_HOST %q: want host, host:port or host:/socket", file, h)
		}
	} else {
		c.Host = h
	}
	return c, nil
}

func phpSingleQuoted(s string) string {
	return strings.NewReplacer(`\\`, `\`, `\'`, `'`).Replace(s)
}

func phpDoubleQuoted(s string) string {
	return strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\$`, `$`, `\n`, "\n", `\t`, "\t").Replace(s)
}

// inside resolves p's symlinks and checks it stays inside root: config files
// are read only from within the tree the application lives in.
func inside(root, p string) (string, error) {
	rr, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", err
	}
	rp, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	if rp != rr && !strings.HasPrefix(rp, rr+string(filepath.Separator)) {
		return "", fmt.Errorf("%s resolves to %s, outside %s", p, rp, root)
	}
	return rp, nil
}
