package process

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/procmetrics"
)

// runtimeMetrics counts what the runtime reports to the control plane for its
// Prometheus series (see internal/procmetrics). The invocation path records
// into counters found by the function's index in the image, with atomics:
// no map, lock or allocation per invocation. With metrics off nothing is
// recorded and heartbeats carry no report.
type runtimeMetrics struct {
	off bool
	// table holds each function's counters by Function.index; it grows,
	// copied under mu, the first time a function runs.
	table atomic.Pointer[[]*functionStats]
	mu    sync.Mutex

	queued          atomic.Int64  // invocations waiting for a concurrency slot or a dependency
	backupDelivered atomic.Uint64 // backup-queue messages taken
}

// functionStats are one function's counters, per path.
type functionStats struct {
	name  string
	paths [procmetrics.NumPaths]procmetrics.Stats
}

// record counts an invocation of fn on path that took d and returned err.
// The caller checks m.off first.
func (m *runtimeMetrics) record(fn *Function, path procmetrics.Path, d time.Duration, err error) {
	st := &m.of(fn).paths[path]
	if err == nil {
		st.Record(d, false, errs.Unknown)
		return
	}
	st.Record(d, true, errs.CodeOf(err))
}

// of returns fn's counters, made on first use.
func (m *runtimeMetrics) of(fn *Function) *functionStats {
	if t := m.table.Load(); t != nil && fn.index < len(*t) {
		if s := (*t)[fn.index]; s != nil {
			return s
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var old []*functionStats
	if t := m.table.Load(); t != nil {
		old = *t
	}
	if fn.index < len(old) && old[fn.index] != nil {
		return old[fn.index]
	}
	grown := make([]*functionStats, max(len(old), fn.index+1))
	copy(grown, old)
	s := &functionStats{name: fn.Name}
	grown[fn.index] = s
	m.table.Store(&grown)
	return s
}

// metricsReport reads the counters and the gauges; nil with metrics off.
func (rt *Runtime) metricsReport() *procmetrics.Report {
	m := &rt.metrics
	if m.off {
		return nil
	}
	r := &procmetrics.Report{
		BackupDelivered: m.backupDelivered.Load(),
		InFlight:        rt.running.Load(),
		Queued:          m.queued.Load(),
		StateBytes:      rt.state.size(),
	}
	if t := m.table.Load(); t != nil {
		for _, fs := range *t {
			if fs == nil {
				continue
			}
			for p := range fs.paths {
				if fs.paths[p].Count() > 0 && len(r.Invocations) < procmetrics.MaxSeries { // paths a function never came by are left out
					r.Invocations = append(r.Invocations, fs.paths[p].Series(fs.name, procmetrics.Path(p)))
				}
			}
		}
	}
	rt.triggers.mu.Lock()
	for _, buf := range rt.triggers.pending {
		r.TriggerMessages += int64(len(buf))
	}
	rt.triggers.mu.Unlock()
	rt.mailbox.mu.Lock()
	r.MailboxMessages, r.MailboxBytes = int64(rt.mailbox.size), rt.mailbox.bytes
	rt.mailbox.mu.Unlock()
	return r
}
