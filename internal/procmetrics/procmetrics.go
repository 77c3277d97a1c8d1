// Package procmetrics is what a process runtime measures about its
// invocations and reports to the control plane in its heartbeats and final
// snapshot report: counters kept with atomics on the invocation path, and
// the report that carries them. The control plane sums the reports into
// Prometheus series (see controlplane/metrics.go and docs/observability.md).
package procmetrics

import (
	"sync/atomic"
	"time"

	"github.com/praas-dev/praas/errs"
)

// Path is how an invocation reached the process that ran it.
type Path uint8

// The paths of an invocation, as the process that runs it sees them.
const (
	// ControlPlane: through the control plane (a REST invoke, or a process's
	// invoke of a peer that was not active), on the control plane's own
	// data-plane connection.
	ControlPlane Path = iota
	// DataPlane: a client's data-plane connection.
	DataPlane
	// Remote: another process of the application, over the data plane.
	Remote
	// Local: the process itself (Invoke(Self, ...)), without the network.
	Local
	// Triggered: started by arriving messages (a message trigger).
	Triggered

	NumPaths
)

var pathNames = [NumPaths]string{"controlplane", "dataplane", "remote", "local", "triggered"}

// String is the path's label value.
func (p Path) String() string {
	if p < NumPaths {
		return pathNames[p]
	}
	return "unknown"
}

// Bounds are the upper bounds of the latency histogram's buckets, 10 µs to
// 10 s in steps of about ×3; a last bucket counts what is slower.
var Bounds = [...]time.Duration{
	10 * time.Microsecond, 30 * time.Microsecond,
	100 * time.Microsecond, 300 * time.Microsecond,
	time.Millisecond, 3 * time.Millisecond,
	10 * time.Millisecond, 30 * time.Millisecond,
	100 * time.Millisecond, 300 * time.Millisecond,
	time.Second, 3 * time.Second,
	10 * time.Second,
}

// NumBuckets is the number of histogram buckets: one per bound and the
// overflow.
const NumBuckets = len(Bounds) + 1

// BucketOf is the index of the bucket that counts a latency of d: the first
// whose bound is at least d.
func BucketOf(d time.Duration) int {
	for i, b := range Bounds {
		if d <= b {
			return i
		}
	}
	return len(Bounds)
}

// numCodes bounds the error codes counted one by one; larger ones count as
// Unknown.
const numCodes = 16

// Stats counts the invocations of one function on one path. Record is safe
// for concurrent use and does not allocate: a few atomic adds.
type Stats struct {
	count    atomic.Uint64
	sumNanos atomic.Uint64
	buckets  [NumBuckets]atomic.Uint64
	errors   [numCodes]atomic.Uint64
}

// Record counts one invocation that took d and ended with code (errs.Unknown
// means it succeeded: nil errors have no code).
func (s *Stats) Record(d time.Duration, failed bool, code errs.Code) {
	s.count.Add(1) // before the bucket: see Series

	s.sumNanos.Add(uint64(max(d, 0)))
	s.buckets[BucketOf(d)].Add(1)
	if failed {
		if int(code) >= numCodes {
			code = errs.Unknown
		}
		s.errors[code].Add(1)
	}
}

// Count is the number of invocations recorded.
func (s *Stats) Count() uint64 { return s.count.Load() }

// Series reads the counters as a report series. Counters read one by one
// while invocations end may be a call apart; each stays monotonic. The
// buckets are read before the count, which Record adds to first, so the
// count is never below the buckets' sum (a histogram's +Inf bucket is its
// count).
func (s *Stats) Series(function string, path Path) Series {
	out := Series{Function: function, Path: path.String(), Buckets: make([]uint64, NumBuckets)}
	for i := range s.buckets {
		out.Buckets[i] = s.buckets[i].Load()
	}
	out.Count, out.SumNanos = s.count.Load(), s.sumNanos.Load()
	for c := range s.errors {
		if n := s.errors[c].Load(); n > 0 {
			if out.Errors == nil {
				out.Errors = make(map[string]uint64)
			}
			out.Errors[errs.Code(c).String()] = n
		}
	}
	return out
}

// Series is the cumulative count of one function's invocations on one path
// since the process generation started.
type Series struct {
	Function string `json:"function"`
	Path     string `json:"path"`
	Count    uint64 `json:"count"`
	SumNanos uint64 `json:"sum_ns"`
	// Buckets are the counts per latency bucket (not cumulative), one per
	// entry of Bounds and the overflow last.
	Buckets []uint64 `json:"buckets"`
	// Errors counts the failed invocations by error code name.
	Errors map[string]uint64 `json:"errors,omitempty"`
}

// MaxSeries bounds the series of one report: a runtime sends those of its
// first MaxSeries function and path pairs, so a heartbeat stays well below
// the control plane's bound on a request body, and the control plane takes
// no more from one report.
const MaxSeries = 1024

// Report is what a process generation measured: cumulative counters since
// it started, and gauges as of the report.
type Report struct {
	Invocations []Series `json:"invocations,omitempty"`
	// BackupDelivered counts the backup-queue messages the process took.
	BackupDelivered uint64 `json:"backup_delivered,omitempty"`

	// Gauges.
	InFlight        int64 `json:"in_flight"`        // invocations running
	Queued          int64 `json:"queued"`           // waiting for a concurrency slot or a dependency
	MailboxMessages int64 `json:"mailbox_messages"` // unread messages
	MailboxBytes    int64 `json:"mailbox_bytes"`    // their data
	TriggerMessages int64 `json:"trigger_messages"` // messages held by triggers until their invocation is complete
	StateBytes      int64 `json:"state_bytes"`      // keys and values in state
}

// Key identifies a series: function and path.
type Key struct{ Function, Path string }

// Totals are counters summed over reports, per function and path.
type Totals map[Key]*Series

// Add adds the counters of r's series (not its gauges) to t.
func (t Totals) Add(r *Report) {
	for i := range r.Invocations {
		t.AddSeries(&r.Invocations[i])
	}
}

// AddSeries adds one series to t.
func (t Totals) AddSeries(s *Series) {
	k := Key{s.Function, s.Path}
	sum := t[k]
	if sum == nil {
		sum = &Series{Function: s.Function, Path: s.Path, Buckets: make([]uint64, NumBuckets)}
		t[k] = sum
	}
	sum.Count += s.Count
	sum.SumNanos += s.SumNanos
	for i := 0; i < len(s.Buckets) && i < NumBuckets; i++ {
		sum.Buckets[i] += s.Buckets[i]
	}
	for code, n := range s.Errors {
		if sum.Errors == nil {
			sum.Errors = make(map[string]uint64)
		}
		sum.Errors[code] += n
	}
}
