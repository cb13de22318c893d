package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// workload is one timed command, run on every contender every round.
type workload struct {
	name  string
	label string // for the table
	// smallFile workloads are the ones v2backup must win against the best
	// peer (the "twice as fast" target).
	smallFile bool
	// files is how many regular files a copy workload writes.
	files int
	// roundSetup runs once per round before the first contender.
	roundSetup func(ctx context.Context) error
	// prepare runs untimed before each timed command.
	prepare func(ctx context.Context, c *contender) error
	// cold names the files whose cached pages are dropped after prepare,
	// so that the command reads them from the disk.
	cold func(c *contender) []string
	argv func(c *contender) []string
	// verify checks the command really did its work, so a broken mount
	// cannot win by doing nothing.
	verify func(c *contender, res execResult) error
}

// Names of what the workloads leave in each contender's work directory.
const (
	seqFile  = "seq.bin"
	rsyncDir = "rsync"
	cpDir    = "cp"
)

func buildWorkloads(cfg config, src *sourceTree) []*workload {
	seqBytes := int64(cfg.seqMiB) << 20
	sizeLabel := fmt.Sprintf("%d MiB", cfg.seqMiB)
	if cfg.seqMiB%1024 == 0 {
		sizeLabel = fmt.Sprintf("%d GiB", cfg.seqMiB/1024)
	}
	treeLabel := fmt.Sprintf("%d files", src.stats.Files)
	walkDir := func(c *contender) string { return filepath.Join(c.work, cpDir) }
	all := map[string]*workload{
		wlSeqWrite: {
			name:  wlSeqWrite,
			label: "seq write " + sizeLabel + " +fsync",
			prepare: func(ctx context.Context, c *contender) error {
				return removeIfExists(filepath.Join(c.work, seqFile))
			},
			argv: func(c *contender) []string {
				return []string{"dd", "if=/dev/zero", "of=" + filepath.Join(c.work, seqFile), "bs=1M",
					"count=" + strconv.Itoa(cfg.seqMiB), "conv=fsync"}
			},
			verify: func(c *contender, _ execResult) error {
				for _, p := range []string{filepath.Join(c.work, seqFile), filepath.Join(c.backingWork, seqFile)} {
					info, err := os.Stat(p)
					if err != nil {
						return err
					}
					if info.Size() != seqBytes {
						return fmt.Errorf("%s: %d bytes after dd, want %d", p, info.Size(), seqBytes)
					}
				}
				return nil
			},
		},
		wlSeqRead: {
			name:  wlSeqRead,
			label: "seq read " + sizeLabel + " cold",
			cold: func(c *contender) []string {
				return []string{filepath.Join(c.work, seqFile), filepath.Join(c.backingWork, seqFile)}
			},
			argv: func(c *contender) []string {
				return []string{"dd", "if=" + filepath.Join(c.work, seqFile), "of=/dev/null", "bs=1M"}
			},
			verify: func(c *contender, res execResult) error {
				n, err := ddBytes(res.stderr)
				if err != nil {
					return err
				}
				if n != seqBytes {
					return fmt.Errorf("dd read %d bytes from %s, want %d", n, filepath.Join(c.work, seqFile), seqBytes)
				}
				return nil
			},
		},
		wlRsync: {
			name:       wlRsync,
			label:      "rsync -a " + treeLabel,
			smallFile:  true,
			files:      src.stats.Files,
			roundSetup: func(context.Context) error { return src.warm() },
			prepare: func(ctx context.Context, c *contender) error {
				return moveAside(c.work, rsyncDir)
			},
			argv: func(c *contender) []string {
				return []string{"rsync", "-a", src.root + "/", filepath.Join(c.work, rsyncDir) + "/"}
			},
			verify: func(c *contender, _ execResult) error {
				return errors.Join(src.verifyCopy(filepath.Join(c.work, rsyncDir)),
					src.verifyCopy(filepath.Join(c.backingWork, rsyncDir)))
			},
		},
		wlCp: {
			name:       wlCp,
			label:      "cp -a " + treeLabel,
			smallFile:  true,
			files:      src.stats.Files,
			roundSetup: func(context.Context) error { return src.warm() },
			prepare: func(ctx context.Context, c *contender) error {
				return moveAside(c.work, cpDir)
			},
			argv: func(c *contender) []string {
				return []string{"cp", "-a", src.root, filepath.Join(c.work, cpDir)}
			},
			verify: func(c *contender, _ execResult) error {
				return errors.Join(src.verifyCopy(filepath.Join(c.work, cpDir)),
					src.verifyCopy(filepath.Join(c.backingWork, cpDir)))
			},
		},
		wlFind: {
			name:      wlFind,
			label:     "find (warm) " + treeLabel,
			smallFile: true,
			prepare: func(ctx context.Context, c *contender) error {
				_, err := execTimed(ctx, []string{"find", walkDir(c)})
				return err
			},
			argv: func(c *contender) []string { return []string{"find", walkDir(c)} },
			verify: func(c *contender, res execResult) error {
				if res.lines != src.stats.entries() {
					return fmt.Errorf("find %s printed %d entries, the tree has %d", walkDir(c), res.lines, src.stats.entries())
				}
				return nil
			},
		},
		wlDu: {
			name:      wlDu,
			label:     "du -s (warm) " + treeLabel,
			smallFile: true,
			prepare: func(ctx context.Context, c *contender) error {
				_, err := execTimed(ctx, []string{"du", "-s", walkDir(c)})
				return err
			},
			argv: func(c *contender) []string { return []string{"du", "-s", walkDir(c)} },
			verify: func(c *contender, res execResult) error {
				kib, err := duKiB(res.head)
				if err != nil {
					return fmt.Errorf("du -s %s: %w", walkDir(c), err)
				}
				// Allocation differs between filesystems, but never below the bytes stored.
				if kib*1024 < src.stats.Bytes {
					return fmt.Errorf("du -s %s: %d KiB, less than the %d bytes the tree holds", walkDir(c), kib, src.stats.Bytes)
				}
				return nil
			},
		},
	}
	var out []*workload
	for _, name := range cfg.workloads {
		out = append(out, all[name])
	}
	return out
}

// oldDir holds, below a contender's work directory, the trees earlier
// rounds copied; the run's temp dir goes at the end.
const oldDir = ".old"

// moveAside renames work/name (if present) into work/.old instead of
// deleting it: on ext4 without a journal (this project's CI disk), every
// file created within a minute of many deletions in the same block group
// makes the allocator skip the recently freed inodes one by one
// (recently_deleted), which made the copies right after a delete several
// times slower for every contender and measured the disk, not the mounts.
func moveAside(work, name string) error {
	p := filepath.Join(work, name)
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(work, oldDir), 0o755); err != nil {
		return err
	}
	to, err := os.MkdirTemp(filepath.Join(work, oldDir), name+".")
	if err != nil {
		return err
	}
	return os.Rename(p, filepath.Join(to, name))
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

var ddBytesRE = regexp.MustCompile(`(?m)^(\d+) bytes`)

// ddBytes parses the byte count from dd's closing statistics line.
func ddBytes(stderr []byte) (int64, error) {
	m := ddBytesRE.FindSubmatch(stderr)
	if m == nil {
		return 0, fmt.Errorf("no byte count in dd's output %q", stderr)
	}
	return strconv.ParseInt(string(m[1]), 10, 64)
}

// duKiB parses `du -s` output: "SIZE\tPATH".
func duKiB(out []byte) (int64, error) {
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return 0, fmt.Errorf("unexpected output %q", out)
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("unexpected output %q: %w", out, err)
	}
	return n, nil
}

// execResult is what a timed command left behind.
type execResult struct {
	elapsed time.Duration
	lines   int    // newlines on stdout
	head    []byte // start of stdout
	stderr  []byte
}

// stdoutSink counts lines and keeps the start of a command's output, so a
// `find` over 10,000 entries costs the harness no memory.
type stdoutSink struct {
	lines int
	head  []byte
}

const headMax = 4096

func (s *stdoutSink) Write(p []byte) (int, error) {
	s.lines += bytes.Count(p, []byte{'\n'})
	if room := headMax - len(s.head); room > 0 {
		s.head = append(s.head, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// execTimed runs argv and times it from start to exit. A non-zero exit is
// an error naming the command and quoting its stderr.
func execTimed(ctx context.Context, argv []string) (execResult, error) {
	var sink stdoutSink
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = &sink
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	res := execResult{elapsed: time.Since(start), lines: sink.lines, head: sink.head, stderr: stderr.Bytes()}
	if err != nil {
		msg := bytes.TrimSpace(stderr.Bytes())
		if len(msg) > 2000 {
			msg = msg[:2000]
		}
		return res, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
	}
	return res, nil
}

// dropCaches flushes dirty data and drops the cached pages of files, for
// a mount both its own and those of the backing file (read through
// passthrough). Only those: dropping every cache of the machine
// (/proc/sys/vm/drop_caches) would also make the kernel forget the files
// and pages of every other FUSE mount, those of tests running beside this
// one included.
func dropCaches(files []string) error {
	syscall.Sync()
	for _, p := range files {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("drop cached pages: %w", &os.PathError{Op: "open", Path: p, Err: err})
		}
		err = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("drop cached pages: %w", &os.PathError{Op: "fadvise", Path: p, Err: err})
		}
	}
	return nil
}

// writeSmallFiles writes n files of about 1 KiB, 1,000 per directory, under
// dir, each with distinct content (the daemon hashes every one).
func writeSmallFiles(ctx context.Context, dir string, n int) error {
	body := bytes.Repeat([]byte("v2backup small file benchmark\n"), 34)
	for i := 0; i < n; i++ {
		if i%1000 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("d%04d", i/1000)), 0o755); err != nil {
				return err
			}
		}
		p := filepath.Join(dir, fmt.Sprintf("d%04d", i/1000), fmt.Sprintf("f%06d", i))
		if err := os.WriteFile(p, append([]byte(strconv.Itoa(i)+"\n"), body...), 0o644); err != nil {
			return err
		}
	}
	return nil
}
