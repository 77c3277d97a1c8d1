// Package bolt implements store.Metadata on an embedded bbolt database: the
// default metadata store of a single-machine praas, kept in one file under the
// data directory.
//
// Records are JSON. The file holds six top-level buckets:
//
//	apps      name -> App
//	procs     app (bucket) -> pid -> Process
//	backups   app (bucket) -> pid (bucket) -> big-endian seq -> Message
//	replicas  id -> Replica
//	keys      id -> Key (admin keys and app keys alike)
//	usage     app (bucket) -> big-endian start millis + pid -> Usage
//
// Usage is kept apart from procs because it outlives the processes and apps
// it counts; its keys sort by time, so a window is one cursor range and
// pruning deletes from the front of each app's bucket.
//
// API keys are few, so ListKeys and DeleteApp scan the keys bucket rather
// than keep an index by app.
//
// Sequence numbers come from the NextSequence counter of the (app, pid)
// bucket. Revisions are kept in the records themselves; a record written
// before revisions existed reads as revision 0 and can be updated as such.
// Every write is one bbolt transaction, fsynced before it returns; bbolt runs
// one writer at a time, so a read-compare-write inside one transaction is a
// compare-and-set. bbolt locks the file, so one database can be open in one
// process only.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

var (
	bucketApps     = []byte("apps")
	bucketProcs    = []byte("procs")
	bucketBackups  = []byte("backups")
	bucketReplicas = []byte("replicas")
	bucketKeys     = []byte("keys")
	bucketUsage    = []byte("usage")
)

// openTimeout bounds the wait for the file lock held by another process.
const openTimeout = 5 * time.Second

// Store is a store.Metadata backed by a bbolt file.
type Store struct {
	db   *bbolt.DB
	path string
}

var _ store.Metadata = (*Store)(nil)

// Open opens or creates the database at path, creating its directory if
// needed.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("bolt: %w", err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: openTimeout})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("bolt: open %s: locked by another process: %w", path, errs.ErrUnavailable)
	}
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketApps, bucketProcs, bucketBackups, bucketReplicas, bucketKeys, bucketUsage} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bolt: init %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Path returns the file the store was opened on.
func (s *Store) Path() string { return s.path }

// Close closes the database file.
func (s *Store) Close() error { return s.db.Close() }

// view and update run fn in a read-only or read-write transaction after
// checking ctx; bbolt itself cannot be interrupted.
func (s *Store) view(ctx context.Context, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(fn)
}

func (s *Store) update(ctx context.Context, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(fn)
}

func (s *Store) CreateApp(ctx context.Context, app store.App) error {
	if app.Name == "" {
		return fmt.Errorf("bolt: empty app name: %w", errs.ErrInvalidArgument)
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		apps := tx.Bucket(bucketApps)
		if apps.Get([]byte(app.Name)) != nil {
			return fmt.Errorf("app %q: %w", app.Name, errs.ErrAlreadyExists)
		}
		app.Revision = 1
		return putJSON(apps, []byte(app.Name), app)
	})
}

func (s *Store) GetApp(ctx context.Context, name string) (store.App, error) {
	var app store.App
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		var err error
		app, err = getApp(tx, name)
		return err
	})
	return app, err
}

func (s *Store) ListApps(ctx context.Context) ([]store.App, error) {
	apps := []store.App{}
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		// bbolt iterates keys in byte order, which is Go's string order.
		return tx.Bucket(bucketApps).ForEach(func(k, v []byte) error {
			var app store.App
			if err := json.Unmarshal(v, &app); err != nil {
				return fmt.Errorf("bolt: decode app %q: %w", k, err)
			}
			apps = append(apps, app)
			return nil
		})
	})
	return apps, err
}

func (s *Store) DeleteApp(ctx context.Context, name string) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		apps := tx.Bucket(bucketApps)
		if apps.Get([]byte(name)) == nil {
			return fmt.Errorf("app %q: %w", name, errs.ErrNotFound)
		}
		if err := apps.Delete([]byte(name)); err != nil {
			return err
		}
		for _, parent := range [][]byte{bucketProcs, bucketBackups} {
			err := tx.Bucket(parent).DeleteBucket([]byte(name))
			if err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
				return err
			}
		}
		return deleteAppKeys(tx, name)
	})
}

// deleteAppKeys removes the keys of app.
func deleteAppKeys(tx *bbolt.Tx, app string) error {
	keys := tx.Bucket(bucketKeys)
	var doomed [][]byte
	err := keys.ForEach(func(id, v []byte) error {
		var k store.Key
		if err := json.Unmarshal(v, &k); err != nil {
			return fmt.Errorf("bolt: decode key %q: %w", id, err)
		}
		if k.App == app {
			doomed = append(doomed, bytes.Clone(id))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range doomed { // not during ForEach: deleting may skip keys
		if err := keys.Delete(id); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) UpdateApp(ctx context.Context, app store.App) (store.App, error) {
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		old, err := getApp(tx, app.Name)
		if err != nil {
			return err
		}
		if old.Revision != app.Revision {
			return fmt.Errorf("app %q: stale revision %d, stored is %d: %w",
				app.Name, app.Revision, old.Revision, errs.ErrFailedPrecondition)
		}
		app.Epoch = old.Epoch // BumpEpoch owns it
		app.Revision++
		return putJSON(tx.Bucket(bucketApps), []byte(app.Name), app)
	})
	if err != nil {
		return store.App{}, err
	}
	return app, nil
}

func (s *Store) BumpEpoch(ctx context.Context, name string) (uint64, error) {
	var epoch uint64
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		app, err := getApp(tx, name)
		if err != nil {
			return err
		}
		app.Epoch++
		app.Revision++
		epoch = app.Epoch
		return putJSON(tx.Bucket(bucketApps), []byte(name), app)
	})
	return epoch, err
}

func (s *Store) CreateProcess(ctx context.Context, p store.Process) (store.Process, error) {
	if p.PID == "" {
		return store.Process{}, fmt.Errorf("bolt: empty pid: %w", errs.ErrInvalidArgument)
	}
	p.Revision = 1
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		if _, err := getApp(tx, p.App); err != nil {
			return err
		}
		procs, err := tx.Bucket(bucketProcs).CreateBucketIfNotExists([]byte(p.App))
		if err != nil {
			return err
		}
		if procs.Get([]byte(p.PID)) != nil {
			return fmt.Errorf("process %s/%s: %w", p.App, p.PID, errs.ErrAlreadyExists)
		}
		return putJSON(procs, []byte(p.PID), p)
	})
	if err != nil {
		return store.Process{}, err
	}
	return p, nil
}

func (s *Store) UpdateProcess(ctx context.Context, p store.Process) (store.Process, error) {
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		var v []byte
		procs := tx.Bucket(bucketProcs).Bucket([]byte(p.App))
		if procs != nil {
			v = procs.Get([]byte(p.PID))
		}
		if v == nil {
			return fmt.Errorf("process %s/%s: %w", p.App, p.PID, errs.ErrNotFound)
		}
		var old store.Process
		if err := json.Unmarshal(v, &old); err != nil {
			return fmt.Errorf("bolt: decode process %s/%s: %w", p.App, p.PID, err)
		}
		if old.Revision != p.Revision {
			return fmt.Errorf("process %s/%s: stale revision %d, stored is %d: %w",
				p.App, p.PID, p.Revision, old.Revision, errs.ErrFailedPrecondition)
		}
		p.Revision++
		return putJSON(procs, []byte(p.PID), p)
	})
	if err != nil {
		return store.Process{}, err
	}
	return p, nil
}

func (s *Store) GetProcess(ctx context.Context, app, pid string) (store.Process, error) {
	var p store.Process
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		var v []byte
		if procs := tx.Bucket(bucketProcs).Bucket([]byte(app)); procs != nil {
			v = procs.Get([]byte(pid))
		}
		if v == nil {
			return fmt.Errorf("process %s/%s: %w", app, pid, errs.ErrNotFound)
		}
		return json.Unmarshal(v, &p)
	})
	return p, err
}

func (s *Store) ListProcesses(ctx context.Context, app string) ([]store.Process, error) {
	procs := []store.Process{}
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		if _, err := getApp(tx, app); err != nil {
			return err
		}
		b := tx.Bucket(bucketProcs).Bucket([]byte(app))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var p store.Process
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("bolt: decode process %s/%s: %w", app, k, err)
			}
			procs = append(procs, p)
			return nil
		})
	})
	return procs, err
}

func (s *Store) DeleteProcess(ctx context.Context, app, pid string) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		procs := tx.Bucket(bucketProcs).Bucket([]byte(app))
		if procs == nil || procs.Get([]byte(pid)) == nil {
			return fmt.Errorf("process %s/%s: %w", app, pid, errs.ErrNotFound)
		}
		if err := procs.Delete([]byte(pid)); err != nil {
			return err
		}
		if backups := tx.Bucket(bucketBackups).Bucket([]byte(app)); backups != nil {
			err := backups.DeleteBucket([]byte(pid))
			if err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
				return err
			}
		}
		return nil
	})
}

func (s *Store) AppendBackup(ctx context.Context, app, pid string, m store.Message) (uint64, error) {
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		procs := tx.Bucket(bucketProcs).Bucket([]byte(app))
		if procs == nil || procs.Get([]byte(pid)) == nil {
			return fmt.Errorf("process %s/%s: %w", app, pid, errs.ErrNotFound)
		}
		backups, err := tx.Bucket(bucketBackups).CreateBucketIfNotExists([]byte(app))
		if err != nil {
			return err
		}
		queue, err := backups.CreateBucketIfNotExists([]byte(pid))
		if err != nil {
			return err
		}
		if m.Seq, err = queue.NextSequence(); err != nil {
			return err
		}
		if err := addQueueStats(queue, 1, int64(len(m.Data))); err != nil {
			return err
		}
		return putJSON(queue, seqKey(m.Seq), m)
	})
	if err != nil {
		return 0, err
	}
	return m.Seq, nil
}

func (s *Store) ListBackup(ctx context.Context, app, pid string) ([]store.Message, error) {
	msgs := []store.Message{}
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		queue := backupQueue(tx, app, pid)
		if queue == nil {
			return nil
		}
		return queue.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return nil // the stats
			}
			var m store.Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("bolt: decode backup %s/%s#%x: %w", app, pid, k, err)
			}
			msgs = append(msgs, m)
			return nil
		})
	})
	return msgs, err
}

func (s *Store) TrimBackup(ctx context.Context, app, pid string, upTo uint64) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		queue := backupQueue(tx, app, pid)
		if queue == nil {
			return nil
		}
		// Keys are big-endian, so the first key is the lowest seq. Restart
		// from First after each delete: Next after Cursor.Delete may skip.
		// The stats key sorts after every message key.
		c := queue.Cursor()
		n, bytes := 0, int64(0)
		for k, v := c.First(); len(k) == 8 && binary.BigEndian.Uint64(k) <= upTo; k, v = c.First() {
			var m store.Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("bolt: decode backup %s/%s#%x: %w", app, pid, k, err)
			}
			n, bytes = n+1, bytes+int64(len(m.Data))
			if err := c.Delete(); err != nil {
				return err
			}
		}
		if n == 0 {
			return nil
		}
		return addQueueStats(queue, -n, -bytes)
	})
}

func (s *Store) BackupStats(ctx context.Context, app, pid string) (store.QueueStats, error) {
	var st store.QueueStats
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		if queue := backupQueue(tx, app, pid); queue != nil {
			st = queueStats(queue)
		}
		return nil
	})
	return st, err
}

// statsKey holds a queue's QueueStats in its bucket, beside the 8-byte
// message keys, after all of which it sorts. Queues written before it
// existed count from their first append or trim since.
var statsKey = []byte("\xff\xffstats")

func queueStats(queue *bbolt.Bucket) store.QueueStats {
	v := queue.Get(statsKey)
	if len(v) != 16 {
		return store.QueueStats{}
	}
	return store.QueueStats{Messages: int(binary.BigEndian.Uint64(v)), Bytes: int64(binary.BigEndian.Uint64(v[8:]))}
}

func addQueueStats(queue *bbolt.Bucket, n int, bytes int64) error {
	st := queueStats(queue)
	st.Messages, st.Bytes = max(st.Messages+n, 0), max(st.Bytes+bytes, 0)
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, uint64(st.Messages))
	binary.BigEndian.PutUint64(v[8:], uint64(st.Bytes))
	return queue.Put(statsKey, v)
}

func (s *Store) PutReplica(ctx context.Context, r store.Replica) error {
	if r.ID == "" {
		return fmt.Errorf("bolt: empty replica id: %w", errs.ErrInvalidArgument)
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return putJSON(tx.Bucket(bucketReplicas), []byte(r.ID), r)
	})
}

func (s *Store) ListReplicas(ctx context.Context) ([]store.Replica, error) {
	replicas := []store.Replica{}
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketReplicas).ForEach(func(k, v []byte) error {
			var r store.Replica
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("bolt: decode replica %q: %w", k, err)
			}
			replicas = append(replicas, r)
			return nil
		})
	})
	return replicas, err
}

func (s *Store) DeleteReplica(ctx context.Context, id string) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketReplicas).Delete([]byte(id)) // nil if absent
	})
}

func (s *Store) CreateKey(ctx context.Context, k store.Key) error {
	if k.ID == "" {
		return fmt.Errorf("bolt: empty key id: %w", errs.ErrInvalidArgument)
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		if k.App != "" {
			if _, err := getApp(tx, k.App); err != nil {
				return err
			}
		}
		keys := tx.Bucket(bucketKeys)
		if keys.Get([]byte(k.ID)) != nil {
			return fmt.Errorf("key %q: %w", k.ID, errs.ErrAlreadyExists)
		}
		return putJSON(keys, []byte(k.ID), k)
	})
}

func (s *Store) GetKey(ctx context.Context, id string) (store.Key, error) {
	var k store.Key
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketKeys).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("key %q: %w", id, errs.ErrNotFound)
		}
		if err := json.Unmarshal(v, &k); err != nil {
			return fmt.Errorf("bolt: decode key %q: %w", id, err)
		}
		return nil
	})
	return k, err
}

func (s *Store) ListKeys(ctx context.Context, app string) ([]store.Key, error) {
	keys := []store.Key{}
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		// Byte order of IDs is Go's string order.
		return tx.Bucket(bucketKeys).ForEach(func(id, v []byte) error {
			var k store.Key
			if err := json.Unmarshal(v, &k); err != nil {
				return fmt.Errorf("bolt: decode key %q: %w", id, err)
			}
			if k.App == app {
				keys = append(keys, k)
			}
			return nil
		})
	})
	return keys, err
}

func (s *Store) DeleteKey(ctx context.Context, id string) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		keys := tx.Bucket(bucketKeys)
		if keys.Get([]byte(id)) == nil {
			return fmt.Errorf("key %q: %w", id, errs.ErrNotFound)
		}
		return keys.Delete([]byte(id))
	})
}

func getApp(tx *bbolt.Tx, name string) (store.App, error) {
	var app store.App
	v := tx.Bucket(bucketApps).Get([]byte(name))
	if v == nil {
		return app, fmt.Errorf("app %q: %w", name, errs.ErrNotFound)
	}
	if err := json.Unmarshal(v, &app); err != nil {
		return app, fmt.Errorf("bolt: decode app %q: %w", name, err)
	}
	return app, nil
}

func backupQueue(tx *bbolt.Tx, app, pid string) *bbolt.Bucket {
	backups := tx.Bucket(bucketBackups).Bucket([]byte(app))
	if backups == nil {
		return nil
	}
	return backups.Bucket([]byte(pid))
}

func putJSON(b *bbolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// usageKey is the key of a usage bucket: its start, then the pid. Times
// before 1970 count as 1970, so that they still sort first.
func usageKey(start time.Time, pid string) []byte {
	k := make([]byte, 8, 8+len(pid))
	binary.BigEndian.PutUint64(k, uint64(max(start.UnixMilli(), 0)))
	return append(k, pid...)
}

func (s *Store) AddUsage(ctx context.Context, app, pid string, start time.Time, delta store.Usage) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b, err := tx.Bucket(bucketUsage).CreateBucketIfNotExists([]byte(app))
		if err != nil {
			return err
		}
		k := usageKey(start, pid)
		var u store.Usage
		if v := b.Get(k); v != nil {
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("bolt: usage %s/%s: %w", app, pid, err)
			}
		}
		return putJSON(b, k, u.Add(delta))
	})
}

func (s *Store) ListUsage(ctx context.Context, app, pid string, since, until time.Time) ([]store.UsageBucket, error) {
	out := []store.UsageBucket{}
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketUsage).Bucket([]byte(app))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(usageKey(since, "")); k != nil; k, v = c.Next() {
			start := time.UnixMilli(int64(binary.BigEndian.Uint64(k[:8]))).UTC()
			if !start.Before(until) {
				break
			}
			if start.Before(since) || (pid != "" && string(k[8:]) != pid) {
				continue
			}
			bucket := store.UsageBucket{PID: string(k[8:]), Start: start}
			if err := json.Unmarshal(v, &bucket.Usage); err != nil {
				return fmt.Errorf("bolt: usage %s/%s: %w", app, bucket.PID, err)
			}
			out = append(out, bucket)
		}
		return nil
	})
	return out, err
}

func (s *Store) PruneUsage(ctx context.Context, before time.Time) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		usage := tx.Bucket(bucketUsage)
		var apps [][]byte
		if err := usage.ForEach(func(k, _ []byte) error { apps = append(apps, k); return nil }); err != nil {
			return err
		}
		end := usageKey(before, "")
		for _, app := range apps {
			b := usage.Bucket(app)
			var old [][]byte // deleting under a cursor skips keys: collect first
			c := b.Cursor()
			for k, _ := c.First(); k != nil && bytes.Compare(k, end) < 0; k, _ = c.Next() {
				old = append(old, k)
			}
			for _, k := range old {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			if k, _ := b.Cursor().First(); k == nil {
				if err := usage.DeleteBucket(app); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
