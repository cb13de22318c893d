package route

import (
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func table(t *testing.T) *Table {
	t.Helper()
	tb, err := NewTable([]App{
		{"hydro", "demo.softxs.ch/hydro"},
		{"www", "www.softxs.ch"},
		{"blog", "www.softxs.ch/blog"},
		{"track", "intern.softxs.ch/apps/tracking"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestClassify(t *testing.T) {
	tb := table(t)
	for _, c := range []struct {
		p    string
		kind Kind
		app  string
	}{
		{"", Root, ""},
		{"demo.softxs.ch", Synthetic, ""},
		{"demo.softxs.ch/hydro", AppRoot, "hydro"},
		{"demo.softxs.ch/hydro/db/x.sql", InApp, "hydro"},
		{"demo.softxs.ch/other", Absent, ""},
		{"demo.softxs.ch/hydrox", Absent, ""},
		{"intern.softxs.ch", Synthetic, ""},
		{"intern.softxs.ch/apps", Synthetic, ""},
		{"intern.softxs.ch/apps/tracking/a", InApp, "track"},
		{"www.softxs.ch", AppRoot, "www"},
		{"www.softxs.ch/index.html", InApp, "www"},
		{"www.softxs.ch/blog", AppRoot, "blog"},
		{"www.softxs.ch/blog/post", InApp, "blog"},
		{"www.softxs.ch/blogger", InApp, "www"},
		{"nothing", Absent, ""},
		{".history", Absent, ""},
	} {
		got := tb.Classify(c.p)
		if got.Kind != c.kind || got.App != c.app {
			t.Errorf("Classify(%q) = %v %q, want %v %q", c.p, got.Kind, got.App, c.kind, c.app)
		}
	}
}

func TestChildren(t *testing.T) {
	tb := table(t)
	for dir, want := range map[string][]string{
		"":                 {"demo.softxs.ch", "intern.softxs.ch", "www.softxs.ch"},
		"demo.softxs.ch":   {"hydro"},
		"intern.softxs.ch": {"apps"},
		"www.softxs.ch":    {"blog"},
		"nothing":          nil,
	} {
		if got := tb.Children(dir); !reflect.DeepEqual(got, want) {
			t.Errorf("Children(%q) = %q, want %q", dir, got, want)
		}
	}
	if r, ok := tb.Relpath("blog"); !ok || r != "www.softxs.ch/blog" {
		t.Errorf("Relpath(blog) = %q %v", r, ok)
	}
	if a, ok := tb.AppAt("demo.softxs.ch/hydro"); !ok || a != "hydro" {
		t.Errorf("AppAt = %q %v", a, ok)
	}
	if n := len(tb.Apps()); n != 4 {
		t.Errorf("Apps: %d", n)
	}
}

func TestNewTableErrors(t *testing.T) {
	for _, c := range []struct {
		apps []App
		want string
	}{
		{[]App{{"", "a.ch"}}, `relpath "a.ch": empty name`},
		{[]App{{"a", ""}}, `application "a": relpath "": empty`},
		{[]App{{"a", "/a.ch"}}, "must be relative"},
		{[]App{{"a", "a.ch/../b"}}, "must be clean"},
		{[]App{{"a", "a.ch/"}}, "must be clean"},
		{[]App{{"a", "a.ch/.hidden"}}, `segment ".hidden"`},
		{[]App{{"a", "a.ch/x\x00"}}, "NUL"},
		{[]App{{"a", "a.ch"}, {"b", "a.ch"}}, `already used by application "a"`},
		{[]App{{"a", "a.ch"}, {"a", "b.ch"}}, `"a" listed twice`},
	} {
		_, err := NewTable(c.apps)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewTable(%q) = %v, want error containing %q", c.apps, err, c.want)
		}
	}
}

func TestSymlinkCheck(t *testing.T) {
	const app = "demo.softxs.ch/hydro"
	const host = "/v01/backup/local/web/demo.softxs.ch/hydro"
	for _, c := range []struct {
		dir, target string
		ok          bool
	}{
		{app, "file", true},
		{app, "./a/b/../c", false}, // '..' after a name
		{app + "/sub", "../file", true},
		{app + "/sub", "../../hydro/file", false}, // passes through the synthetic dir
		{app + "/a/b", "../../x", true},
		{app + "/a/b", "../../../x", false},
		{app, "..", false},
		{app, "../other/x", false},
		{app + "/a", "..", true},
		{app + "/a", "../.", true},
		{app, "r/../../x", false},
		{"", "..", false},
		{app, "", false},
		{app, "a\x00b", false},
		{app, "/etc/passwd", false},
		{app, host + "/x", true},
		{app, host, true},
		{app, host + "x/y", false},
		{app, host + "/../x", false},
		{app, "/demo.softxs.ch/hydro/x", false},
	} {
		err := SymlinkCheck(app, c.dir, host, c.target)
		if (err == nil) != c.ok {
			t.Errorf("SymlinkCheck(%q, %q) = %v, want ok=%v", c.dir, c.target, err, c.ok)
		}
	}
	if err := SymlinkCheck(app, app, "", "/x"); err == nil {
		t.Error("absolute target with no host dir accepted")
	}
}

func TestRenameCheck(t *testing.T) {
	tb := table(t)
	for _, c := range []struct {
		src, dst string
		want     Verdict
	}{
		{"demo.softxs.ch/hydro/a", "demo.softxs.ch/hydro/b/c", Allow},
		{"demo.softxs.ch/hydro/a", "www.softxs.ch/a", CrossApp},
		{"www.softxs.ch/a", "www.softxs.ch/blog/a", CrossApp},
		{"demo.softxs.ch/hydro/a", "demo.softxs.ch/a", OutOfTree},
		{"demo.softxs.ch/hydro/a", "a", OutOfTree},
		{"demo.softxs.ch/hydro", "demo.softxs.ch/hydro2", OutOfTree},
		{"www.softxs.ch/blog", "www.softxs.ch/blog2", OutOfTree},
		{"www.softxs.ch/x", "www.softxs.ch/blog", OutOfTree},
		{"intern.softxs.ch/apps/tracking/x", "intern.softxs.ch/apps/tracking/y", Allow},
	} {
		if got := tb.RenameCheck(c.src, c.dst); got != c.want {
			t.Errorf("RenameCheck(%q, %q) = %v, want %v", c.src, c.dst, got, c.want)
		}
	}
}

func TestMknodAndCopy(t *testing.T) {
	for mode, want := range map[uint32]syscall.Errno{
		syscall.S_IFREG | 0644:  0,
		0644:                    0,
		syscall.S_IFCHR | 0644:  syscall.EPERM,
		syscall.S_IFBLK | 0644:  syscall.EPERM,
		syscall.S_IFIFO | 0644:  syscall.EPERM,
		syscall.S_IFSOCK | 0644: syscall.EPERM,
	} {
		if got := MknodCheck(mode); got != want {
			t.Errorf("MknodCheck(%o) = %v, want %v", mode, got, want)
		}
	}
	for _, c := range []struct {
		mode  uint32
		nlink uint64
		want  bool
	}{
		{syscall.S_IFREG | 0644, 1, false},
		{syscall.S_IFREG | 0644, 2, true},
		{syscall.S_IFDIR | 0755, 5, false},
		{syscall.S_IFLNK | 0777, 2, false},
	} {
		if got := NeedsPrivateCopy(c.mode, c.nlink); got != c.want {
			t.Errorf("NeedsPrivateCopy(%o, %d) = %v", c.mode, c.nlink, got)
		}
	}
	for k, s := range map[Kind]string{Absent: "absent", Root: "root", Synthetic: "synthetic", AppRoot: "app-root", InApp: "in-app"} {
		if k.String() != s {
			t.Errorf("%d.String() = %q", k, k.String())
		}
	}
}
