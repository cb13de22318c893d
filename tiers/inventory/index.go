package inventory

import (
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// pos is a place in the file: 1-based line and byte column, as go-toml
// counts them.
type pos struct{ line, col int }

// keyAt is a key (or array element) of the document and the byte offset
// where it starts.
type keyAt struct {
	off  int
	path string
}

// valueAt is the value of a key: where it starts and its TOML kind.
type valueAt struct {
	off  int
	path string
	kind unstable.Kind
}

// expr is one top-level expression: a key = value or a [table] header.
type expr struct {
	start, end int // byte range, up to the next expression
	header     bool
	path       string
}

// index says where every table header, key and array element of a document
// is, by resolved path. Array-table elements carry their index, so the path
// of the relpath of the fourth [[app]] is "app.3.relpath" and its header is
// "app.3". go-toml's decoder reports neither (it stops at one error, and its
// keys have no index), so the loader parses the document once with the
// unstable parser to name and place everything it reports.
type index struct {
	lineStarts []int
	at         map[string]pos    // path -> position of the key, or of a header's '['
	names      map[string]string // "app.3" -> its name = "...", for messages
	keys       []keyAt           // sorted by offset
	values     []valueAt         // every key's value, in file order
	exprs      []expr
}

// buildIndex parses data; a syntax error comes back with its byte offset.
func buildIndex(data []byte) (*index, *unstable.ParserError, int) {
	ix := &index{at: map[string]pos{}, names: map[string]string{}, lineStarts: []int{0}}
	for i, c := range data {
		if c == '\n' {
			ix.lineStarts = append(ix.lineStarts, i+1)
		}
	}
	arrays := map[string]int{} // path of an array of tables -> elements so far
	var prefix []string
	var p unstable.Parser
	p.Reset(data)
	offsetOf := func(r unstable.Range) int { return int(r.Offset) }
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			var path []string
			first := -1
			it := e.Key()
			for it.Next() {
				k := it.Node()
				if first < 0 {
					first = offsetOf(k.Raw)
				}
				path = append(path, string(k.Data))
				last := it.IsLast()
				if last && e.Kind == unstable.ArrayTable {
					j := strings.Join(path, ".")
					n := arrays[j]
					arrays[j] = n + 1
					path = append(path, strconv.Itoa(n))
				} else if n, ok := arrays[strings.Join(path, ".")]; ok {
					path = append(path, strconv.Itoa(n-1))
				}
			}
			start := first
			for start > 0 && (data[start-1] == '[' || data[start-1] == ' ' || data[start-1] == '\t') {
				start--
			}
			prefix = path
			j := strings.Join(path, ".")
			ix.at[j] = ix.posAt(start)
			ix.keys = append(ix.keys, keyAt{start, j}, keyAt{first, j})
			ix.exprs = append(ix.exprs, expr{start: start, header: true, path: j})
		case unstable.KeyValue:
			path := ix.keyValue(e, prefix, offsetOf)
			ix.exprs = append(ix.exprs, expr{start: offsetOf(e.Raw), path: path})
		}
	}
	for i := range ix.exprs {
		if i+1 < len(ix.exprs) {
			ix.exprs[i].end = ix.exprs[i+1].start
		} else {
			ix.exprs[i].end = len(data)
		}
	}
	sort.SliceStable(ix.keys, func(i, j int) bool { return ix.keys[i].off < ix.keys[j].off })
	if err := p.Error(); err != nil {
		perr, ok := err.(*unstable.ParserError)
		if !ok {
			perr = &unstable.ParserError{Message: err.Error()}
		}
		off := len(data)
		if perr.Highlight != nil {
			if o := cap(data) - cap(perr.Highlight); o >= 0 && o <= len(data) {
				off = o
			}
		}
		return ix, perr, off
	}
	return ix, nil, 0
}

// keyValue records a key = value (and what an inline table or array holds)
// under prefix and returns its path.
func (ix *index) keyValue(e *unstable.Node, prefix []string, offsetOf func(unstable.Range) int) string {
	path := append([]string(nil), prefix...)
	first := -1
	it := e.Key()
	for it.Next() {
		k := it.Node()
		if first < 0 {
			first = offsetOf(k.Raw)
		}
		path = append(path, string(k.Data))
	}
	j := strings.Join(path, ".")
	ix.at[j] = ix.posAt(first)
	ix.keys = append(ix.keys, keyAt{first, j})
	v := e.Value()
	ix.values = append(ix.values, valueAt{offsetOf(v.Raw), j, v.Kind})
	if path[len(path)-1] == "name" && v.Kind == unstable.String && len(path) > 1 {
		ix.names[strings.Join(path[:len(path)-1], ".")] = string(v.Data)
	}
	ix.value(v, j, offsetOf)
	return j
}

func (ix *index) value(v *unstable.Node, path string, offsetOf func(unstable.Range) int) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				ix.keyValue(c, strings.Split(path, "."), offsetOf)
			}
		}
	case unstable.Array:
		i := 0
		it := v.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			j := path + "." + strconv.Itoa(i)
			i++
			off := offsetOf(c.Raw)
			if c.Raw.Length > 0 || c.Kind == unstable.InlineTable {
				ix.at[j] = ix.posAt(off)
				ix.keys = append(ix.keys, keyAt{off, j})
			}
			ix.value(c, j, offsetOf)
		}
	}
}

// posAt converts a byte offset to a line and column.
func (ix *index) posAt(off int) pos {
	l := sort.Search(len(ix.lineStarts), func(i int) bool { return ix.lineStarts[i] > off }) - 1
	if l < 0 {
		l = 0
	}
	return pos{l + 1, off - ix.lineStarts[l] + 1}
}

// offset converts a line and column back to a byte offset.
func (ix *index) offset(p pos) int {
	if p.line < 1 || p.line > len(ix.lineStarts) {
		return -1
	}
	return ix.lineStarts[p.line-1] + p.col - 1
}

// fieldAt is the path of the key or element that owns the byte at off: the
// last one starting at or before it.
func (ix *index) fieldAt(off int) string {
	i := sort.Search(len(ix.keys), func(i int) bool { return ix.keys[i].off > off }) - 1
	if i < 0 {
		return ""
	}
	return ix.keys[i].path
}

// exprAt is the top-level expression holding off, or -1.
func (ix *index) exprAt(off int) int {
	i := sort.Search(len(ix.exprs), func(i int) bool { return ix.exprs[i].start > off }) - 1
	if i < 0 || off >= ix.exprs[i].end {
		return -1
	}
	return i
}

// place is where to report a problem with path: the key itself, else (a
// missing key) the nearest enclosing table that is written in the file.
func (ix *index) place(path string) pos {
	for {
		if p, ok := ix.at[path]; ok {
			return p
		}
		i := strings.LastIndexByte(path, '.')
		if i < 0 {
			return pos{}
		}
		path = path[:i]
	}
}

// display turns a path into the field name of messages: "app.3.relpath"
// becomes "app[hydro].relpath" when that app has a name, else
// "app[3].relpath".
func (ix *index) display(path string) string {
	if path == "" {
		return ""
	}
	parts := strings.Split(path, ".")
	var b strings.Builder
	b.WriteString(parts[0])
	for i := 1; i < len(parts); i++ {
		if _, err := strconv.Atoi(parts[i]); err == nil {
			if n := ix.names[strings.Join(parts[:i+1], ".")]; n != "" && !strings.ContainsAny(n, "[]") {
				b.WriteString("[" + n + "]")
			} else {
				b.WriteString("[" + parts[i] + "]")
			}
			continue
		}
		b.WriteString("." + parts[i])
	}
	return b.String()
}
