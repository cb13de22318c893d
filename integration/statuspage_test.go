package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// statusInventory has one application per state: hydro backed up by its
// job (ok), www written with plain cp (ok by its snapshots), tracking whose
// job fails (failed), wiki never written (never).
const statusInventory = `
[site]
name = "test"
partition = "{root}/v01/backup"

[site.snapshot]
quiet = "1s"

[[server]]
name = "zg-3.softxs.ch"
host_mount = "{root}/mnt/_host"
remote_view = "{root}/view"
listen = "127.0.0.1:0"

[[vm]]
name = "web"
server = "zg-3.softxs.ch"
mount = "{root}/mnt/web"

[[vm]]
name = "intern"
server = "zg-3.softxs.ch"
mount = "{root}/mnt/intern"

[[app]]
name = "hydro"
description = "Hydro Demo"
server = "zg-3.softxs.ch"
vm = "web"
path = "{root}/apps/hydro"
relpath = "demo.softxs.ch/hydro"
type = "files"
[app.files]
paths = ["."]

[[app]]
name = "www"
description = "SoftXS Web Site"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "www.softxs.ch"
type = "files"

[[app]]
name = "tracking"
description = "Tracking System"
server = "zg-3.softxs.ch"
vm = "intern"
path = "{root}/apps/tracking-gone"
relpath = "intern.softxs.ch/tracking"
type = "files"
[app.files]
paths = ["."]

[[app]]
name = "wiki"
description = "Wiki"
server = "zg-3.softxs.ch"
vm = "web"
relpath = "wiki.softxs.ch"
type = "files"
`

// Chromium's window and screenshot size.
const shotW, shotH = 1400, 900

// failedRed is the page's "failed" badge colour (#d93025).
var failedRed = [3]uint8{0xd9, 0x30, 0x25}

// Issue 7, point 5: the daemon's status page, as a person sees it in a
// real headless Chromium, after real backups, snapshots and a failure.
func TestStatusPageInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("Debian's chromium is not installed (.ci/install-deps installs it): cannot test the status page in a browser")
	}
	e := newEnv(t)
	writeTree(t, e.path("apps/hydro"), map[string]string{"app/models/document.rb": "class Document; end\n", "public/index.html": "<h1>hydro</h1>\n"})
	e.writeInventory(statusInventory)
	d := e.startDaemon()
	d.waitLog(t, "http: status page and metrics at http://")
	m := httpAt.FindStringSubmatch(d.log.String())
	if m == nil {
		t.Fatalf("no address in the log:\n%s", d.log.String())
	}
	base := "http://" + m[1] + "/"

	// Two nights: www grows between them, so its trend is a line.
	www := e.path("mnt/web/www.softxs.ch")
	sh(t, e.root, "mkdir -p "+www+" && printf '<h1>SoftXS</h1>\\n' > "+www+"/index.html")
	if out, errOut, code := e.v2backup("backup", "--target", e.path("mnt/web"), "hydro"); code != 0 {
		t.Fatalf("backup hydro: exit %d\n%s\n%s", code, out, errOut)
	}
	e.quietSnapshot()
	sh(t, e.root, "head -c 20000 /dev/urandom > "+www+"/logo.png")
	e.quietSnapshot()
	out, errOut, code := e.v2backup("backup", "--target", e.path("mnt/intern"), "tracking")
	if code != 1 || !strings.Contains(errOut, "tracking") {
		t.Fatalf("backup of tracking from a missing directory: exit %d, want 1 naming tracking\n%s\n%s", code, out, errOut)
	}

	// The page's own JSON says when everything is recorded, and what the
	// failure's message is.
	var trackingErr string
	for deadline := time.Now().Add(30 * time.Second); ; {
		states, errs := pageStates(t, base+"status.json")
		if states["hydro"] == "ok" && states["www"] == "ok" && states["tracking"] == "failed" && states["wiki"] == "never" {
			trackingErr = errs["tracking"]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status.json states %v, want hydro and www ok, tracking failed, wiki never", states)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if trackingErr == "" {
		t.Fatal("status.json: the failed tracking has no error")
	}
	if resp, err := http.Post(base, "text/plain", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST %s: %s, want 405", base, resp.Status)
	}

	dir := artifactDir(t)
	dom := runChromium(t, chromium, "--dump-dom", base)
	if err := os.WriteFile(filepath.Join(dir, "statuspage.html"), []byte(dom), 0o644); err != nil {
		t.Fatal(err)
	}
	text := visibleText(dom)
	for _, want := range []string{
		"v2backup status", "Generated at",
		"Hydro Demo", "SoftXS Web Site", "Tracking System", "Wiki",
		"2 ok, 1 failed, 1 never",
		"2 snapshots",
		"No pulls of this host recorded here.",
		trackingErr,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the page does not show %q; it shows:\n%s", want, text)
		}
	}
	// Each row reads: description, name, server, VM, local path (the app's
	// path, when the inventory gives one), relpath, type, state.
	for _, row := range []string{
		`Hydro Demo hydro zg-3\.softxs\.ch web /\S+/apps/hydro demo\.softxs\.ch/hydro files ok \d{4}-\d\d-\d\d \d\d:\d\d \S+ \d+m ago`,
		`SoftXS Web Site www zg-3\.softxs\.ch web www\.softxs\.ch files ok \d{4}-\d\d-\d\d \d\d:\d\d \S+ \d+m ago 2 \d+\.\dK 2 nights no job run`,
		`Tracking System tracking zg-3\.softxs\.ch intern /\S+/apps/tracking-gone intern\.softxs\.ch/tracking files failed – \d+ \S+ (2 nights|no snapshots yet) failed \d{4}-`,
		`Wiki wiki zg-3\.softxs\.ch web wiki\.softxs\.ch files never – 0 0B`,
	} {
		if !regexp.MustCompile(row).MatchString(text) {
			t.Errorf("the page has no row matching %q; it shows:\n%s", row, text)
		}
	}
	// www's trend is a drawn line of two nights.
	if !regexp.MustCompile(`<svg class="spark"[^>]*aria-label="size over 2 nights: [^"]*"[^>]*>.*?<polyline points="[\d.]+,[\d.]+ [\d.]+,[\d.]+"`).MatchString(dom) {
		t.Errorf("no two-night trend chart in the DOM:\n%s", dom)
	}

	shot := filepath.Join(dir, "statuspage.png")
	os.Remove(shot)
	runChromium(t, chromium, "--screenshot="+shot, fmt.Sprintf("--window-size=%d,%d", shotW, shotH), base)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	if b := img.Bounds(); b.Dx() != shotW || b.Dy() != shotH {
		t.Errorf("screenshot %s is %dx%d, want %dx%d", shot, b.Dx(), b.Dy(), shotW, shotH)
	}
	// The failed badges are drawn: a blank or unstyled page has no red.
	if n := countColour(img, failedRed); n < 200 {
		t.Errorf("screenshot %s has %d pixels of the failed red, want the failed badges (at least 200)", shot, n)
	}
	t.Logf("status page screenshot: %s", shot)
}

// pageStates reads the page's JSON: each application's state and error.
func pageStates(t *testing.T, url string) (states, errs map[string]string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	var reps []struct {
		Apps []statusJSON `json:"apps"`
	}
	if err := json.Unmarshal(body, &reps); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
	states, errs = map[string]string{}, map[string]string{}
	for _, r := range reps {
		for _, a := range r.Apps {
			states[a.Name], errs[a.Name] = a.State, a.Error
		}
	}
	return states, errs
}

// artifactDir is where the screenshot is kept: $V2BACKUP_ARTIFACTS, else
// integration/artifacts (gitignored).
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("V2BACKUP_ARTIFACTS")
	if dir == "" {
		dir = "artifacts" // the test runs in integration/
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifact directory: %v", err)
	}
	return dir
}

// runChromium runs headless Chromium on url with a private profile and no
// way out to the internet, and returns its stdout. Chromium starts helper
// processes: the whole process group is killed when it is done or fails.
func runChromium(t *testing.T, chromium string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url := args[len(args)-1]
	cmd := exec.CommandContext(ctx, chromium, append([]string{
		"--headless=new", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + t.TempDir(),
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-extensions", "--disable-default-apps", "--disable-breakpad", "--disable-crash-reporter",
		"--hide-scrollbars", "--mute-audio", "--force-device-scale-factor=1",
		// Only the daemon's address resolves: nothing reaches the internet.
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--proxy-server=direct://", "--proxy-bypass-list=*",
	}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	pgid := cmd.Process.Pid
	err := cmd.Wait()
	syscall.Kill(-pgid, syscall.SIGKILL) // helpers left behind, if any
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr.String())
	}
	return stdout.String()
}

var (
	invisible = regexp.MustCompile(`(?is)<(style|title|script|head)\b.*?</(style|title|script|head)>`)
	tag       = regexp.MustCompile(`<[^>]*>`)
	spaces    = regexp.MustCompile(`\s+`)
)

// visibleText is the text a person reads in a DOM: no styles, no titles
// (tooltips), tags as word breaks, entities decoded, whitespace collapsed.
func visibleText(dom string) string {
	s := invisible.ReplaceAllString(dom, " ")
	s = tag.ReplaceAllString(s, " ")
	return strings.TrimSpace(spaces.ReplaceAllString(html.UnescapeString(s), " "))
}

// countColour counts pixels within a small distance of c.
func countColour(img image.Image, c [3]uint8) int {
	near := func(a uint32, b uint8) bool { d := int(a>>8) - int(b); return d > -12 && d < 12 }
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if near(r, c[0]) && near(g, c[1]) && near(bl, c[2]) {
				n++
			}
		}
	}
	return n
}
