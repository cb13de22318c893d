package inventory

import (
	"errors"
	"os"
	"testing"
)

// FuzzParse checks that no input panics the loader and that every problem
// found comes back as Errors with a reason.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("testdata/v1/softxs.toml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(base + app))
	for _, c := range errCases {
		f.Add([]byte(base + c.doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := Parse("fuzz.toml", data)
		if err == nil {
			if inv == nil {
				t.Fatal("nil inventory and no error")
			}
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %T %v, want Errors", err, err)
		}
		for _, e := range es {
			if e.Reason == "" || e.File != "fuzz.toml" {
				t.Fatalf("error without a reason or file: %#v", e)
			}
		}
	})
}
