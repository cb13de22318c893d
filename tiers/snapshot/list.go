package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/renameio/v2"
	"github.com/softxs/v2backup/tiers"
)

// Info describes one complete snapshot.
type Info struct {
	Name string    // e.g. "2026-11-28T050000"
	Time time.Time // the time the name encodes, local time zone
	Path string    // {snapdir}/{name}
}

// List returns the complete snapshots in snapdir, oldest first. Work
// directories (.building-*, .deleting-*), the latest link and anything else
// whose name is not a snapshot name are not listed; nor are symlinks, even
// with a snapshot's name. A snapdir that does not exist has no snapshots.
func List(snapdir string) ([]Info, error) {
	des, err := os.ReadDir(snapdir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing snapshots: %w", err)
	}
	var out []Info
	for _, de := range des {
		if !de.IsDir() {
			continue
		}
		t, err := ParseName(de.Name())
		if err != nil {
			continue
		}
		out = append(out, Info{Name: de.Name(), Time: t, Path: filepath.Join(snapdir, de.Name())})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// Latest returns the newest complete snapshot in snapdir; ok is false if
// there is none.
func Latest(snapdir string) (info Info, ok bool, err error) {
	l, err := List(snapdir)
	if err != nil || len(l) == 0 {
		return Info{}, false, err
	}
	return l[len(l)-1], true, nil
}

// UpdateLatest points {snapdir}/latest at the newest complete snapshot
// (a relative symlink, replaced atomically and made durable), or removes it
// when there is no snapshot. It returns the snapshot it points at.
func UpdateLatest(snapdir string) (Info, bool, error) {
	info, ok, err := Latest(snapdir)
	if err != nil {
		return Info{}, false, err
	}
	link := filepath.Join(snapdir, LatestLink)
	if !ok {
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return Info{}, false, fmt.Errorf("removing latest link: %w", err)
		}
		return Info{}, false, tiers.SyncDir(snapdir)
	}
	if cur, err := os.Readlink(link); err == nil && cur == info.Name {
		return info, true, nil
	}
	if err := renameio.Symlink(info.Name, link); err != nil {
		return Info{}, false, fmt.Errorf("pointing %s at %s: %w", link, info.Name, err)
	}
	return info, true, tiers.SyncDir(snapdir)
}

// workDirs returns the names in snapdir that start with prefix.
func workDirs(snapdir, prefix string) ([]string, error) {
	des, err := os.ReadDir(snapdir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", snapdir, err)
	}
	var out []string
	for _, de := range des {
		if strings.HasPrefix(de.Name(), prefix) {
			out = append(out, de.Name())
		}
	}
	return out, nil
}
