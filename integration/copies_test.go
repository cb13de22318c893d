package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/softxs/v2backup/jobs/copies"
	"github.com/softxs/v2backup/jobs/sshtest"
)

// waitShippedCatalog waits until the host's remote view shows snapshot
// snap with its catalog, and returns the catalog's hash from SNAPSHOT.json.
func waitShippedCatalog(t *testing.T, view, snap string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var d struct {
			Snapshot      string `json:"snapshot"`
			CatalogSHA256 string `json:"catalog_sha256"`
		}
		b, err := os.ReadFile(filepath.Join(view, "SNAPSHOT.json"))
		if err == nil && json.Unmarshal(b, &d) == nil && d.Snapshot == snap && d.CatalogSHA256 != "" {
			return d.CatalogSHA256
		}
		if time.Now().After(deadline) {
			t.Fatalf("the remote view never showed snapshot %s with its catalog: %s %v", snap, b, err)
		}
		// The view moves on only after 1 s without requests: poll slower.
		time.Sleep(1500 * time.Millisecond)
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func copiesJSON(t *testing.T, e *env, args ...string) []copies.Night {
	t.Helper()
	out, errOut, code := e.v2backup(append([]string{"copies", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("copies %v on %s: exit %d\n%s\n%s", args, e.server, code, out, errOut)
	}
	var nights []copies.Night
	if err := json.Unmarshal([]byte(out), &nights); err != nil {
		t.Fatalf("copies --json: %v\n%s", err, out)
	}
	return nights
}

// Issue 7.4: every copy in one catalog. The host ships its catalog with
// each snapshot through its remote view; the backup server's pull
// verifies it and keeps it, and can then say where every copy of a night
// is, with equal digests.
func TestCopies(t *testing.T) {
	s := sshtest.StartT(t)
	e := newEnv(t)
	e.writeInventory(pullInventory(s))
	d := e.startDaemon()
	odin := *e
	odin.server = "odin.softxs.ch"
	hydro := e.path("mnt/web/demo.softxs.ch/hydro")
	sh(t, hydro, `mkdir -p db var && for i in $(seq 1 20); do head -c $((i*100)) /dev/urandom > var/a$i; done
		echo dump-1 > db/dump.sql`)
	s1, _ := e.quietSnapshot()
	sum := waitShippedCatalog(t, e.path("view"), s1)
	_ = d

	if out, errOut, code := odin.v2backup("pull"); code != 0 {
		t.Fatalf("pull: exit %d\n%s\n%s", code, out, errOut)
	}
	shipped := e.path("odin/v01/backup/remote/zg-3.softxs.ch/CATALOG.db")
	if got := sha256File(t, shipped); got != sum {
		t.Fatalf("%s: sha256 %s, SNAPSHOT.json says %s", shipped, got, sum)
	}

	// On the backup server: the host's snapshot (from the shipped
	// catalog) and the pulled copy, with the same digest.
	nights := copiesJSON(t, &odin, "hydro")
	if len(nights) != 1 || nights[0].Snapshot != s1 || nights[0].Mismatch {
		t.Fatalf("nights on odin: %+v", nights)
	}
	cs := nights[0].Copies
	if len(cs) != 2 || cs[0].Kind != copies.Local || cs[0].Where != "zg-3.softxs.ch" || cs[0].Snapshot != s1 ||
		cs[1].Kind != copies.Remote || cs[1].Where != "odin.softxs.ch" || cs[1].VerifiedAt.IsZero() {
		t.Fatalf("copies on odin: %+v", cs)
	}
	if cs[0].Digest != cs[1].Digest || cs[0].Files != 21 || cs[1].Files != 21 || len(cs[0].Digest) != 64 {
		t.Fatalf("digests differ or wrong file counts: %+v", cs)
	}
	// The host itself knows its own snapshot, with the same digest.
	if hn := copiesJSON(t, e, "hydro", "--at", s1); len(hn) != 1 || len(hn[0].Copies) != 1 || hn[0].Copies[0].Digest != cs[0].Digest {
		t.Fatalf("copies on the host: %+v", hn)
	}

	// An off-site drive copy of the pulled host adds a drive row.
	usb := e.path("usb")
	os.MkdirAll(usb, 0o755)
	if out, errOut, code := odin.v2backup("offsite", "--to", usb, "--label", "usb-1"); code != 0 {
		t.Fatalf("offsite: exit %d\n%s\n%s", code, out, errOut)
	}
	nights = copiesJSON(t, &odin, "hydro", "--at", s1[:10])
	if len(nights) != 1 || len(nights[0].Copies) != 3 {
		t.Fatalf("copies after offsite: %+v", nights)
	}
	dr := nights[0].Copies[2]
	if dr.Kind != copies.Drive || dr.Where != "usb-1" || dr.Digest != cs[0].Digest || dr.VerifiedAt.IsZero() || dr.Snapshot != s1 {
		t.Fatalf("drive copy: %+v", dr)
	}
	out, _, code := odin.v2backup("copies", "hydro")
	if code != 0 || !strings.Contains(out, "usb-1") || !strings.Contains(out, cs[0].Digest[:16]) {
		t.Fatalf("copies table: exit %d\n%s", code, out)
	}
	// No copy that night: exit 1 and says so.
	if _, errOut, code := odin.v2backup("copies", "hydro", "--at", "2001-01-01"); code != 1 || !strings.Contains(errOut, "no copy of the night 2001-01-01") {
		t.Fatalf("copies of a night without copies: exit %d: %s", code, errOut)
	}
}
