// Package memory implements store.Metadata in memory, for unit tests of the
// control plane: it is fast, needs no files or servers, and passes the same
// conformance suite as the bolt and redis stores, except that nothing
// survives the Store value (there is no persistence and no sharing between
// processes).
//
// One mutex guards all the data, so every method is atomic. Records go in and
// come out as copies (message data included), so a caller that changes what
// it passed in or got back never changes what is stored.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// Store is an in-memory store.Metadata. The zero value is not usable; call New.
type Store struct {
	mu       sync.Mutex
	apps     map[string]*appEntry
	replicas map[string]store.Replica
	keys     map[string]store.Key // by ID
	// usage are the usage buckets by app, kept apart from apps: they
	// outlive the apps and processes they count.
	usage map[string]map[usageKey]store.Usage
}

type usageKey struct {
	startMilli int64
	pid        string
}

type appEntry struct {
	app   store.App
	procs map[string]*procEntry
}

type procEntry struct {
	p      store.Process
	seq    uint64 // last backup sequence number assigned
	backup []store.Message
	bytes  int64 // of the backup's Data
}

var _ store.Metadata = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{apps: map[string]*appEntry{}, replicas: map[string]store.Replica{}, keys: map[string]store.Key{},
		usage: map[string]map[usageKey]store.Usage{}}
}

// Close does nothing: the data lives as long as the Store.
func (s *Store) Close() error { return nil }

// lock checks ctx and takes the store's mutex, like the other stores check
// ctx before a transaction.
func (s *Store) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	return nil
}

// app and proc return the entries of an app or process, or a NotFound error.
// The caller holds mu.
func (s *Store) app(name string) (*appEntry, error) {
	a, ok := s.apps[name]
	if !ok {
		return nil, fmt.Errorf("app %q: %w", name, errs.ErrNotFound)
	}
	return a, nil
}

func (s *Store) proc(app, pid string) (*procEntry, error) {
	if a, ok := s.apps[app]; ok {
		if e, ok := a.procs[pid]; ok {
			return e, nil
		}
	}
	return nil, fmt.Errorf("process %s/%s: %w", app, pid, errs.ErrNotFound)
}

func (s *Store) CreateApp(ctx context.Context, app store.App) error {
	if app.Name == "" {
		return fmt.Errorf("memory: empty app name: %w", errs.ErrInvalidArgument)
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if _, ok := s.apps[app.Name]; ok {
		return fmt.Errorf("app %q: %w", app.Name, errs.ErrAlreadyExists)
	}
	app.Revision = 1
	s.apps[app.Name] = &appEntry{app: app, procs: map[string]*procEntry{}}
	return nil
}

func (s *Store) GetApp(ctx context.Context, name string) (store.App, error) {
	if err := s.lock(ctx); err != nil {
		return store.App{}, err
	}
	defer s.mu.Unlock()
	a, err := s.app(name)
	if err != nil {
		return store.App{}, err
	}
	return a.app, nil
}

func (s *Store) ListApps(ctx context.Context) ([]store.App, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	apps := []store.App{}
	for _, name := range slices.Sorted(maps.Keys(s.apps)) {
		apps = append(apps, s.apps[name].app)
	}
	return apps, nil
}

func (s *Store) DeleteApp(ctx context.Context, name string) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if _, err := s.app(name); err != nil {
		return err
	}
	delete(s.apps, name) // its processes and queues go with it
	maps.DeleteFunc(s.keys, func(_ string, k store.Key) bool { return k.App == name })
	return nil
}

func (s *Store) UpdateApp(ctx context.Context, app store.App) (store.App, error) {
	if err := s.lock(ctx); err != nil {
		return store.App{}, err
	}
	defer s.mu.Unlock()
	a, err := s.app(app.Name)
	if err != nil {
		return store.App{}, err
	}
	if a.app.Revision != app.Revision {
		return store.App{}, fmt.Errorf("app %q: stale revision %d, stored is %d: %w",
			app.Name, app.Revision, a.app.Revision, errs.ErrFailedPrecondition)
	}
	app.Epoch = a.app.Epoch // BumpEpoch owns it
	app.Revision++
	a.app = app
	return app, nil
}

func (s *Store) BumpEpoch(ctx context.Context, name string) (uint64, error) {
	if err := s.lock(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	a, err := s.app(name)
	if err != nil {
		return 0, err
	}
	a.app.Epoch++
	a.app.Revision++
	return a.app.Epoch, nil
}

func (s *Store) CreateProcess(ctx context.Context, p store.Process) (store.Process, error) {
	if p.PID == "" {
		return store.Process{}, fmt.Errorf("memory: empty pid: %w", errs.ErrInvalidArgument)
	}
	if err := s.lock(ctx); err != nil {
		return store.Process{}, err
	}
	defer s.mu.Unlock()
	a, err := s.app(p.App)
	if err != nil {
		return store.Process{}, err
	}
	if _, ok := a.procs[p.PID]; ok {
		return store.Process{}, fmt.Errorf("process %s/%s: %w", p.App, p.PID, errs.ErrAlreadyExists)
	}
	p.Revision = 1
	a.procs[p.PID] = &procEntry{p: p}
	return p, nil
}

func (s *Store) UpdateProcess(ctx context.Context, p store.Process) (store.Process, error) {
	if err := s.lock(ctx); err != nil {
		return store.Process{}, err
	}
	defer s.mu.Unlock()
	e, err := s.proc(p.App, p.PID)
	if err != nil {
		return store.Process{}, err
	}
	if e.p.Revision != p.Revision {
		return store.Process{}, fmt.Errorf("process %s/%s: stale revision %d, stored is %d: %w",
			p.App, p.PID, p.Revision, e.p.Revision, errs.ErrFailedPrecondition)
	}
	p.Revision++
	e.p = p
	return p, nil
}

func (s *Store) GetProcess(ctx context.Context, app, pid string) (store.Process, error) {
	if err := s.lock(ctx); err != nil {
		return store.Process{}, err
	}
	defer s.mu.Unlock()
	e, err := s.proc(app, pid)
	if err != nil {
		return store.Process{}, err
	}
	return e.p, nil
}

func (s *Store) ListProcesses(ctx context.Context, app string) ([]store.Process, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	a, err := s.app(app)
	if err != nil {
		return nil, err
	}
	procs := []store.Process{}
	for _, pid := range slices.Sorted(maps.Keys(a.procs)) {
		procs = append(procs, a.procs[pid].p)
	}
	return procs, nil
}

func (s *Store) DeleteProcess(ctx context.Context, app, pid string) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if _, err := s.proc(app, pid); err != nil {
		return err
	}
	delete(s.apps[app].procs, pid) // its queue goes with it
	return nil
}

func (s *Store) AppendBackup(ctx context.Context, app, pid string, m store.Message) (uint64, error) {
	if err := s.lock(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	e, err := s.proc(app, pid)
	if err != nil {
		return 0, err
	}
	e.seq++
	m.Seq = e.seq
	m.Data = bytes.Clone(m.Data)
	e.backup = append(e.backup, m)
	e.bytes += int64(len(m.Data))
	return m.Seq, nil
}

func (s *Store) ListBackup(ctx context.Context, app, pid string) ([]store.Message, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	msgs := []store.Message{}
	e, err := s.proc(app, pid)
	if err != nil {
		return msgs, nil // no process, no queue
	}
	for _, m := range e.backup {
		m.Data = bytes.Clone(m.Data)
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func (s *Store) TrimBackup(ctx context.Context, app, pid string, upTo uint64) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	e, err := s.proc(app, pid)
	if err != nil {
		return nil // no process, no queue
	}
	// The queue is in seq order, so the messages to drop are a prefix.
	keep := slices.IndexFunc(e.backup, func(m store.Message) bool { return m.Seq > upTo })
	if keep < 0 {
		keep = len(e.backup)
	}
	for _, m := range e.backup[:keep] {
		e.bytes -= int64(len(m.Data))
	}
	e.backup = slices.Clone(e.backup[keep:]) // lets the dropped messages be collected
	return nil
}

func (s *Store) BackupStats(ctx context.Context, app, pid string) (store.QueueStats, error) {
	if err := s.lock(ctx); err != nil {
		return store.QueueStats{}, err
	}
	defer s.mu.Unlock()
	e, err := s.proc(app, pid)
	if err != nil {
		return store.QueueStats{}, nil // no process, no queue
	}
	return store.QueueStats{Messages: len(e.backup), Bytes: e.bytes}, nil
}

func (s *Store) PutReplica(ctx context.Context, r store.Replica) error {
	if r.ID == "" {
		return fmt.Errorf("memory: empty replica id: %w", errs.ErrInvalidArgument)
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.replicas[r.ID] = r
	return nil
}

func (s *Store) ListReplicas(ctx context.Context) ([]store.Replica, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	replicas := []store.Replica{}
	for _, id := range slices.Sorted(maps.Keys(s.replicas)) {
		replicas = append(replicas, s.replicas[id])
	}
	return replicas, nil
}

func (s *Store) DeleteReplica(ctx context.Context, id string) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	delete(s.replicas, id)
	return nil
}

func (s *Store) CreateKey(ctx context.Context, k store.Key) error {
	if k.ID == "" {
		return fmt.Errorf("memory: empty key id: %w", errs.ErrInvalidArgument)
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if k.App != "" {
		if _, err := s.app(k.App); err != nil {
			return err
		}
	}
	if _, ok := s.keys[k.ID]; ok {
		return fmt.Errorf("key %q: %w", k.ID, errs.ErrAlreadyExists)
	}
	s.keys[k.ID] = k
	return nil
}

func (s *Store) GetKey(ctx context.Context, id string) (store.Key, error) {
	if err := s.lock(ctx); err != nil {
		return store.Key{}, err
	}
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return store.Key{}, fmt.Errorf("key %q: %w", id, errs.ErrNotFound)
	}
	return k, nil
}

func (s *Store) ListKeys(ctx context.Context, app string) ([]store.Key, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	keys := []store.Key{}
	for _, id := range slices.Sorted(maps.Keys(s.keys)) {
		if k := s.keys[id]; k.App == app {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

func (s *Store) DeleteKey(ctx context.Context, id string) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if _, ok := s.keys[id]; !ok {
		return fmt.Errorf("key %q: %w", id, errs.ErrNotFound)
	}
	delete(s.keys, id)
	return nil
}

func (s *Store) AddUsage(ctx context.Context, app, pid string, start time.Time, delta store.Usage) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	buckets := s.usage[app]
	if buckets == nil {
		buckets = map[usageKey]store.Usage{}
		s.usage[app] = buckets
	}
	k := usageKey{start.UnixMilli(), pid}
	buckets[k] = buckets[k].Add(delta)
	return nil
}

func (s *Store) ListUsage(ctx context.Context, app, pid string, since, until time.Time) ([]store.UsageBucket, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	out := []store.UsageBucket{}
	for k, u := range s.usage[app] {
		start := time.UnixMilli(k.startMilli).UTC()
		if (pid == "" || k.pid == pid) && !start.Before(since) && start.Before(until) {
			out = append(out, store.UsageBucket{PID: k.pid, Start: start, Usage: u})
		}
	}
	store.SortUsage(out)
	return out, nil
}

func (s *Store) PruneUsage(ctx context.Context, before time.Time) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	for app, buckets := range s.usage {
		maps.DeleteFunc(buckets, func(k usageKey, _ store.Usage) bool {
			return time.UnixMilli(k.startMilli).Before(before)
		})
		if len(buckets) == 0 {
			delete(s.usage, app)
		}
	}
	return nil
}
