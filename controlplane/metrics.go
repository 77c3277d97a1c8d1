package controlplane

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/names"
	"github.com/praas-dev/praas/internal/procmetrics"
)

// Metrics: every replica serves GET /metrics for Prometheus (see
// docs/observability.md). Its own work is counted with client_golang types
// in a registry of the Server (not the global one, so several servers can
// run in one test binary). What processes measure comes in their heartbeats
// and final snapshot reports: a processCollector sums, at scrape time, the
// latest report of every live process this replica owns and the totals of
// the generations that ended here, per app, function and path. Processes
// are not scraped themselves: they are swapped in and out, and a scrape
// would miss what a process did between its last scrape and its end.

// serverMetrics are the control plane's own series and the totals of the
// process generations that ended at this replica.
type serverMetrics struct {
	reg *prometheus.Registry

	restInvocations *prometheus.CounterVec   // app, code
	restLatency     *prometheus.HistogramVec // app
	restMessages    *prometheus.CounterVec   // app, code
	swapOuts        *prometheus.CounterVec   // app, status
	swapOutSeconds  *prometheus.HistogramVec // app
	swapOutBytes    *prometheus.CounterVec   // app
	swapIns         *prometheus.CounterVec   // app
	swapInSeconds   *prometheus.HistogramVec // app
	swapInBytes     *prometheus.CounterVec   // app
	leaseRenewals   *prometheus.CounterVec   // outcome
	takeovers       prometheus.Counter
	heartbeats      prometheus.Counter
	backupQueued    *prometheus.CounterVec // app

	mu sync.Mutex
	// retired are the counters of process generations that ended at this
	// replica, per app: added to the live ones' at every scrape, they keep
	// the sums monotonic across swaps.
	retired map[string]*appTotals
	// backupDepth is the backup queue of each process as of this replica's
	// last append to it (app/pid → messages, bytes), until it is delivered.
	backupDepth map[string]queueDepth
}

type appTotals struct {
	series          procmetrics.Totals
	backupDelivered uint64
}

type queueDepth struct {
	app      string
	messages int
	bytes    int64
}

// latencyBuckets are the control plane's latency histogram bounds, in
// seconds: those of the processes' histograms.
func latencyBuckets() []float64 {
	out := make([]float64, len(procmetrics.Bounds))
	for i, b := range procmetrics.Bounds {
		out[i] = b.Seconds()
	}
	return out
}

// swapBuckets are the bounds of swap durations, 10 ms to 5 min, written
// out: computed powers print as 7.290000000000001 in the exposition.
var swapBuckets = []float64{0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300}

func newServerMetrics(s *Server) *serverMetrics {
	m := &serverMetrics{reg: prometheus.NewRegistry(),
		retired: make(map[string]*appTotals), backupDepth: make(map[string]queueDepth)}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.restInvocations = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "praas_rest_invocations_total",
		Help: "Invocations through the REST API of this replica, by app and outcome code (ok or an error code)."}, []string{"app", "code"})
	m.restLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "praas_rest_invocation_duration_seconds",
		Help: "Time from the REST invoke request read to its answer, by app (placement, swap-in and the call).", Buckets: latencyBuckets()}, []string{"app"})
	m.restMessages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "praas_rest_messages_total",
		Help: "Messages sent through the REST API of this replica, by app and outcome code."}, []string{"app", "code"})
	m.swapOuts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "praas_swap_outs_total",
		Help: "Swap-outs this replica ran, by app and the status the process ended with (swapped or failed)."}, []string{"app", "status"})
	m.swapOutSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "praas_swap_out_duration_seconds",
		Help: "Duration of swap-outs: from the stop request to the process's end.", Buckets: swapBuckets}, []string{"app"})
	m.swapOutBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "praas_swap_out_bytes_total",
		Help: "Bytes of the final snapshots of swap-outs."}, []string{"app"})
	m.swapIns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "praas_swap_ins_total",
		Help: "Activations of a process from a snapshot, by app."}, []string{"app"})
	m.swapInSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "praas_swap_in_duration_seconds",
		Help: "Duration of swap-ins: from the start request to the process being active, its state restored.", Buckets: swapBuckets}, []string{"app"})
	m.swapInBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "praas_swap_in_bytes_total",
		Help: "Bytes of the snapshots processes restored at swap-in."}, []string{"app"})
	m.leaseRenewals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "praas_lease_renewals_total",
		Help: "Renewals of this replica's lease, by outcome (ok or failed)."}, []string{"outcome"})
	m.takeovers = prometheus.NewCounter(prometheus.CounterOpts{Name: "praas_takeovers_total",
		Help: "Processes this replica took over from a replica whose lease expired (or from itself before a restart)."})
	m.heartbeats = prometheus.NewCounter(prometheus.CounterOpts{Name: "praas_heartbeats_total",
		Help: "Heartbeats of processes this replica received."})
	m.backupQueued = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "praas_backup_messages_queued_total",
		Help: "Messages this replica appended to backup queues of processes that were not active, by app."}, []string{"app"})
	for _, c := range []prometheus.Collector{m.restInvocations, m.restLatency, m.restMessages, m.swapOuts,
		m.swapOutSeconds, m.swapOutBytes, m.swapIns, m.swapInSeconds, m.swapInBytes, m.leaseRenewals,
		m.takeovers, m.heartbeats, m.backupQueued, &processCollector{s: s},
		// The replica's own Go runtime and OS process (go_*, process_*).
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	return m
}

// outcome is the code label of a request that ended with err.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	code := errs.CodeOf(err)
	if code == errs.Unknown {
		code = errs.Internal
	}
	return code.String()
}

// retireLocked adds the counters of an ended generation's last report to
// its app's totals. m.mu is held.
func (m *serverMetrics) retireLocked(app string, r *procmetrics.Report) {
	if r == nil {
		return
	}
	t := m.retired[app]
	if t == nil {
		t = &appTotals{series: make(procmetrics.Totals)}
		m.retired[app] = t
	}
	t.series.Add(r)
	t.backupDelivered += r.BackupDelivered
}

// forgetApp drops what is kept of a deleted app.
func (m *serverMetrics) forgetApp(app string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.retired, app)
	for k, d := range m.backupDepth {
		if d.app == app {
			delete(m.backupDepth, k)
		}
	}
}

// queued records a backup-queue append: the queue of app/pid now holds
// messages of bytes.
func (m *serverMetrics) queued(app, pid string, messages int, bytes int64) {
	m.backupQueued.WithLabelValues(app).Inc()
	m.mu.Lock()
	m.backupDepth[liveKey(app, pid)] = queueDepth{app: app, messages: messages, bytes: bytes}
	m.mu.Unlock()
}

// delivered records that the backup queue of app/pid was delivered.
func (m *serverMetrics) delivered(app, pid string) {
	m.mu.Lock()
	delete(m.backupDepth, liveKey(app, pid))
	m.mu.Unlock()
}

// sanitizeReport drops the series of a report that could not come from a
// runtime: unknown paths, invalid function names, malformed histograms,
// and any past procmetrics.MaxSeries (a process names its functions, and a
// broken or hostile one must not grow the control plane's memory or the
// scrape without end).
func sanitizeReport(r *procmetrics.Report) {
	if r == nil {
		return
	}
	kept := r.Invocations[:0]
	for _, s := range r.Invocations {
		if len(kept) == procmetrics.MaxSeries {
			break
		}
		if !validPath(s.Path) || names.Function(s.Function) != nil || len(s.Buckets) != procmetrics.NumBuckets {
			continue
		}
		for code := range s.Errors {
			if errs.ParseCode(code) == errs.Unknown && code != errs.Unknown.String() {
				delete(s.Errors, code)
			}
		}
		kept = append(kept, s)
	}
	r.Invocations = kept
}

func validPath(p string) bool {
	for i := procmetrics.Path(0); i < procmetrics.NumPaths; i++ {
		if p == i.String() {
			return true
		}
	}
	return false
}

// serveMetrics answers a Prometheus scrape.
func (s *Server) serveMetrics() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorLog: nil, Timeout: 10 * time.Second})
}

// processCollector makes the processes' reports Prometheus series at scrape
// time: per app, function and path the sum of the live processes' latest
// reports and of the generations that ended here; gauges per app from the
// live processes only.
type processCollector struct{ s *Server }

var (
	descInvocations = prometheus.NewDesc("praas_invocations_total",
		"Invocations that ran in processes, by app, function and the path they came by (controlplane, dataplane, remote, local, triggered).",
		[]string{"app", "function", "path"}, nil)
	descInvocationErrors = prometheus.NewDesc("praas_invocation_errors_total",
		"Invocations that ran in processes and failed, by app, function, path and error code.",
		[]string{"app", "function", "path", "code"}, nil)
	descInvocationSeconds = prometheus.NewDesc("praas_invocation_duration_seconds",
		"Time invocations ran in processes (from a concurrency slot to the result), by app, function and path.",
		[]string{"app", "function", "path"}, nil)
	descInFlight = prometheus.NewDesc("praas_invocations_in_flight",
		"Invocations running in the processes this replica owns, by app.", []string{"app"}, nil)
	descQueued = prometheus.NewDesc("praas_invocations_queued",
		"Invocations waiting for a concurrency slot or an invocation they come after, by app.", []string{"app"}, nil)
	descMailboxMessages = prometheus.NewDesc("praas_mailbox_messages",
		"Unread messages in the mailboxes of the processes this replica owns, by app.", []string{"app"}, nil)
	descMailboxBytes = prometheus.NewDesc("praas_mailbox_bytes",
		"Bytes of the unread messages in mailboxes, by app.", []string{"app"}, nil)
	descTriggerMessages = prometheus.NewDesc("praas_trigger_buffered_messages",
		"Messages held by multi-source and batch triggers until their invocation is complete, by app.", []string{"app"}, nil)
	descStateBytes = prometheus.NewDesc("praas_state_bytes",
		"Bytes of state (keys and values) of the processes this replica owns, by app.", []string{"app"}, nil)
	descBackupDelivered = prometheus.NewDesc("praas_backup_messages_delivered_total",
		"Backup-queue messages processes took at swap-in, by app.", []string{"app"}, nil)
	descBackupDepth = prometheus.NewDesc("praas_backup_queue_messages",
		"Messages waiting in backup queues for their process, as of this replica's last append to each (until delivered), by app.", []string{"app"}, nil)
	descBackupDepthBytes = prometheus.NewDesc("praas_backup_queue_bytes",
		"Bytes of the messages waiting in backup queues, as praas_backup_queue_messages counts them.", []string{"app"}, nil)
	descProcesses = prometheus.NewDesc("praas_processes",
		"Processes this replica owns, by app and status (allocating, active, swapping).", []string{"app", "status"}, nil)
)

func (c *processCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInvocations, descInvocationErrors, descInvocationSeconds,
		descInFlight, descQueued, descMailboxMessages, descMailboxBytes, descTriggerMessages, descStateBytes,
		descBackupDelivered, descBackupDepth, descBackupDepthBytes, descProcesses} {
		ch <- d
	}
}

// appSums are one app's sums at a scrape.
type appSums struct {
	series           procmetrics.Totals
	backupDelivered  uint64
	gauges           procmetrics.Report // gauge fields only
	backupDepth      int64
	backupDepthBytes int64
	byStatus         map[string]int
}

func (c *processCollector) Collect(ch chan<- prometheus.Metric) {
	apps := c.s.metricsByApp()
	for app, v := range apps {
		for _, sr := range v.series {
			ch <- prometheus.MustNewConstMetric(descInvocations, prometheus.CounterValue, float64(sr.Count), app, sr.Function, sr.Path)
			for code, n := range sr.Errors {
				ch <- prometheus.MustNewConstMetric(descInvocationErrors, prometheus.CounterValue, float64(n), app, sr.Function, sr.Path, code)
			}
			buckets := make(map[float64]uint64, len(procmetrics.Bounds))
			var cum uint64
			for i, b := range procmetrics.Bounds {
				cum += sr.Buckets[i]
				buckets[b.Seconds()] = cum
			}
			ch <- prometheus.MustNewConstHistogram(descInvocationSeconds, sr.Count, time.Duration(sr.SumNanos).Seconds(), buckets, app, sr.Function, sr.Path)
		}
		g := &v.gauges
		for _, x := range []struct {
			d *prometheus.Desc
			v int64
		}{{descInFlight, g.InFlight}, {descQueued, g.Queued}, {descMailboxMessages, g.MailboxMessages},
			{descMailboxBytes, g.MailboxBytes}, {descTriggerMessages, g.TriggerMessages}, {descStateBytes, g.StateBytes},
			{descBackupDepth, v.backupDepth}, {descBackupDepthBytes, v.backupDepthBytes}} {
			ch <- prometheus.MustNewConstMetric(x.d, prometheus.GaugeValue, float64(x.v), app)
		}
		ch <- prometheus.MustNewConstMetric(descBackupDelivered, prometheus.CounterValue, float64(v.backupDelivered), app)
		for status, n := range v.byStatus {
			ch <- prometheus.MustNewConstMetric(descProcesses, prometheus.GaugeValue, float64(n), app, status)
		}
	}
}

// keepReport takes a generation's report as its latest, unless the
// generation's reports have ended or r counts fewer invocations than the
// one kept (a heartbeat that arrives after the final report): the sums
// only grow.
func (l *live) keepReport(r *procmetrics.Report) {
	if r == nil {
		return
	}
	sanitizeReport(r)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reportsEnded || (l.report != nil && invocationCount(r) < invocationCount(l.report)) {
		return
	}
	l.report = r
}

func invocationCount(r *procmetrics.Report) uint64 {
	var n uint64
	for i := range r.Invocations {
		n += r.Invocations[i].Count
	}
	return n
}

// metricsByApp sums, per app, the latest reports of the live processes and
// the totals of the generations that ended here.
func (s *Server) metricsByApp() map[string]*appSums {
	m := s.metrics
	views := make(map[string]*appSums)
	view := func(app string) *appSums {
		v := views[app]
		if v == nil {
			v = &appSums{series: make(procmetrics.Totals), byStatus: make(map[string]int)}
			views[app] = v
		}
		return v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s.mu.Lock()
	lives := make([]*live, 0, len(s.live))
	for _, l := range s.live {
		lives = append(lives, l)
	}
	s.mu.Unlock()
	for _, l := range lives {
		status := "active"
		if !isReady(l) {
			status = "allocating"
		}
		l.mu.Lock()
		rep := l.report
		if l.stopping {
			status = "swapping"
		}
		l.mu.Unlock()
		v := view(l.app)
		v.byStatus[status]++
		if rep == nil {
			continue // reports are not changed once kept: read outside l.mu
		}
		v.series.Add(rep)
		v.backupDelivered += rep.BackupDelivered
		g := &v.gauges
		g.InFlight += rep.InFlight
		g.Queued += rep.Queued
		g.MailboxMessages += rep.MailboxMessages
		g.MailboxBytes += rep.MailboxBytes
		g.TriggerMessages += rep.TriggerMessages
		g.StateBytes += rep.StateBytes
	}
	for app, t := range m.retired {
		v := view(app)
		for _, sr := range t.series {
			v.series.AddSeries(sr)
		}
		v.backupDelivered += t.backupDelivered
	}
	for _, d := range m.backupDepth {
		v := view(d.app)
		v.backupDepth += int64(d.messages)
		v.backupDepthBytes += d.bytes
	}
	return views
}
