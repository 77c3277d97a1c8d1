package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// A workload through every path, a swap out and back in, then GET /metrics:
// each series says what the test did.
func TestMetricsEndToEnd(t *testing.T) {
	startControlPlane(t, t.TempDir())
	ctx := context.Background()
	c := demoClient(t)
	if _, err := c.CreateProcess(ctx, "demo", "p2"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.InvokeControlPlane(ctx, "demo", "p1", "echo", []byte("via the control plane")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.InvokeControlPlane(ctx, "demo", "p1", "state-set", []byte("no equals sign")); err == nil {
		t.Fatal("state-set without = succeeded")
	}
	dc, err := c.DataConn(ctx, "demo", "p1")
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := dc.Invoke(ctx, "echo", make([]byte, 1024)); err != nil {
			t.Fatal(err)
		}
	}
	for _, in := range []string{"p2 echo remote", "@self echo local"} {
		if out, err := dc.Invoke(ctx, "call", []byte(in)); err != nil || len(out) == 0 {
			t.Fatalf("call %s: %q, %v", in, out, err)
		}
	}
	for _, n := range []string{"1", "2", "3"} {
		if err := c.SendMessage(ctx, "demo", "p1", "sum:k", []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the triggered sum", func() bool {
		out, err := dc.Invoke(ctx, "state-get", []byte("sum/k"))
		return err == nil && string(out) == "6"
	})
	if _, err := c.SwapProcess(ctx, "demo", "p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.InvokeControlPlane(ctx, "demo", "p1", "echo", []byte("after the swap")); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"praas_invocations_total", lbl("function", "echo", "path", "controlplane"), 4},
		{"praas_invocations_total", lbl("function", "echo", "path", "dataplane"), 5},
		{"praas_invocations_total", lbl("function", "call", "path", "dataplane"), 2},
		{"praas_invocations_total", lbl("function", "echo", "path", "remote"), 1},
		{"praas_invocations_total", lbl("function", "echo", "path", "local"), 1},
		{"praas_invocations_total", lbl("function", "sum", "path", "triggered"), 1},
		{"praas_invocations_total", lbl("function", "state-set", "path", "controlplane"), 1},
		{"praas_invocation_errors_total", lbl("function", "state-set", "path", "controlplane", "code", "invalid_argument"), 1},
		{"praas_invocation_duration_seconds", lbl("function", "echo", "path", "dataplane"), 5}, // the histogram's count
		{"praas_rest_invocations_total", lbl("code", "ok"), 4},
		{"praas_rest_invocations_total", lbl("code", "invalid_argument"), 1},
		{"praas_rest_invocation_duration_seconds", lbl(), 5},
		{"praas_rest_messages_total", lbl("code", "ok"), 3},
		{"praas_swap_outs_total", lbl("status", "swapped"), 1},
		{"praas_swap_ins_total", lbl(), 1},
		{"praas_processes", lbl("status", "active"), 2},
	}
	var families map[string]*dto.MetricFamily
	waitFor(t, 10*time.Second, "the metrics of the workload (reported with the next heartbeats)", func() bool {
		families = scrape(t, token())
		for _, w := range want {
			if got, ok := metricValue(families, w.name, w.labels); !ok || got != w.value {
				return false
			}
		}
		return true
	})
	for _, name := range []string{"praas_swap_out_bytes_total", "praas_swap_in_bytes_total", "praas_state_bytes", "praas_heartbeats_total"} {
		if v, ok := metricValue(families, name, nil); !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want > 0", name, v, ok)
		}
	}
	if v, ok := metricValue(families, "praas_lease_renewals_total", map[string]string{"outcome": "ok"}); !ok || v < 1 {
		t.Errorf("praas_lease_renewals_total{outcome=ok} = %v, want >= 1", v)
	}
	// The dataplane echo histogram counts its five calls in its buckets.
	h := findMetric(families, "praas_invocation_duration_seconds", lbl("function", "echo", "path", "dataplane")).GetHistogram()
	if b := h.GetBucket(); len(b) == 0 || b[len(b)-1].GetCumulativeCount() != 5 || h.GetSampleSum() <= 0 {
		t.Errorf("echo dataplane histogram: %v", h)
	}

	// Scrapes need an admin key unless --metrics-public.
	resp, err := http.Get(os.Getenv(EnvEndpoint) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a key: %d, want 401", resp.StatusCode)
	}
}

// With --metrics=false processes count nothing; --metrics-public serves
// /metrics without a key.
func TestMetricsOff(t *testing.T) {
	startControlPlane(t, t.TempDir(), "--metrics=false", "--metrics-public", "--heartbeat-timeout", "3s")
	ctx := context.Background()
	c := demoClient(t)
	for range 3 {
		if _, err := c.InvokeControlPlane(ctx, "demo", "p1", "echo", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// Two heartbeats after the invocations: a report would be in by then.
	beats := func() float64 { v, _ := metricValue(scrape(t, ""), "praas_heartbeats_total", nil); return v }
	after := beats()
	waitFor(t, 10*time.Second, "two more heartbeats", func() bool { return beats() >= after+2 })
	families := scrape(t, "")
	if _, ok := families["praas_invocations_total"]; ok {
		t.Errorf("praas_invocations_total reported with --metrics=false")
	}
	if v, ok := metricValue(families, "praas_rest_invocations_total", lbl("code", "ok")); !ok || v != 3 {
		t.Errorf("praas_rest_invocations_total{code=ok} = %v, want 3 (the control plane counts its own)", v)
	}
}

// lbl makes labels of app demo and the given name/value pairs.
func lbl(kv ...string) map[string]string {
	m := map[string]string{"app": "demo"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// scrape GETs /metrics (with tok as the bearer token if set) and parses it.
func scrape(t *testing.T, tok string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", os.Getenv(EnvEndpoint)+"/metrics", nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// findMetric returns the series of family name whose labels include want.
func findMetric(families map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f := families[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		have := make(map[string]string)
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// metricValue is a counter's or gauge's value, or a histogram's count.
func metricValue(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	m := findMetric(families, name, want)
	switch {
	case m == nil:
		return 0, false
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount()), true
	}
	panic(fmt.Sprintf("%s: unexpected metric type", name))
}
