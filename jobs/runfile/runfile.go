// Package runfile is the small JSON status file an application backup job
// writes into its application's directory, {target}/{relpath}/.v2backup-job:
// once when it starts (status "running") and once when it ends (ok or
// failed). The job runs inside a VM and never sees the catalog; the host
// daemon sees this file written through the mount and records the run.
//
// The file is written atomically (temporary name in the same directory,
// fsync, rename), so a reader sees either the old record or the new one.
package runfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
)

// Name is the file's name inside the application's backup directory. Names
// starting with '.' there are reserved for v2backup.
const Name = ".v2backup-job"

// Version is the format version this package writes and reads.
const Version = 1

// Status is the state of a run.
type Status string

// The states a run file records.
const (
	Running Status = "running"
	OK      Status = "ok"
	Failed  Status = "failed"
)

// Record is one job run.
type Record struct {
	// Version is the format version; Write sets it.
	Version int `json:"version"`
	// App is the application's inventory name, Type its type.
	App  string `json:"app"`
	Type string `json:"type"`
	// Host is the machine (VM or server) that ran the job.
	Host   string    `json:"host,omitempty"`
	Status Status    `json:"status"`
	Start  time.Time `json:"start"`
	// End is zero while the run is running.
	End time.Time `json:"end,omitzero"`
	// Files and Bytes count the regular files of the application's backup
	// tree after the run (this file excluded).
	Files int64 `json:"files"`
	Bytes int64 `json:"bytes"`
	// Step is the step that failed, Error why; both empty unless failed.
	Step  string `json:"step,omitempty"`
	Error string `json:"error,omitempty"`
	// Checks are the verifications that passed, in order, e.g.
	// "dump db/hydro-2026-11-29T021500.sql.gz: gzip stream intact, completion line present".
	Checks []string `json:"checks,omitempty"`
	// Tools maps each external program used to its version line.
	Tools map[string]string `json:"tools,omitempty"`
}

// Validate reports the first inconsistency of r, naming the field.
func (r *Record) Validate() error {
	switch {
	case r.Version != Version:
		return fmt.Errorf("version %d: this v2backup reads version %d", r.Version, Version)
	case r.App == "":
		return errors.New("app: empty")
	case r.Start.IsZero():
		return errors.New("start: empty")
	}
	switch r.Status {
	case Running:
		if !r.End.IsZero() {
			return fmt.Errorf("end: set (%s) on a running record", r.End.Format(time.RFC3339))
		}
	case OK, Failed:
		if r.End.IsZero() {
			return fmt.Errorf("end: empty on a %s record", r.Status)
		}
		if r.End.Before(r.Start) {
			return fmt.Errorf("end %s is before start %s", r.End.Format(time.RFC3339Nano), r.Start.Format(time.RFC3339Nano))
		}
	default:
		return fmt.Errorf("status %q: want running, ok or failed", r.Status)
	}
	if r.Status == Failed && r.Error == "" {
		return errors.New("error: empty on a failed record")
	}
	if r.Status != Failed && (r.Error != "" || r.Step != "") {
		return fmt.Errorf("error/step: set on a %s record", r.Status)
	}
	if r.Files < 0 || r.Bytes < 0 {
		return fmt.Errorf("files %d, bytes %d: negative", r.Files, r.Bytes)
	}
	return nil
}

// Write stores r as dir/.v2backup-job atomically, with Version set. dir is
// the application's backup directory and must exist.
func Write(dir string, r Record) error {
	r.Version = Version
	if err := r.Validate(); err != nil {
		return fmt.Errorf("run file %s: %w", filepath.Join(dir, Name), err)
	}
	b, err := json.MarshalIndent(&r, "", "  ")
	if err != nil {
		return fmt.Errorf("run file %s: %w", filepath.Join(dir, Name), err)
	}
	b = append(b, '\n')
	path := filepath.Join(dir, Name)
	// renameio: temp file in dir, fsync, rename, fsync of dir.
	if err := renameio.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("run file %s: %w", path, err)
	}
	return nil
}

// maxSize bounds what Read accepts: a record is a few kilobytes.
const maxSize = 1 << 20

// Read loads and validates a run file. Unknown fields, trailing data and
// another version are errors that name the file.
func Read(path string) (Record, error) {
	var r Record
	f, err := os.Open(path)
	if err != nil {
		return r, fmt.Errorf("run file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return r, fmt.Errorf("run file %s: %w", path, err)
	}
	if len(b) > maxSize {
		return r, fmt.Errorf("run file %s: over %d bytes", path, maxSize)
	}
	return Parse(path, b)
}

// Parse decodes and validates a run file's content; name is for messages.
func Parse(name string, b []byte) (Record, error) {
	var r Record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("run file %s: %w", name, err)
	}
	if dec.More() {
		return Record{}, fmt.Errorf("run file %s: trailing data after the record", name)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Record{}, fmt.Errorf("run file %s: trailing data after the record", name)
	}
	if err := r.Validate(); err != nil {
		return Record{}, fmt.Errorf("run file %s: %w", name, err)
	}
	return r, nil
}
