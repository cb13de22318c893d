package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.rounds != 3 || cfg.seqMiB != 1024 || cfg.treeFiles != 0 || cfg.rssFiles != 100000 || cfg.dir != "/var/tmp" {
		t.Errorf("defaults: %+v", cfg)
	}
	if !slices.Equal(cfg.contenders, allContenders) || !slices.Equal(cfg.workloads, allWorkloads) {
		t.Errorf("default lists: %v %v", cfg.contenders, cfg.workloads)
	}
	if cfg.mergerfsOpts != defaultMergerfsOpts || len(cfg.bindfsOpts) != 0 {
		t.Errorf("peer options: %q %q", cfg.mergerfsOpts, cfg.bindfsOpts)
	}
}

func TestParseFlagsQuick(t *testing.T) {
	cfg, err := parseFlags([]string{"-quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.seqMiB != 64 || cfg.treeFiles != 2000 || cfg.rounds != 1 || cfg.rssFiles != 10000 {
		t.Errorf("-quick: %+v", cfg)
	}
	// Explicit flags win over -quick, in either order.
	cfg, err = parseFlags([]string{"-rounds", "2", "-quick", "-seq-mib=8", "-rss-files=0", "-tree-files=5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.seqMiB != 8 || cfg.treeFiles != 5 || cfg.rounds != 2 || cfg.rssFiles != 0 {
		t.Errorf("-quick with explicit sizes: %+v", cfg)
	}
}

func TestParseFlagsListsKeepCanonicalOrder(t *testing.T) {
	cfg, err := parseFlags([]string{"-contenders", " loopback,native ", "-workloads", "du,cp", "-bindfs-opts", "--multithreaded  -o x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.contenders, []string{"native", "loopback"}) || !slices.Equal(cfg.workloads, []string{"cp", "du"}) {
		t.Errorf("lists: %v %v", cfg.contenders, cfg.workloads)
	}
	if !slices.Equal(cfg.bindfsOpts, []string{"--multithreaded", "-o", "x"}) {
		t.Errorf("bindfs opts: %q", cfg.bindfsOpts)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-rounds", "0"}, "-rounds 0: must be at least 1"},
		{[]string{"-seq-mib", "0"}, "-seq-mib 0"},
		{[]string{"-tree-files", "-1"}, "-tree-files -1"},
		{[]string{"-rss-files", "-3"}, "-rss-files -3"},
		{[]string{"-contenders", "native,zfs"}, `-contenders: unknown item "zfs"`},
		{[]string{"-contenders", "native,bindfs,bindfs"}, `"bindfs" listed twice`},
		{[]string{"-contenders", " , "}, "empty list"},
		{[]string{"-contenders", "bindfs,loopback"}, "must include native"},
		{[]string{"-workloads", "seqread"}, "seqread needs seqwrite"},
		{[]string{"-workloads", "rsync,find"}, "find needs cp"},
		{[]string{"-workloads", "du"}, "du needs cp"},
		{[]string{"-relpath", "/abs"}, `-relpath "/abs"`},
		{[]string{"-relpath", "a/../b"}, "without '..'"},
		{[]string{"-relpath", ""}, `-relpath ""`},
		{[]string{"-vm", "a/b"}, `-vm "a/b"`},
		{[]string{"-vm", ""}, `-vm ""`},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"-no-such-flag"}, "not defined"},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q) = %v, want error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestParseFlagsHelp(t *testing.T) {
	var out strings.Builder
	_, err := parseFlags([]string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if !strings.Contains(out.String(), "-mergerfs-opts") {
		t.Errorf("usage lacks the flags:\n%s", out.String())
	}
}
