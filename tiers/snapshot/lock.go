package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockedError is returned by TryLock when another run holds the lock.
type LockedError struct {
	Path  string    // the lock file
	PID   int       // holder's process id, 0 if it has not written it yet
	Since time.Time // when the holder took the lock, zero if unknown
}

func (e *LockedError) Error() string {
	who := "another snapshot run"
	if e.PID > 0 {
		who = fmt.Sprintf("another snapshot run (pid %d)", e.PID)
	}
	msg := fmt.Sprintf("%s holds %s", who, e.Path)
	if !e.Since.IsZero() {
		msg += " since " + e.Since.Local().Format(time.RFC3339)
	}
	return msg + "; wait for it to finish or stop it"
}

// TryLock takes an exclusive flock(2) on path, creating the file if needed,
// and returns at once: with the unlock function, or with a *LockedError
// naming the holder's pid and start time. The lock is tied to the open file,
// so it is released by unlock or when the process dies, never left stale;
// two TryLock calls in one process exclude each other too.
func TryLock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|os.O_SYNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("snapshot lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, readHolder(path)
		}
		return nil, fmt.Errorf("snapshot lock: flock %s: %w", path, err)
	}
	// The file is never removed: removing a flock file lets two runs lock
	// two different inodes under one name.
	stamp := fmt.Sprintf("%d %s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339Nano))
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(stamp), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("snapshot lock: recording holder in %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// Lock is TryLock that waits while another run holds the lock, until ctx
// is done; then it returns ctx's error together with the holder.
func Lock(ctx context.Context, path string) (unlock func(), err error) {
	wait := 20 * time.Millisecond
	for {
		unlock, err := TryLock(path)
		var held *LockedError
		if !errors.As(err, &held) {
			return unlock, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("waiting for the snapshot lock: %w (%v)", ctx.Err(), held)
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

// readHolder builds the LockedError from what the holder wrote; a holder
// that has not written yet gives an error without pid.
func readHolder(path string) *LockedError {
	e := &LockedError{Path: path}
	b, err := os.ReadFile(path)
	if err != nil {
		return e
	}
	pid, since, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if !ok {
		return e
	}
	e.PID, _ = strconv.Atoi(pid)
	e.Since, _ = time.Parse(time.RFC3339Nano, since)
	return e
}
