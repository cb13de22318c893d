package jobs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/softxs/v2backup/tiers/inventory"
)

// DumpsDatabase says whether a backup job of app writes a database dump
// into {tree}/db: the types that have a database (rails, drawmgt,
// wordpress).
func DumpsDatabase(app *inventory.App) bool {
	switch app.Type {
	case inventory.TypeRails, inventory.TypeDrawMGT, inventory.TypeWordPress:
		return true
	}
	return false
}

// DumpAdapter is the dump kind VerifyDump should demand of app's dumps:
// the inventory's adapter if it names one, else "" (either kind).
func DumpAdapter(app *inventory.App) string {
	if app.Database != nil {
		switch app.Database.Adapter {
		case inventory.AdapterMySQL:
			return AdapterMySQL
		case inventory.AdapterPostgreSQL:
			return AdapterPostgres
		}
	}
	return ""
}

// NewestDumpOf is the newest dump in the backup tree of an application
// (tree is {partition}/local/{vm}/{relpath} or its remote copy) and its
// file information; an error if there is none or it is empty.
func NewestDumpOf(tree string) (string, os.FileInfo, error) {
	dir := filepath.Join(tree, DumpDir)
	path, err := NewestDump(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, fmt.Errorf("%s: no database dump: the directory does not exist", dir)
	}
	if err != nil {
		return "", nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", nil, err
	}
	if fi.Size() == 0 {
		return path, fi, fmt.Errorf("dump %s is empty", path)
	}
	return path, fi, nil
}
