package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// maxErrors bounds how many problems one load reports; past it the file is
// more likely the wrong file than a file with mistakes.
const maxErrors = 100

// maxRedecodes bounds how many values of the wrong type one load reports:
// each costs a decode of the whole file.
const maxRedecodes = 20

// Load reads, validates and completes the inventory at path. A problem in
// the file comes back as Errors (every problem found, in file order), each
// with file:line:column, the field and the reason.
func Load(path string) (*Inventory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load on data already read; file names it in messages.
func Parse(file string, data []byte) (*Inventory, error) {
	l := &loader{file: file, skip: map[string]bool{}}
	inv := l.decode(data)
	if inv != nil {
		l.validate(inv)
	}
	if len(l.errs) > 0 {
		sort.SliceStable(l.errs, func(i, j int) bool {
			a, b := l.errs[i], l.errs[j]
			if (a.Line == 0) != (b.Line == 0) {
				return b.Line == 0
			}
			if a.Line != b.Line {
				return a.Line < b.Line
			}
			return a.Column < b.Column
		})
		if len(l.errs) > maxErrors {
			l.errs = append(l.errs[:maxErrors], &Error{File: file, Reason: fmt.Sprintf("%d more problems not shown", len(l.errs)-maxErrors)})
		}
		return nil, l.errs
	}
	inv.File = file
	inv.applyDefaults()
	return inv, nil
}

// loader collects every problem of one file.
type loader struct {
	file string
	ix   *index
	errs Errors
	// skip holds the paths whose value go-toml rejected: validation does not
	// report them again as missing.
	skip map[string]bool
}

// errAt records a problem with the key at path (or, when the key is
// missing, with the table that should hold it).
func (l *loader) errAt(path, format string, args ...any) {
	p := l.ix.place(path)
	l.errs = append(l.errs, &Error{File: l.file, Line: p.line, Column: p.col, Field: l.ix.display(path), Reason: fmt.Sprintf(format, args...)})
}

// decode runs go-toml's strict decoder. It stops at the first value of the
// wrong type, so each time it does, the offending expression is blanked out
// (spaces, keeping line breaks, so positions do not move) and the document
// decoded again: one load reports every such problem, not just the first.
// It returns nil when the document cannot be decoded at all.
func (l *loader) decode(data []byte) *Inventory {
	doc := append([]byte(nil), data...)
	redecodes := 0
	// Blanking a key = value moves nothing else, so the index stays right;
	// blanking a [[table]] renumbers the ones after it.
	reindex := true
	for {
		if reindex {
			ix, perr, off := buildIndex(doc)
			l.ix = ix
			if perr != nil {
				p := ix.posAt(off)
				l.errs = append(l.errs, &Error{File: l.file, Line: p.line, Column: p.col, Field: ix.display(ix.fieldAt(off)),
					Reason: "syntax error: " + perr.Message})
				return nil
			}
			reindex = false
		}
		ix := l.ix
		if l.textValues(doc) {
			continue
		}
		var inv Inventory
		err := toml.NewDecoder(bytes.NewReader(doc)).DisallowUnknownFields().Decode(&inv)
		var sme *toml.StrictMissingError
		var de *toml.DecodeError
		switch {
		case err == nil:
			return &inv
		case errors.As(err, &sme):
			for i := range sme.Errors {
				l.unknown(&sme.Errors[i])
			}
			return &inv
		case errors.As(err, &de):
			line, col := de.Position()
			off := ix.offset(pos{line, col})
			field := ix.fieldAt(off)
			l.errs = append(l.errs, &Error{File: l.file, Line: line, Column: col, Field: ix.display(field), Reason: decodeReason(de)})
			e := ix.exprAt(off)
			if redecodes++; e < 0 || redecodes >= maxRedecodes {
				if e >= 0 {
					l.errs = append(l.errs, &Error{File: l.file, Reason: fmt.Sprintf("stopped after %d values of the wrong type; fix these first", redecodes)})
				}
				return nil
			}
			reindex = l.ix.exprs[e].header
			l.blank(doc, e)
			l.skip[field] = true
		default:
			l.errs = append(l.errs, &Error{File: l.file, Reason: err.Error()})
			return nil
		}
	}
}

// blank overwrites expression e with spaces, and with it the body of a
// table whose header it is.
func (l *loader) blank(doc []byte, e int) {
	x := l.ix.exprs[e]
	end := x.end
	if x.header {
		for i := e + 1; i < len(l.ix.exprs) && !l.ix.exprs[i].header; i++ {
			end = l.ix.exprs[i].end
			l.skip[l.ix.exprs[i].path] = true
		}
	}
	for i := x.start; i < end; i++ {
		if doc[i] != '\n' && doc[i] != '\r' {
			doc[i] = ' '
		}
	}
	l.skip[x.path] = true
}

// decodeReason is go-toml's message, made to say what to write instead.
func decodeReason(de *toml.DecodeError) string {
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	m := typeMismatch.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	got, want := m[1], m[2]
	if want == "" {
		want = m[3]
	}
	switch {
	case strings.HasSuffix(want, "inventory.Clock"):
		want = `a time of day as a string, e.g. "05:00"`
	case strings.HasSuffix(want, "inventory.Duration"):
		want = `a duration as a string, e.g. "15m"`
	case strings.HasPrefix(want, "[]"):
		want = "an array"
	case strings.HasPrefix(want, "int"):
		want = "an integer"
	case strings.HasPrefix(want, "float"):
		want = "a number"
	case want == "string" || strings.HasPrefix(want, "tiers.") || strings.HasPrefix(want, "inventory.AppType") || strings.HasPrefix(want, "inventory.Export"):
		want = "a string"
	case strings.HasPrefix(want, "inventory.") || strings.HasPrefix(want, "*inventory."):
		want = "a table"
	}
	return fmt.Sprintf("wrong type: got a TOML %s, want %s", got, want)
}

// typeMismatch matches go-toml's messages for a value of the wrong type.
var typeMismatch = regexp.MustCompile(`^cannot decode TOML (.+?) into (?:struct field \S+ of type (\S+)|(\S+))$`)

// unknown reports a key or table the schema does not have, with the keys
// that are allowed there.
func (l *loader) unknown(de *toml.DecodeError) {
	line, col := de.Position()
	off := l.ix.offset(pos{line, col})
	path := l.ix.fieldAt(off)
	// go-toml's key has no array indexes, but skips the tables of inline
	// ones; the index's path has both.
	key := schemaPath(path)
	if len(key) == 0 {
		key = de.Key()
	}
	name := ""
	if len(key) > 0 {
		name = key[len(key)-1]
	}
	reason := fmt.Sprintf("unknown key %q", name)
	if known := knownKeys(key[:max(len(key)-1, 0)]); len(known) > 0 {
		where := "here"
		if len(key) > 1 {
			where = "in [" + strings.Join(key[:len(key)-1], ".") + "]"
		}
		reason += fmt.Sprintf("; the keys allowed %s are: %s", where, strings.Join(known, ", "))
	}
	l.errs = append(l.errs, &Error{File: l.file, Line: line, Column: col, Field: l.ix.display(path), Reason: reason})
}

// textValues reports times of day and durations not written as strings:
// go-toml hands the raw text of a number to UnmarshalText and returns its
// error without a position. It blanks them out and reports whether it did.
func (l *loader) textValues(doc []byte) bool {
	clock, duration := reflect.TypeOf(Clock{}), reflect.TypeOf(Duration{})
	blanked := false
	for _, v := range l.ix.values {
		if v.kind == unstable.String || l.skip[v.path] {
			continue
		}
		t := typeAt(schemaPath(v.path))
		var want string
		switch t {
		case clock:
			want = `a time of day as a string, e.g. "05:00"`
		case duration:
			want = `a duration as a string, e.g. "15m"`
		default:
			continue
		}
		p := l.ix.posAt(v.off)
		l.errs = append(l.errs, &Error{File: l.file, Line: p.line, Column: p.col, Field: l.ix.display(v.path),
			Reason: fmt.Sprintf("wrong type: got a TOML %s, want %s", kindName(v.kind), want)})
		if e := l.ix.exprAt(v.off); e >= 0 {
			l.blank(doc, e)
			blanked = true
		}
		l.skip[v.path] = true
	}
	return blanked
}

// kindName names a TOML kind as go-toml's messages do.
func kindName(k unstable.Kind) string {
	switch k {
	case unstable.Integer:
		return "integer"
	case unstable.Float:
		return "float"
	case unstable.Bool:
		return "boolean"
	case unstable.LocalTime:
		return "local time"
	case unstable.LocalDate:
		return "local date"
	case unstable.LocalDateTime:
		return "local date-time"
	case unstable.DateTime:
		return "date-time"
	case unstable.Array:
		return "array"
	case unstable.InlineTable:
		return "inline table"
	}
	return strings.ToLower(k.String())
}

// schemaPath drops the array indexes of a path: "app.3.database" becomes
// [app database].
func schemaPath(path string) []string {
	var key []string
	for _, p := range strings.Split(path, ".") {
		if _, err := strconv.Atoi(p); err != nil && p != "" {
			key = append(key, p)
		}
	}
	return key
}

// typeAt is the Go type the schema has at key (no array indexes), with
// pointers and slices removed; nil when the schema has no such key.
func typeAt(key []string) reflect.Type {
	t := reflect.TypeOf(Inventory{})
	for _, k := range key {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		found := false
		for i := 0; i < t.NumField(); i++ {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ","); tag == k {
				t = t.Field(i).Type
				found = true
				break
			}
		}
		if !found {
			return nil
		}
	}
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	return t
}

// knownKeys lists the TOML keys of the table at key (no array indexes), in
// schema order.
func knownKeys(key []string) []string {
	t := typeAt(key)
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ","); tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	return out
}
