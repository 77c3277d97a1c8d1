// Package store declares the two kinds of storage the control plane depends
// on: the metadata store (applications, processes, membership epochs and the
// backup queues of swapped processes) and the swap store (process snapshots).
//
// Implementations live in subpackages (bolt, redis for metadata; file, s3 for
// swap) and all pass the conformance suites in storetest. Open them by URL
// with package storeurl.
package store

import (
	"context"
	"io"
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
	Name      string    `json:"name"`
	Image     string    `json:"image"`
	Secret    string    `json:"secret,omitempty"`
	Epoch     uint64    `json:"epoch"`
	CreatedAt time.Time `json:"created_at"`
}

// Usage is what a process reports about the work it did.
type Usage struct {
	Invocations uint64 `json:"invocations"`
	BusyNanos   uint64 `json:"busy_ns"`
	BytesIn     uint64 `json:"bytes_in"`
	BytesOut    uint64 `json:"bytes_out"`
}

// Process is the control plane's record of one process.
type Process struct {
	App        string    `json:"app"`
	PID        string    `json:"pid"`
	Status     string    `json:"status"`
	Address    string    `json:"address,omitempty"`  // data-plane host:port while active
	Handle     string    `json:"handle,omitempty"`   // backend-specific (OS pid, pod name)
	Snapshot   string    `json:"snapshot,omitempty"` // swap-store key of the last snapshot
	Usage      Usage     `json:"usage"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	LastActive time.Time `json:"last_active"`
}

// Message is one mailbox message held in a backup queue.
type Message struct {
	Seq  uint64 `json:"seq"` // assigned by AppendBackup, increasing per (app, pid)
	Src  string `json:"src"`
	Key  string `json:"key"`
	Data []byte `json:"data"`
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
//   - List results are sorted by name / pid.
//   - A write acknowledged with a nil error survives a restart of the store.
type Metadata interface {
	CreateApp(ctx context.Context, app App) error
	GetApp(ctx context.Context, name string) (App, error)
	ListApps(ctx context.Context) ([]App, error)
	DeleteApp(ctx context.Context, name string) error
	// BumpEpoch atomically increments the app's membership epoch and returns the new value.
	BumpEpoch(ctx context.Context, app string) (uint64, error)

	CreateProcess(ctx context.Context, p Process) error
	// PutProcess writes p over an existing record; errs.ErrNotFound if absent.
	PutProcess(ctx context.Context, p Process) error
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
	TrimBackup(ctx context.Context, app, pid string, upTo uint64) error

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
