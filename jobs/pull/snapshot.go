package pull

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/jobs/pull/sums"
	"github.com/softxs/v2backup/tiers"
	"github.com/softxs/v2backup/tiers/snapshot"
)

type known struct {
	sha     string
	size    int64
	mtimeNs int64
}

// snapshotRemote takes a hard-link snapshot of the whole remote tier and
// records its manifest in the catalog, so that `v2backup verify` can
// re-hash the pulled files on this side. Files just verified, and files
// unchanged since the previous snapshot, are not read again.
func (o *Options) snapshotRemote(ctx context.Context, name string, now time.Time, rep *Report) error {
	snapDir := o.Partition.SnapshotDir(tiers.Remote)
	if err := os.MkdirAll(snapDir, 0o700); err != nil {
		return err
	}
	unlock, err := snapshot.Lock(ctx, filepath.Join(snapDir, ".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	prev, hasPrev, err := snapshot.Latest(snapDir)
	if err != nil {
		return err
	}
	if hasPrev && name <= prev.Name {
		return fmt.Errorf("snapshot %s is not newer than the latest, %s (two pulls in one second, or the clock went back)", name, prev.Name)
	}

	hints := map[string]known{}
	if last, ok, err := o.DB.LatestSnapshot(ctx, tiers.Remote, string(o.BackupServer)); err != nil {
		return err
	} else if ok {
		err := o.DB.WalkManifest(ctx, last.ID, "", func(e catalog.ManifestEntry) error {
			if e.SHA256 != "" {
				hints[e.Path] = known{e.SHA256, e.Size, e.MTime.UnixNano()}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	apps := map[string]string{} // tier path of an app -> its name
	for i, h := range o.Hosts {
		r := &rep.Results[i]
		for _, f := range r.files {
			hints[string(h.Server)+"/"+f.Path] = known{f.SHA256, f.Size, f.MTimeNs}
		}
		for _, a := range h.Apps {
			apps[string(h.Server)+"/"+tiers.TierPath(a.VM, a.Relpath)] = a.Name
		}
	}

	b, err := o.DB.BeginSnapshot(ctx, tiers.Remote, string(o.BackupServer), name, now)
	if err != nil {
		return err
	}
	for i, h := range o.Hosts {
		if rep.Results[i].OK() {
			continue
		}
		for _, a := range h.Apps {
			if err := b.SetApp(a.Name, catalog.AppCarried); err != nil {
				b.Abort(context.WithoutCancel(ctx))
				return err
			}
		}
	}
	_, snap, err := b.Take(ctx, snapshot.Options{
		Source: o.Partition.RemoteRoot(), SnapDir: snapDir, Name: name,
		Hash: func(rel string, size, mtimeNs int64) (string, bool) {
			k, ok := hints[rel]
			return k.sha, ok && k.size == size && k.mtimeNs == mtimeNs
		},
	}, func(p string) string { return appOf(apps, p) })
	if err != nil {
		return err
	}
	if _, _, err = snapshot.UpdateLatest(snapDir); err != nil {
		return err
	}
	return o.recordCopies(ctx, snap, apps, rep)
}

// recordCopies stores each application's digest with the remote-tier
// snapshot and, with each pull it holds, that snapshot's name: the
// catalog can then say where every night of every host was copied.
func (o *Options) recordCopies(ctx context.Context, snap catalog.Snapshot, apps map[string]string, rep *Report) error {
	prefixes := make(map[string]string, len(apps))
	for p, name := range apps {
		prefixes[name] = p
	}
	var errs []error
	if err := o.DB.StoreAppDigests(ctx, snap.ID, prefixes); err != nil {
		errs = append(errs, fmt.Errorf("snapshot %s: application digests: %w", snap.Name, err))
	}
	for i := range rep.Results {
		if r := &rep.Results[i]; r.OK() && r.PullID != 0 {
			if err := o.DB.SetPullRemoteSnapshot(ctx, r.PullID, snap.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// appOf finds the application whose tree holds p.
func appOf(apps map[string]string, p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			if a, ok := apps[p[:i]]; ok {
				return a
			}
		}
	}
	return ""
}

// writeHistory writes backup-{server}-{yyyymmdd} for each host and
// backup-{app}-{yyyymmdd} for each of its applications, dated by the pull.
// A failed host's files say "failed" and count its last good copy.
func (o *Options) writeHistory(name string, now time.Time, rep *Report) ([]string, error) {
	if err := os.MkdirAll(o.HistoryDir, 0o755); err != nil {
		return nil, fmt.Errorf("pull: history directory: %w", err)
	}
	var written []string
	var errs []error
	for i, h := range o.Hosts {
		r := &rep.Results[i]
		status, note := snapshot.StatusComplete, "pulled snapshot "+r.Snapshot+" and verified it"
		files := r.files
		if !r.OK() {
			status, note = snapshot.StatusFailed, r.Error()+"; last good copy kept"
			var err error
			if files, err = countTree(o.Partition.RemoteServer(h.Server)); err != nil {
				note += " (" + err.Error() + ")"
			}
		}
		if rep.Snapshot != "" {
			note += "; remote snapshot " + rep.Snapshot
		}
		note = strings.ReplaceAll(note, "\n", " ")
		write := func(app, vm, rel, prefix string) {
			hs := snapshot.History{App: app, Server: string(h.Server), VM: vm, Relpath: rel, Snapshot: name,
				Status: status, Note: note, Written: now}
			for _, f := range files {
				if prefix == "" && (f.Path == sums.SumsName || f.Path == sums.DescName) {
					continue // the manifest files are not backup data
				}
				if !strings.HasPrefix(f.Path, prefix) {
					continue
				}
				hs.Files++
				hs.Bytes += f.Size
				if r.OK() && (r.prev == nil || r.prev[f.Path] != f.SHA256) {
					hs.Changed++
				}
			}
			p, err := snapshot.HistoryPath(o.HistoryDir, hs)
			if err == nil {
				err = snapshot.WriteHistory(o.HistoryDir, hs)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("pull: history of %s: %w", app, err))
				return
			}
			written = append(written, p)
		}
		write(string(h.Server), "", "", "")
		for _, a := range h.Apps {
			write(a.Name, string(a.VM), string(a.Relpath), tiers.TierPath(a.VM, a.Relpath)+"/")
		}
	}
	return written, errors.Join(errs...)
}

// countTree lists the regular files of a copy with their sizes (not
// hashes): what a failed host's history reports of its last good copy.
func countTree(root string) ([]sums.File, error) {
	var out []sums.File
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return filepath.SkipAll // no copy yet
		}
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			out = append(out, sums.File{Path: filepath.ToSlash(p[len(root)+1:]), Size: info.Size()})
		}
		return nil
	})
	return out, err
}
