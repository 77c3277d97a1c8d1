package process_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/procmetrics"
	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/process"
)

// eventually waits up to five seconds for cond.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

// series returns the report's series of function on path (zero if none).
func series(r *procmetrics.Report, function string, path procmetrics.Path) procmetrics.Series {
	for _, s := range r.Invocations {
		if s.Function == function && s.Path == path.String() {
			return s
		}
	}
	return procmetrics.Series{}
}

// Each invocation counts once, under the path it came by (told apart by
// the token of its connection), with its errors by code and its latency in
// a bucket.
func TestMetricsCountPaths(t *testing.T) {
	im := testImage()
	im.Register("on-message", func(context.Context, *process.Process, []byte) ([]byte, error) { return nil, nil }, process.OnMessage())
	rt, tok := startRuntime(t, im)
	ctx := context.Background()

	dc := dial(t, rt, tok)
	for range 3 {
		if _, err := dc.Invoke(ctx, "echo", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, fn := range []string{"fail", "panic"} {
		if _, err := dc.Invoke(ctx, fn, nil); err == nil {
			t.Fatalf("%s succeeded", fn)
		}
	}
	if _, err := dc.Invoke(ctx, "local", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Invoke(ctx, "nosuch", nil); err == nil {
		t.Fatal("an unknown function ran")
	}
	plane := dial(t, rt, sign(token.Claims{App: "app", PID: "p1", Ops: token.OpInvoke | token.OpSend | token.OpRelay}))
	if _, err := plane.Invoke(ctx, "echo", nil); err != nil {
		t.Fatal(err)
	}
	peer := dial(t, rt, sign(token.Claims{App: "app", PID: token.AnyPID, Sub: "p2", Ops: token.OpInvoke | token.OpSend}))
	for range 2 {
		if _, err := peer.Invoke(ctx, "echo", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := dc.Send(ctx, "", "on-message", []byte("go")); err != nil {
		t.Fatal(err)
	}

	var r *procmetrics.Report
	eventually(t, func() bool {
		r = process.MetricsReport(rt)
		return series(r, "on-message", procmetrics.Triggered).Count == 1
	})
	for _, c := range []struct {
		function string
		path     procmetrics.Path
		count    uint64
		errors   map[string]uint64
	}{
		{"echo", procmetrics.DataPlane, 3, nil},
		{"fail", procmetrics.DataPlane, 1, map[string]uint64{"function_failed": 1}},
		{"panic", procmetrics.DataPlane, 1, map[string]uint64{"function_failed": 1}},
		{"local", procmetrics.DataPlane, 1, nil},
		{"echo", procmetrics.Local, 1, nil},
		{"echo", procmetrics.ControlPlane, 1, nil},
		{"echo", procmetrics.Remote, 2, nil},
		{"on-message", procmetrics.Triggered, 1, nil},
	} {
		s := series(r, c.function, c.path)
		var inBuckets uint64
		for _, n := range s.Buckets {
			inBuckets += n
		}
		if s.Count != c.count || inBuckets != c.count || len(s.Errors) != len(c.errors) {
			t.Errorf("%s %s: count %d, in buckets %d, errors %v; want %d, %v", c.function, c.path, s.Count, inBuckets, s.Errors, c.count, c.errors)
		}
		for code, n := range c.errors {
			if s.Errors[code] != n {
				t.Errorf("%s %s: errors %v, want %v", c.function, c.path, s.Errors, c.errors)
			}
		}
	}
	if n := len(r.Invocations); n != 8 {
		t.Errorf("%d series, want 8 (a refused invocation is not counted): %+v", n, r.Invocations)
	}
}

// Gauges: invocations waiting for a slot, state and mailbox sizes, trigger
// buffers.
func TestMetricsGauges(t *testing.T) {
	release := make(chan struct{})
	im := testImage()
	im.Register("block", func(ctx context.Context, _ *process.Process, _ []byte) ([]byte, error) {
		process.Blocking(ctx)
		<-release
		return nil, nil
	})
	im.Register("three", func(context.Context, *process.Process, []byte) ([]byte, error) { return nil, nil }, process.Batch(3))
	rt, tok := startRuntime(t, im, func(c *process.Config) { c.MaxConcurrency = 1 })
	ctx := context.Background()
	dc := dial(t, rt, tok)
	if _, err := dc.Invoke(ctx, "append", []byte("12345")); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"k", "three", "three"} {
		if err := dc.Send(ctx, "", key, []byte("abc")); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = dc.Invoke(ctx, "block", nil) }()
	}
	var r *procmetrics.Report
	eventually(t, func() bool {
		r = process.MetricsReport(rt)
		return r.InFlight == 1 && r.Queued == 1
	})
	close(release)
	wg.Wait()
	want := procmetrics.Report{InFlight: 1, Queued: 1, MailboxMessages: 1, MailboxBytes: 3, TriggerMessages: 2,
		StateBytes: int64(len("log") + len("12345"))}
	r.Invocations = nil
	if diff := cmp.Diff(want, *r); diff != "" {
		t.Errorf("gauges (-want +got):\n%s", diff)
	}
	if r := process.MetricsReport(rt); r.InFlight != 0 || r.Queued != 0 {
		t.Errorf("after the release: in flight %d, queued %d", r.InFlight, r.Queued)
	}
}

// With NoMetrics nothing is counted and there is no report.
func TestMetricsOff(t *testing.T) {
	rt, tok := startRuntime(t, testImage(), func(c *process.Config) { c.NoMetrics = true })
	if _, err := dial(t, rt, tok).Invoke(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
	if r := process.MetricsReport(rt); r != nil {
		t.Errorf("report with metrics off: %+v", r)
	}
}

// Concurrent invocations on many connections all count (run with -race).
func TestMetricsConcurrent(t *testing.T) {
	rt, tok := startRuntime(t, testImage())
	ctx := context.Background()
	const conns, each = 8, 200
	var wg sync.WaitGroup
	for range conns {
		dc := dial(t, rt, tok)
		wg.Add(1)
		go func(dc *client.DataConn) {
			defer wg.Done()
			for range each {
				if _, err := dc.Invoke(ctx, "echo", []byte("x")); err != nil {
					t.Error(err)
					return
				}
			}
		}(dc)
	}
	// Reports read meanwhile only grow.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var last uint64
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(time.Millisecond):
		}
		n := series(process.MetricsReport(rt), "echo", procmetrics.DataPlane).Count
		if n < last {
			t.Fatalf("count went down from %d to %d", last, n)
		}
		last = n
	}
	if last != conns*each {
		t.Errorf("count %d, want %d", last, conns*each)
	}
}
