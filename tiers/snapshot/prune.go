package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Pruned is what Prune did, or would do with dryRun.
type Pruned struct {
	Name    string // the snapshot
	Path    string // where it was
	MovedTo string // .deleting-* name it was renamed to; "" on a dry run
}

// Prune removes the named snapshots from snapdir's listing at once, by
// renaming each to .deleting-{name} (atomic: it is never seen half
// deleted), and returns them; Purge then deletes their trees. With dryRun
// nothing changes and the return value says what would go. The newest
// snapshot is never pruned (it is what the remote view and .history/latest
// serve): naming it is an error, as is naming a snapshot that does not
// exist; in both cases nothing is pruned. The caller holds the lock.
func Prune(ctx context.Context, snapdir string, names []string, dryRun bool) ([]Pruned, error) {
	all, err := List(snapdir)
	if err != nil {
		return nil, err
	}
	exists := make(map[string]bool, len(all))
	for _, s := range all {
		exists[s.Name] = true
	}
	var out []Pruned
	seen := make(map[string]bool)
	for _, n := range names {
		if _, err := ParseName(n); err != nil {
			return nil, fmt.Errorf("pruning in %s: %w", snapdir, err)
		}
		if !exists[n] {
			return nil, fmt.Errorf("pruning: no snapshot %s in %s", n, snapdir)
		}
		if n == all[len(all)-1].Name {
			return nil, fmt.Errorf("pruning: refusing to prune %s in %s, the latest snapshot", n, snapdir)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, Pruned{Name: n, Path: filepath.Join(snapdir, n)})
		}
	}
	if dryRun || len(out) == 0 {
		return out, nil
	}
	fd, err := unix.Open(snapdir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("pruning: opening %s: %w", snapdir, err)
	}
	defer unix.Close(fd)
	for i := range out {
		if err := ctx.Err(); err != nil {
			return out[:i], fmt.Errorf("pruning %s: %w", out[i].Path, err)
		}
		to, err := moveAside(fd, out[i].Name, out[i].Name)
		if err != nil {
			return out[:i], fmt.Errorf("pruning %s: %w", out[i].Path, err)
		}
		out[i].MovedTo = to
	}
	return out, nil
}

// PurgeOptions paces Purge.
type PurgeOptions struct {
	// Batch is the number of names removed between pauses; 0 means 2000.
	Batch int
	// Pause is the rest after each batch, which lets the mounts' own disk
	// work through; 0 means 20ms.
	Pause time.Duration
}

// Purge deletes the trees of pruned snapshots and of failed or interrupted
// runs (every .deleting-* in snapdir) and returns their names. It runs on an
// OS thread of its own at idle I/O priority and lowest CPU priority, and
// rests after every batch of removals, so that deleting a large snapshot
// never stalls the mounts. It stops when ctx is done; what is left is
// finished by the next Purge. It may run without the lock: nothing else
// touches .deleting-* entries.
func Purge(ctx context.Context, snapdir string, o PurgeOptions) ([]string, error) {
	if o.Batch <= 0 {
		o.Batch = 2000
	}
	if o.Pause <= 0 {
		o.Pause = 20 * time.Millisecond
	}
	names, err := workDirs(snapdir, deletingPrefix)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	type result struct {
		done []string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread never gets its priority back: it exits with the
		// goroutine, locked, so no other goroutine runs at idle priority.
		runtime.LockOSThread()
		lowerPriority()
		p := &purger{ctx: ctx, o: o}
		var done []string
		fd, err := unix.Open(snapdir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{nil, fmt.Errorf("purging: opening %s: %w", snapdir, err)}
			return
		}
		defer unix.Close(fd)
		for _, n := range names {
			if err := p.removeAll(fd, n, filepath.Join(snapdir, n)); err != nil {
				ch <- result{done, fmt.Errorf("purging %s: %w", snapdir, err)}
				return
			}
			done = append(done, n)
		}
		ch <- result{done, unix.Fsync(fd)}
	}()
	r := <-ch
	return r.done, r.err
}

// lowerPriority puts the calling thread in the idle I/O class and at nice
// 19. Both are best effort: a kernel without them just deletes faster.
func lowerPriority() {
	const (
		ioprioWhoProcess = 1 // a thread id, on Linux
		ioprioClassIdle  = 3
		ioprioClassShift = 13
	)
	tid := unix.Gettid()
	unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), ioprioClassIdle<<ioprioClassShift)
	unix.Setpriority(unix.PRIO_PROCESS, tid, 19)
}

type purger struct {
	ctx   context.Context
	o     PurgeOptions
	count int
}

// tick counts one removal and rests after each batch.
func (p *purger) tick() error {
	p.count++
	if p.count%p.o.Batch == 0 {
		t := time.NewTimer(p.o.Pause)
		defer t.Stop()
		select {
		case <-p.ctx.Done():
			return p.ctx.Err()
		case <-t.C:
		}
	}
	return p.ctx.Err()
}

// removeAll removes parentfd's entry name and, if it is a directory,
// everything below it, without following symlinks. path names it in errors.
func (p *purger) removeAll(parentfd int, name, path string) error {
	err := unix.Unlinkat(parentfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return p.tick()
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	fd, err := openBeneath(parentfd, name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	buf := make([]byte, 16<<10)
	for {
		ents, err := readDir(fd, buf)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if len(ents) == 0 {
			break
		}
		for _, de := range ents {
			if err := p.removeAll(fd, de.name, path+"/"+de.name); err != nil {
				unix.Close(fd)
				return err
			}
		}
		// Read again from the start: removing entries while reading a
		// directory may make getdents skip some.
		if _, err := unix.Seek(fd, 0, 0); err != nil {
			unix.Close(fd)
			return fmt.Errorf("rewinding %s: %w", path, err)
		}
	}
	unix.Close(fd)
	if err := unix.Unlinkat(parentfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing directory %s: %w", path, err)
	}
	return p.tick()
}

// Discard moves aside a snapshot that was just created but must not stay:
// its record could not be stored, so it must neither be the base of the
// next snapshot nor be served. Unlike Prune it takes the newest snapshot,
// which such a one always is. The caller holds the lock and has not
// published it (UpdateLatest); Purge deletes the tree.
func Discard(snapdir, name string) error {
	if _, err := ParseName(name); err != nil {
		return fmt.Errorf("discarding in %s: %w", snapdir, err)
	}
	fd, err := unix.Open(snapdir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("discarding %s: %w", name, err)
	}
	defer unix.Close(fd)
	if _, err := moveAside(fd, name, name); err != nil {
		return fmt.Errorf("discarding %s: %w", filepath.Join(snapdir, name), err)
	}
	return nil
}
