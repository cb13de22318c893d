package check

import (
	"fmt"
	"io"
	"strings"
)

// PluginName starts the first line of the plugin output.
const PluginName = "V2BACKUP"

// WriteNagios writes r as a Nagios/Icinga plugin does
// (https://nagios-plugins.org/doc/guidelines.html#AEN200): the first line
// "V2BACKUP STATE - summary | perfdata", then one line per problem. The
// performance data of each application is its success's age in seconds
// with the warning and critical ages ("U" when it never succeeded), its
// live files, and its live bytes.
func (r *Result) WriteNagios(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s - %s |", PluginName, r.Status, clean(r.summary()))
	for _, a := range r.Apps {
		age := "U"
		if a.AgeSeconds != nil {
			age = fmt.Sprintf("%ds", *a.AgeSeconds)
		}
		fmt.Fprintf(&b, " %s=%s;%d;%d;0 %s=%d;;;0 %s=%dB;;;0", label(a.Name+"_age"), age, a.WarnAge, a.CritAge,
			label(a.Name+"_files"), a.Files, label(a.Name+"_bytes"), a.Bytes)
	}
	b.WriteByte('\n')
	for _, p := range r.Problems {
		b.WriteString(clean(p.String()) + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// summary says how many applications have problems, and the worst one.
func (r *Result) summary() string {
	servers := map[string]bool{}
	for _, a := range r.Apps {
		servers[a.Server] = true
	}
	scope := fmt.Sprintf("%d application%s on %d server%s", len(r.Apps), plural(len(r.Apps)), len(servers), plural(len(servers)))
	if len(r.Problems) == 0 {
		return scope + " as expected"
	}
	var crit, warn int
	for _, p := range r.Problems {
		switch p.Status {
		case Critical:
			crit++
		case Warning:
			warn++
		}
	}
	return fmt.Sprintf("%d critical, %d warning in %s; %s", crit, warn, scope, r.Problems[0].String())
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// WriteUnknown writes the UNKNOWN plugin output for a check that could not
// be made.
func WriteUnknown(w io.Writer, err error) error {
	_, werr := fmt.Fprintf(w, "%s %s - %s\n", PluginName, Unknown, clean(err.Error()))
	return werr
}

// clean keeps text on one line and out of the performance data: a '|'
// would start it.
func clean(s string) string {
	return strings.ReplaceAll(oneLine(s), "|", "/")
}

// label quotes a performance data label; a quote in it is doubled.
func label(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
