package inventory

import (
	"strings"
	"testing"
	"time"
)

func TestExpectDefaults(t *testing.T) {
	inv, err := Parse("min.toml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if inv.Site.Expect != DefaultExpect || inv.Site.CopyMaxAgeDays != DefaultCopyMaxAgeDays {
		t.Errorf("defaults: expect %+v, copy_max_age_days %d", inv.Site.Expect, inv.Site.CopyMaxAgeDays)
	}
	if DefaultExpect.WarnAge.Duration != 26*time.Hour || DefaultExpect.CritAge.Duration != 50*time.Hour || DefaultExpect.MinFiles != 1 || DefaultCopyMaxAgeDays != 8 {
		t.Errorf("documented defaults changed: %+v %d", DefaultExpect, DefaultCopyMaxAgeDays)
	}
	// What is set is kept; the rest defaults.
	inv, err = Parse("set.toml", []byte(strings.Replace(minimal, "[site]\n",
		"[site]\ncopy_max_age_days = 15\nexpect = { warn_age = \"10h\", min_mb = 3.5, finished_by = \"06:30\" }\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	want := Expect{FinishedBy: Clock{6, 30, true}, MinFiles: 1, MinMB: 3.5, WarnAge: Duration{10 * time.Hour}, CritAge: Duration{50 * time.Hour}}
	if inv.Site.Expect != want || inv.Site.CopyMaxAgeDays != 15 {
		t.Errorf("set: %+v %d, want %+v 15", inv.Site.Expect, inv.Site.CopyMaxAgeDays, want)
	}
}

// A warning age above the critical age, defaults included, would never
// warn: it is an error at the key that makes it so.
func TestExpectAgesValidated(t *testing.T) {
	app := func(expect string) string {
		return strings.Replace(minimal, "name = \"mail\"\n", "name = \"mail\"\nexpect = { "+expect+" }\n", 1)
	}
	for _, c := range []struct {
		name, doc, want string
	}{
		{"site warn above the default crit", strings.Replace(minimal, "[site]\n", "[site]\nexpect = { warn_age = \"60h\" }\n", 1),
			"site.expect.warn_age: warn_age 60h0m0s is above crit_age 50h0m0s (the default)"},
		{"site warn above site crit", strings.Replace(minimal, "[site]\n", "[site]\nexpect = { warn_age = \"3h\", crit_age = \"2h\" }\n", 1),
			"site.expect.warn_age: warn_age 3h0m0s is above crit_age 2h0m0s\n"},
		{"app warn above site crit", app(`warn_age = "51h"`),
			`.expect.warn_age: warn_age 51h0m0s is above crit_age 50h0m0s (application "mail"`},
		{"app crit below site warn", app(`crit_age = "25h"`),
			`.expect.crit_age: warn_age 26h0m0s is above crit_age 25h0m0s (application "mail"`},
		{"negative copy_max_age_days", strings.Replace(minimal, "[site]\n", "[site]\ncopy_max_age_days = -1\n", 1),
			"site.copy_max_age_days: -1 is negative"},
	} {
		_, err := Parse("bad.toml", []byte(c.doc))
		if err == nil || !strings.Contains(err.Error()+"\n", c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	// Equal ages, or an application's own consistent pair, are fine.
	for _, doc := range []string{
		strings.Replace(minimal, "[site]\n", "[site]\nexpect = { warn_age = \"50h\" }\n", 1),
		app(`warn_age = "60h", crit_age = "70h"`),
		app(`min_files = 3`),
	} {
		if _, err := Parse("ok.toml", []byte(doc)); err != nil {
			t.Errorf("%v", err)
		}
	}
}
