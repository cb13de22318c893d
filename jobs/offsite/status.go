package offsite

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/softxs/v2backup/catalog"
	"github.com/softxs/v2backup/tiers"
)

// DriveStatus is one known drive and the newest copy of each server on it.
type DriveStatus struct {
	Medium catalog.Medium
	// Holds has the newest copy per server, by server name.
	Holds []catalog.Copy
	// Oldest is the oldest data on the drive (the earliest snapshot among
	// Holds), zero if it holds nothing: what a rotation looks at.
	Oldest time.Time
}

// Status lists every drive the catalog knows, with the date of the data on
// it, oldest data first, so the next drive to take on site is the first.
func Status(ctx context.Context, db *catalog.DB) ([]DriveStatus, error) {
	media, err := db.Media(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]DriveStatus, 0, len(media))
	for _, m := range media {
		copies, err := db.Copies(ctx, m.ID)
		if err != nil {
			return nil, err
		}
		newest := map[string]catalog.Copy{}
		for _, c := range copies { // oldest first: later ones win
			newest[c.Server] = c
		}
		ds := DriveStatus{Medium: m}
		for _, c := range newest {
			ds.Holds = append(ds.Holds, c)
			if t, err := tiers.ParseSnapshotName(c.Snapshot, time.Local); err == nil && (ds.Oldest.IsZero() || t.Before(ds.Oldest)) {
				ds.Oldest = t
			}
		}
		sort.Slice(ds.Holds, func(i, j int) bool { return ds.Holds[i].Server < ds.Holds[j].Server })
		out = append(out, ds)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Oldest, out[j].Oldest
		if a.IsZero() != b.IsZero() {
			return a.IsZero() // empty drives first: free to use
		}
		return a.Before(b)
	})
	return out, nil
}

// WriteStatus prints Status as a table: one line per drive and server.
func WriteStatus(w io.Writer, st []DriveStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DRIVE\tID\tLAST SEEN\tSERVER\tFROM\tDATA OF\tCOPIED\tVERIFIED\tFILES\tMB")
	for _, d := range st {
		seen := d.Medium.LastSeen.Local().Format("2006-01-02 15:04")
		if len(d.Holds) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t0\t0\n", d.Medium.Label, d.Medium.FSUUID, seen)
		}
		for _, c := range d.Holds {
			ver := "no"
			if !c.VerifiedAt.IsZero() {
				ver = c.VerifiedAt.Local().Format("2006-01-02 15:04")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.1f\n", d.Medium.Label, d.Medium.FSUUID, seen,
				c.Server, c.Tier, c.Snapshot, c.At.Local().Format("2006-01-02 15:04"), ver, c.Files, float64(c.Bytes)/1e6)
		}
	}
	return tw.Flush()
}
