package jobs

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// ProgressTo is f when it is a terminal, else nil: progress for a person
// watching, quiet under cron. Use it for Options.Progress.
func ProgressTo(f *os.File) io.Writer {
	if IsTerminal(f) {
		return f
	}
	return nil
}
