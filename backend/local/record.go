package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// record is what RunDir holds for each process started and not yet known
// to have ended, in a file named after the process's ident.
type record struct {
	App        string `json:"app"`
	PID        string `json:"pid"`
	Generation uint64 `json:"generation"`
	OSPID      int    `json:"os_pid"`
	StartTime  uint64 `json:"start_time"`
	// BootID tells records of an earlier boot apart: after a reboot, start
	// times count from zero again and could match a stranger.
	BootID string `json:"boot_id"`
	// UID and Scratch are the process's uid and scratch directory when it
	// runs isolated.
	UID     uint32 `json:"uid,omitempty"`
	Scratch string `json:"scratch,omitempty"`
	// Sandboxed: the process is pid 1 of its own pid namespace
	// (namespaces mode), and bubblewrap's child.
	Sandboxed bool `json:"sandboxed,omitempty"`
}

func (r record) ident() ident { return ident{r.OSPID, r.StartTime} }

const (
	recordExt = ".json"
	tmpPrefix = ".tmp-"
)

func (b *Backend) recordPath(id ident) string {
	return filepath.Join(b.cfg.RunDir, id.String()+recordExt)
}

// writeRecord writes r atomically, so readers never see half a record.
func (b *Backend) writeRecord(r record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(b.cfg.RunDir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), b.recordPath(r.ident()))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// readRecord returns the record of id, or ok=false if there is none from
// this boot: then id is not (or no longer) a process of this backend.
func (b *Backend) readRecord(id ident) (record, bool, error) {
	data, err := os.ReadFile(b.recordPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, err
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return record{}, false, fmt.Errorf("run record %s: %w", id, err)
	}
	if r.ident() != id || r.BootID != b.bootID {
		return record{}, false, nil
	}
	return r, true, nil
}

// forget removes the record of a process known to have ended, and its
// scratch directory.
func (b *Backend) forget(id ident) {
	if r, ok, _ := b.readRecord(id); ok {
		b.removeScratch(r.Scratch)
	}
	if err := os.Remove(b.recordPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		b.cfg.Logger.Warn("remove run record", "id", id.String(), "err", err)
	}
}

// records reads every record in RunDir. It removes what cannot be a live
// process of this boot (records of ended processes, of an earlier boot, and
// temporary files a crash left behind) and returns the rest.
func (b *Backend) records() ([]record, error) {
	entries, err := os.ReadDir(b.cfg.RunDir)
	if err != nil {
		return nil, fmt.Errorf("local backend: read run dir: %w", err)
	}
	var out []record
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			// A writer renames its file within microseconds.
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Minute {
				os.Remove(filepath.Join(b.cfg.RunDir, name))
			}
			continue
		}
		base, isRecord := strings.CutSuffix(name, recordExt)
		id, ok := parseIdent(base)
		if !isRecord || !ok {
			continue // not ours
		}
		r, ok, err := b.readRecord(id)
		if err != nil {
			b.cfg.Logger.Warn("skip run record", "err", err)
			continue
		}
		if !ok || !running(id) {
			b.forget(id)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}
