// Package store declares the two kinds of storage the control plane depends
// on: the metadata store (applications, processes, membership epochs and the
// backup queues of swapped processes) and the swap store (process snapshots).
//
// Implementations live in subpackages (bolt, redis and memory for metadata;
// file, s3 for swap) and all pass the conformance suites in storetest. Open
// them by URL with package storeurl.
package store

import (
	"github.com/praas-dev/praas/errs"

	"context"
	"fmt"
	"io"
	"net/url"
	"time"
)

// Process statuses, as stored and shown to users.
const (
	StatusAllocating = "allocating"
	StatusActive     = "active"
	StatusSwapping   = "swapping"
	StatusSwapped    = "swapped"
	StatusSwappingIn = "swapping-in"
	StatusFailed     = "failed"
)

// App is an application: a named group of processes sharing an image and a
// secret from which data-plane tokens are derived.
type App struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// Resources are what each process of the app gets unless its own
	// record says otherwise (zero: the backend's default).
	Resources Resources `json:"resources"`
	Secret    string    `json:"secret,omitempty"`
	Epoch     uint64    `json:"epoch"`
	CreatedAt time.Time `json:"created_at"`
	// Revision grows by one on every write of the record (BumpEpoch
	// included); UpdateApp is a compare-and-set on it. CreateApp stores 1.
	Revision uint64 `json:"revision"`
}

// Resources bound what a process may use; zero values mean the default.
type Resources struct {
	MilliCPU    int64 `json:"milli_cpu,omitempty"`
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
}

// Validate refuses negative amounts.
func (r Resources) Validate() error {
	if r.MilliCPU < 0 || r.MemoryBytes < 0 {
		return fmt.Errorf("%w: resources must not be negative (milli_cpu %d, memory_bytes %d)", errs.ErrInvalidArgument, r.MilliCPU, r.MemoryBytes)
	}
	return nil
}

// Usage is the work a process did, as billed (see docs/observability.md):
// the counters its runtime reports, and the swap storage the control plane
// accounts for. Every field only grows.
type Usage struct {
	Invocations uint64 `json:"invocations"`
	BusyNanos   uint64 `json:"busy_ns"` // wall time of invocations
	BytesIn     uint64 `json:"bytes_in"`
	BytesOut    uint64 `json:"bytes_out"`
	// StateByteSeconds is the process's state size integrated over the time
	// it ran (bytes × seconds). Seconds, not nanoseconds: a GiB held for an
	// hour is 3.9e12 byte-seconds, 3.9e21 byte-nanoseconds, past uint64.
	StateByteSeconds uint64 `json:"state_byte_s,omitempty"`
	// SwapByteSeconds is the size of the snapshot held while the process
	// was swapped, integrated over the time it was (periods that ended; see
	// Process.SwappedAt for the current one).
	SwapByteSeconds uint64 `json:"swap_byte_s,omitempty"`
}

// Process is the control plane's record of one process.
type Process struct {
	App      string `json:"app"`
	PID      string `json:"pid"`
	Status   string `json:"status"`
	Address  string `json:"address,omitempty"`  // data-plane host:port while active
	Handle   string `json:"handle,omitempty"`   // backend-specific (OS pid, pod name)
	Snapshot string `json:"snapshot,omitempty"` // swap-store key of the last snapshot
	Usage    Usage  `json:"usage"`
	// UsageBase is the part of Usage that earlier generations did: a
	// replica that adopts the running generation adds what it reports to
	// this, not to Usage, which may hold some of it already.
	UsageBase Usage `json:"usage_base"`
	// SnapshotBytes is the size of the snapshot named by Snapshot.
	SnapshotBytes int64 `json:"snapshot_bytes,omitempty"`
	// SwappedAt is when the process last became swapped; zero while it is
	// not. The snapshot it holds since is billed as swap storage.
	SwappedAt time.Time `json:"swapped_at,omitzero"`
	// Resources, if not zero, replace the app's for this process.
	Resources  Resources `json:"resources"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	LastActive time.Time `json:"last_active"`

	// Revision grows by one on every write of the record; UpdateProcess is
	// a compare-and-set on it. CreateProcess stores 1.
	Revision uint64 `json:"revision"`
	// Generation grows by one on every activation of the process. It is the
	// fencing token: the process presents it in every report and snapshot,
	// and anything from an older generation is refused.
	Generation uint64 `json:"generation"`
	// Owner is the id of the control-plane replica that holds the lease on
	// the process (empty when nobody does: swapped, failed). The lease lasts
	// as long as that replica's own record (see Replica) is unexpired.
	Owner string `json:"owner,omitempty"`
}

// Replica is a control-plane replica's record: its lease on every process
// it owns. It renews the record well before Expires; once Expires has
// passed, any other replica may take its processes over.
type Replica struct {
	ID      string    `json:"id"`
	URL     string    `json:"url"` // where other replicas and processes reach it
	Started time.Time `json:"started"`
	Expires time.Time `json:"expires"`
}

// Live reports whether the replica's lease is unexpired at now.
func (r Replica) Live(now time.Time) bool { return now.Before(r.Expires) }

// Key is a credential for the REST API: an admin key (App empty) or a key
// of one application. Only a hash of its secret is stored; the token a
// caller presents is "praas_" + ID + "_" + secret.
type Key struct {
	ID        string    `json:"id"`
	App       string    `json:"app,omitempty"`
	Hash      string    `json:"hash"` // hex SHA-256 of the secret
	Name      string    `json:"name,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Message is one mailbox message held in a backup queue.
type Message struct {
	Seq  uint64 `json:"seq"` // assigned by AppendBackup, increasing per (app, pid)
	Src  string `json:"src"`
	Key  string `json:"key"`
	Data []byte `json:"data"`
}

// QueueStats is the size of a backup queue.
type QueueStats struct {
	Messages int
	Bytes    int64 // of the messages' Data
}

// Metadata is the control plane's registry. All methods are safe for
// concurrent use and for use by several control planes sharing one store.
//
// Musts for every implementation:
//   - Get/Delete of an absent app or process return an error wrapping errs.ErrNotFound.
//   - CreateApp of an existing name and CreateProcess of an existing (app, pid)
//     return an error wrapping errs.ErrAlreadyExists; CreateProcess for an
//     absent app returns errs.ErrNotFound.
//   - DeleteApp removes the app's processes and backup queues too.
//   - Records carry a Revision. CreateApp and CreateProcess store revision 1
//     (whatever the argument says); every later write of a record stores
//     the previous revision plus one. UpdateApp and UpdateProcess write only
//     if the stored revision equals the argument's Revision, and otherwise
//     fail with an error wrapping errs.ErrFailedPrecondition, leaving the
//     record untouched. They return the record as stored.
//   - List results are sorted by name / pid.
//   - A write acknowledged with a nil error survives a restart of the store.
type Metadata interface {
	CreateApp(ctx context.Context, app App) error
	GetApp(ctx context.Context, name string) (App, error)
	ListApps(ctx context.Context) ([]App, error)
	DeleteApp(ctx context.Context, name string) error
	// UpdateApp writes app over the stored record if the stored revision is
	// app.Revision (compare-and-set); errs.ErrNotFound if absent,
	// errs.ErrFailedPrecondition on a stale revision. The epoch is not
	// written (BumpEpoch owns it).
	UpdateApp(ctx context.Context, app App) (App, error)
	// BumpEpoch atomically increments the app's membership epoch and returns the new value.
	BumpEpoch(ctx context.Context, app string) (uint64, error)

	// CreateProcess stores p with revision 1 and returns it as stored.
	CreateProcess(ctx context.Context, p Process) (Process, error)
	// UpdateProcess writes p over the stored record if the stored revision is
	// p.Revision (compare-and-set) and returns it as stored, with the next
	// revision; errs.ErrNotFound if absent, errs.ErrFailedPrecondition on a
	// stale revision.
	UpdateProcess(ctx context.Context, p Process) (Process, error)
	GetProcess(ctx context.Context, app, pid string) (Process, error)
	// ListProcesses returns errs.ErrNotFound if the app is absent.
	ListProcesses(ctx context.Context, app string) ([]Process, error)
	// DeleteProcess removes the record and its backup queue.
	DeleteProcess(ctx context.Context, app, pid string) error

	// AppendBackup durably appends m to the backup queue of (app, pid) and
	// returns the sequence number it assigned (m.Seq is ignored);
	// errs.ErrNotFound if the process is absent, so that no queue outlives
	// its process.
	AppendBackup(ctx context.Context, app, pid string, m Message) (uint64, error)
	// ListBackup returns the queue in append order (empty, not an error, if none).
	ListBackup(ctx context.Context, app, pid string) ([]Message, error)
	// TrimBackup removes every message with Seq <= upTo (nil if none).
	// Sequence numbers are never reused: AppendBackup after a trim, even one
	// that emptied the queue, assigns a higher Seq than any before it (as
	// long as the process exists; DeleteProcess may start it over).
	TrimBackup(ctx context.Context, app, pid string, upTo uint64) error
	// BackupStats returns how many messages the queue of (app, pid) holds
	// and the bytes of their Data (zeros, not an error, if none).
	BackupStats(ctx context.Context, app, pid string) (QueueStats, error)

	// CreateKey stores k; errs.ErrAlreadyExists if a key with its ID
	// exists, errs.ErrNotFound if k.App names an absent app.
	CreateKey(ctx context.Context, k Key) error
	// GetKey returns the key with that ID; errs.ErrNotFound if absent.
	GetKey(ctx context.Context, id string) (Key, error)
	// ListKeys returns the keys of app ("" lists the admin keys), sorted by ID.
	ListKeys(ctx context.Context, app string) ([]Key, error)
	// DeleteKey removes a key; errs.ErrNotFound if absent. DeleteApp
	// removes the app's keys too.
	DeleteKey(ctx context.Context, id string) error

	// AddUsage adds delta to the usage bucket of app/pid that starts at
	// start (truncated to the millisecond), creating it if absent. It does
	// not check that the app or the process exists: usage outlives both,
	// until PruneUsage removes it.
	AddUsage(ctx context.Context, app, pid string, start time.Time, delta Usage) error
	// ListUsage returns app's buckets (only pid's if pid is not empty) with
	// since <= Start < until, sorted by Start then PID; empty, not an
	// error, if none (whether the app exists or not).
	ListUsage(ctx context.Context, app, pid string, since, until time.Time) ([]UsageBucket, error)
	// PruneUsage deletes every bucket, of every app, that starts before
	// before.
	PruneUsage(ctx context.Context, before time.Time) error

	// PutReplica creates or renews a replica's record (last write wins: only
	// the replica itself writes it).
	PutReplica(ctx context.Context, r Replica) error
	// ListReplicas returns every replica record, expired ones included,
	// sorted by id.
	ListReplicas(ctx context.Context) ([]Replica, error)
	// DeleteReplica removes a replica's record; nil if absent.
	DeleteReplica(ctx context.Context, id string) error

	Close() error
}

// Swap stores process snapshots as opaque byte streams under string keys.
//
// Musts for every implementation:
//   - Put is atomic: a Get that overlaps or follows it sees either the whole
//     previous object or the whole new one, never a mix or a prefix.
//   - Put streams from r: it must not hold a whole extra copy of a large
//     object in memory. size is the length if known, or -1.
//   - Get of an absent key returns an error wrapping errs.ErrNotFound.
//   - Delete of an absent key returns nil.
//   - Keys are clean relative slash-separated paths ("app/pid/3"): an empty
//     key, a leading '/', or an empty, "." or ".." component is an error
//     wrapping errs.ErrInvalidArgument.
type Swap interface {
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	Delete(ctx context.Context, key string) error
	Close() error
}

// Presigner is implemented by swap stores that can hand out URLs through
// which a client without store credentials reads or writes one object, for a
// limited time: processes reach their own snapshots that way. The control
// plane streams snapshots itself for stores that do not implement it.
//
// Musts for every implementation:
//   - A URL gives access to its key only, with its method only (PUT or GET),
//     and only until ttl has passed (a transfer that started before may
//     finish). Changing the key or the method in the URL invalidates it.
//   - A PUT through the URL must carry Content-Length (no chunked
//     encoding); it replaces the object atomically, as Put does, and a Get
//     through the store reads what it wrote.
//   - A GET through the URL answers the object as Get would, or 404 if it
//     is absent.
//   - Keys follow the rules of Swap: a bad key is an error wrapping
//     errs.ErrInvalidArgument, and no URL.
//   - Presigning is local: it makes no request to the store.
type Presigner interface {
	PresignPut(ctx context.Context, key string, ttl time.Duration) (*url.URL, error)
	PresignGet(ctx context.Context, key string, ttl time.Duration) (*url.URL, error)
}

// UpdateProcess reads app/pid, applies change and writes the result back
// with a compare-and-set, reading again and reapplying change when another
// writer got in between. change may refuse by returning an error, which
// UpdateProcess returns as it is. It returns the record as stored.
func UpdateProcess(ctx context.Context, m Metadata, app, pid string, change func(*Process) error) (Process, error) {
	for {
		p, err := m.GetProcess(ctx, app, pid)
		if err != nil {
			return p, err
		}
		if err := change(&p); err != nil {
			return p, err
		}
		stored, err := m.UpdateProcess(ctx, p)
		if errs.CodeOf(err) == errs.FailedPrecondition && ctx.Err() == nil {
			continue // lost a race: reapply on the fresh record
		}
		return stored, err
	}
}
