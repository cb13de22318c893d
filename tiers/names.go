// Package tiers is v2backup's naming convention: the three names that locate
// every byte of backup data (server, VM, relpath), their validation, and the
// paths derived from them under a backup partition.
//
// It is pure: no I/O, no imports from the rest of the project.
package tiers

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits of the Linux filesystems the partitions live on.
const (
	// MaxSegment is the longest file name (NAME_MAX).
	MaxSegment = 255
	// MaxPath is the longest path the kernel accepts (PATH_MAX, including NUL).
	MaxPath = 4096
	// maxFQDN is the longest DNS name (RFC 1035), without the trailing dot.
	maxFQDN = 253
	// maxLabel is the longest DNS label.
	maxLabel = 63
)

// NoVM is the reserved VM name for applications that run directly on a
// server, with no VM. It starts with an underscore, which no valid VM name
// may, so it can never collide with a real VM. Their local tier is
// {partition}/local/_host/{relpath}.
const NoVM VM = "_host"

// NameError is a rejected name: which field, what value, which rule.
type NameError struct {
	Field string // "server", "vm", "relpath", "snapshot"
	Value string
	Rule  string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Rule)
}

// Server is a validated fully qualified domain name of a host, e.g.
// "zg-3.softxs.ch".
type Server string

// VM is a validated VM name, e.g. "web", or NoVM.
type VM string

// Relpath is a validated application relpath: a lower-case virtual host FQDN
// followed by zero or more plain path segments, e.g. "demo.softxs.ch/hydro".
type Relpath string

// ParseServer validates a server FQDN: lower case, at least two labels.
func ParseServer(s string) (Server, error) {
	if err := checkFQDN("server", s, s); err != nil {
		return "", err
	}
	if !strings.Contains(s, ".") {
		return "", &NameError{"server", s, "must be a fully qualified domain name with at least two labels (e.g. zg-3.softxs.ch)"}
	}
	return Server(s), nil
}

// ParseVM validates a VM name: 1-63 characters of [a-z0-9-], starting with
// a letter or digit, not ending with '-'. The reserved NoVM is accepted.
func ParseVM(s string) (VM, error) {
	if s == string(NoVM) {
		return NoVM, nil
	}
	if s == "" {
		return "", &NameError{"vm", s, "must not be empty (use " + string(NoVM) + " for applications with no VM)"}
	}
	if err := checkLabel("vm", s, s); err != nil {
		return "", err
	}
	return VM(s), nil
}

// ParseRelpath validates a relpath: a lower-case FQDN, then zero or more
// segments separated by single '/'. Segments may not be "." or "..", may
// not be empty, may not contain control characters, and may not start with
// '.' (names starting with a dot are reserved for v2backup's own entries,
// such as .history).
func ParseRelpath(s string) (Relpath, error) {
	if s == "" {
		return "", &NameError{"relpath", s, "must not be empty"}
	}
	if len(s) >= MaxPath {
		return "", &NameError{"relpath", s, fmt.Sprintf("is %d bytes, over the system's path limit of %d", len(s), MaxPath-1)}
	}
	if strings.HasPrefix(s, "/") {
		return "", &NameError{"relpath", s, "must be relative (no leading /)"}
	}
	if strings.HasSuffix(s, "/") {
		return "", &NameError{"relpath", s, "must not end with /"}
	}
	segs := strings.Split(s, "/")
	for i, seg := range segs {
		if err := checkSegment("relpath", s, seg); err != nil {
			return "", err
		}
		if i == 0 {
			if err := checkFQDN("relpath", s, seg); err != nil {
				return "", err
			}
			if !strings.Contains(seg, ".") {
				return "", &NameError{"relpath", s, fmt.Sprintf("must start with the virtual host's fully qualified domain name; %q has no dot", seg)}
			}
		}
	}
	return Relpath(s), nil
}

// Host is the virtual host FQDN that starts the relpath.
func (r Relpath) Host() string {
	h, _, _ := strings.Cut(string(r), "/")
	return h
}

// Segments splits the relpath at '/'.
func (r Relpath) Segments() []string { return strings.Split(string(r), "/") }

// Contains reports whether other is r itself or lies under r.
func (r Relpath) Contains(other Relpath) bool {
	return other == r || strings.HasPrefix(string(other), string(r)+"/")
}

// Overlaps reports whether one of the relpaths contains the other: two
// applications of one VM may not overlap, or one would write into the other.
func (r Relpath) Overlaps(other Relpath) bool { return r.Contains(other) || other.Contains(r) }

func checkSegment(field, whole, seg string) error {
	switch {
	case seg == "":
		return &NameError{field, whole, "has an empty path segment (// or a trailing /)"}
	case seg == "." || seg == "..":
		return &NameError{field, whole, fmt.Sprintf("has a %q segment; only plain names are allowed", seg)}
	case len(seg) > MaxSegment:
		return &NameError{field, whole, fmt.Sprintf("has a segment of %d bytes, over the system's limit of %d", len(seg), MaxSegment)}
	case strings.HasPrefix(seg, "."):
		return &NameError{field, whole, fmt.Sprintf("has segment %q starting with '.', reserved for v2backup's own entries", seg)}
	case !utf8.ValidString(seg):
		return &NameError{field, whole, "is not valid UTF-8"}
	}
	for _, c := range seg {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			return &NameError{field, whole, fmt.Sprintf("contains control character %U", c)}
		}
	}
	return nil
}

// checkFQDN checks a lower-case DNS name. whole is what the error quotes.
func checkFQDN(field, whole, name string) error {
	if name == "" {
		return &NameError{field, whole, "must not be empty"}
	}
	if len(name) > maxFQDN {
		return &NameError{field, whole, fmt.Sprintf("host name is %d bytes, over DNS's limit of %d", len(name), maxFQDN)}
	}
	for _, label := range strings.Split(name, ".") {
		if err := checkLabel(field, whole, label); err != nil {
			return err
		}
	}
	return nil
}

// checkLabel checks one DNS label (also the rule for VM names).
func checkLabel(field, whole, label string) error {
	if label == "" {
		return &NameError{field, whole, "has an empty DNS label (.. or a leading/trailing dot)"}
	}
	if len(label) > maxLabel {
		return &NameError{field, whole, fmt.Sprintf("has a label of %d characters, over DNS's limit of %d", len(label), maxLabel)}
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(label)-1 {
				return &NameError{field, whole, fmt.Sprintf("label %q may not start or end with '-'", label)}
			}
		case c >= 'A' && c <= 'Z':
			return &NameError{field, whole, "must be lower case"}
		case c < 0x20 || c == 0x7f:
			return &NameError{field, whole, fmt.Sprintf("contains control character %U", rune(c))}
		default:
			return &NameError{field, whole, fmt.Sprintf("contains %q; only a-z, 0-9 and '-' are allowed in a DNS label", string(rune(c)))}
		}
	}
	return nil
}

// ParseAppName validates an application name, which appears in history file
// names (backup-{name}-{yyyymmdd}) and on command lines: 1-64 characters of
// [a-z0-9._-], starting with a letter or digit.
func ParseAppName(s string) (string, error) {
	if s == "" {
		return "", &NameError{"name", s, "must not be empty"}
	}
	if len(s) > 64 {
		return "", &NameError{"name", s, fmt.Sprintf("is %d characters, over the limit of 64", len(s))}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '.' || c == '_') && i > 0:
		case c >= 'A' && c <= 'Z':
			return "", &NameError{"name", s, "must be lower case"}
		default:
			return "", &NameError{"name", s, "may hold only a-z, 0-9, '.', '_' and '-', and must start with a letter or digit"}
		}
	}
	return s, nil
}
