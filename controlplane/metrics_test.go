package controlplane

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/praas-dev/praas/internal/procmetrics"
	"github.com/praas-dev/praas/store"
)

// fakeReport is what every fake generation reports: n echo invocations on
// the data plane (one failed, not found), and a state of 100 bytes.
func fakeReport(n uint64) *procmetrics.Report {
	s := procmetrics.Series{Function: "echo", Path: "dataplane", Count: n, SumNanos: n * 1000,
		Buckets: make([]uint64, procmetrics.NumBuckets), Errors: map[string]uint64{"not_found": 1}}
	s.Buckets[0] = n
	return &procmetrics.Report{Invocations: []procmetrics.Series{s}, StateBytes: 100, BackupDelivered: 2}
}

// gathered returns the value of the series of family name with labels (a
// histogram's count), and whether it is there.
func gathered(t *testing.T, s *Server, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := make(map[string]string)
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

var echoDataplane = map[string]string{"app": "app", "function": "echo", "path": "dataplane"}

// The generations of a process that ended keep counting: a swap-out moves
// their last report into the app's totals, so the sums never go down, and
// scrapes racing the swaps never see one counted twice or not at all.
func TestMetricsAcrossSwaps(t *testing.T) {
	h := newHarness(t, nil)
	h.be.mu.Lock()
	h.be.metrics = func(uint64) *procmetrics.Report { return fakeReport(10) }
	h.be.mu.Unlock()
	h.create("p1")

	// A scraper checks all along that the counter only grows.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := 0.0
		for !stop.Load() {
			v, _ := gathered(t, h.s, "praas_invocations_total", echoDataplane)
			if v < last {
				t.Errorf("praas_invocations_total went from %v down to %v", last, v)
				return
			}
			last = v
			time.Sleep(time.Millisecond)
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()

	for gen := 1; gen <= 3; gen++ {
		l := h.mustActivate("p1")
		want := float64(10 * gen)
		waitUntil(t, "the generation's report", func() bool {
			v, _ := gathered(t, h.s, "praas_invocations_total", echoDataplane)
			return v == want
		})
		if v, _ := gathered(t, h.s, "praas_state_bytes", map[string]string{"app": "app"}); v != 100 {
			t.Errorf("generation %d: praas_state_bytes = %v, want 100", gen, v)
		}
		if v, _ := gathered(t, h.s, "praas_processes", map[string]string{"app": "app", "status": "active"}); v != 1 {
			t.Errorf("generation %d: praas_processes{active} = %v, want 1", gen, v)
		}
		if err := h.s.swapOut(context.Background(), l); err != nil {
			t.Fatal(err)
		}
		h.waitStatus("p1", store.StatusSwapped)
		for _, c := range []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"praas_invocations_total", echoDataplane, want},
			{"praas_invocation_duration_seconds", echoDataplane, want},
			{"praas_invocation_errors_total", map[string]string{"app": "app", "function": "echo", "path": "dataplane", "code": "not_found"}, float64(gen)},
			{"praas_backup_messages_delivered_total", map[string]string{"app": "app"}, float64(2 * gen)},
			{"praas_swap_outs_total", map[string]string{"app": "app", "status": "swapped"}, float64(gen)},
			{"praas_state_bytes", map[string]string{"app": "app"}, 0}, // gauges: live processes only
		} {
			if v, ok := gathered(t, h.s, c.name, c.labels); !ok || v != c.want {
				t.Errorf("after swap-out %d: %s%v = %v (present %v), want %v", gen, c.name, c.labels, v, ok, c.want)
			}
		}
	}
	if v, _ := gathered(t, h.s, "praas_heartbeats_total", nil); v == 0 {
		t.Error("no heartbeat counted")
	}
	if v, _ := gathered(t, h.s, "praas_lease_renewals_total", map[string]string{"outcome": "ok"}); v == 0 {
		t.Error("no lease renewal counted")
	}
}

// A report is kept only if it counts at least as many invocations as the
// one kept (a heartbeat answered after the final report is older), and none
// once the generation's reports ended. A process handed to another replica
// (lost lease) is not retired: its next owner counts it.
func TestMetricsReportsKept(t *testing.T) {
	s, err := New(Config{Metadata: nopMetadata{}, Backend: newFakeBackend(t, nil), SigningKey: testSigningKey})
	if err != nil {
		t.Fatal(err)
	}
	add := func(pid string) *live {
		l := newLive(store.App{Name: "app"}, pid, 1)
		s.mu.Lock()
		s.live[liveKey("app", pid)] = l
		s.mu.Unlock()
		return l
	}
	l := add("p1")
	l.keepReport(fakeReport(5))
	l.keepReport(fakeReport(3)) // late
	if v, _ := gathered(t, s, "praas_invocations_total", echoDataplane); v != 5 {
		t.Fatalf("after a late report: %v, want 5", v)
	}
	s.forget(l)
	l.keepReport(fakeReport(7)) // after the end
	if v, _ := gathered(t, s, "praas_invocations_total", echoDataplane); v != 5 {
		t.Fatalf("after the end: %v, want 5 (retired)", v)
	}

	handed := add("p2")
	handed.keepReport(fakeReport(4))
	if v, _ := gathered(t, s, "praas_invocations_total", echoDataplane); v != 9 {
		t.Fatalf("with p2: %v, want 9", v)
	}
	s.forgetAs(handed, false)
	if v, _ := gathered(t, s, "praas_invocations_total", echoDataplane); v != 5 {
		t.Fatalf("after p2 was handed over: %v, want 5", v)
	}

	// A report with series no runtime makes is trimmed.
	bad := fakeReport(1)
	bad.Invocations = append(bad.Invocations,
		procmetrics.Series{Function: "x", Path: "elsewhere", Count: 1, Buckets: make([]uint64, procmetrics.NumBuckets)},
		procmetrics.Series{Function: "../x", Path: "local", Count: 1, Buckets: make([]uint64, procmetrics.NumBuckets)},
		procmetrics.Series{Function: "short", Path: "local", Count: 1, Buckets: []uint64{1}})
	bad.Invocations[0].Errors["no_such_code"] = 1
	l3 := add("p3")
	l3.keepReport(bad)
	if n := len(l3.report.Invocations); n != 1 {
		t.Errorf("sanitized report keeps %d series, want 1", n)
	}
	if _, ok := l3.report.Invocations[0].Errors["no_such_code"]; ok {
		t.Error("an unknown error code was kept")
	}

	// A deleted app's retired totals go; a live process still counts.
	s.metrics.forgetApp("app")
	if v, _ := gathered(t, s, "praas_invocations_total", echoDataplane); v != 1 {
		t.Errorf("after the app's totals were dropped: %v, want 1 (p3's)", v)
	}
}

// nopMetadata is a metadata store New accepts; the test above never calls it.
type nopMetadata struct{ store.Metadata }
