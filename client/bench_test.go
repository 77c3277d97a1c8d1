package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/process"
)

// benchConn runs a standalone process runtime in this test binary and
// returns a data-plane connection to it.
func benchConn(b *testing.B) *client.DataConn { return benchConnTLS(b, false) }

// benchConnTLS is benchConn, over TLS if withTLS (a certificate of a test
// CA, as the control plane issues processes).
func benchConnTLS(b *testing.B, withTLS bool) *client.DataConn { return benchConnWith(b, withTLS, nil) }

// benchConnWith is benchConnTLS with the runtime's configuration changed
// by configure, if not nil; the client traces with the runtime's
// TracerProvider.
func benchConnWith(b *testing.B, withTLS bool, configure func(*process.Config)) *client.DataConn {
	b.Helper()
	im := process.NewImage()
	im.Register("echo", func(_ context.Context, _ *process.Process, in []byte) ([]byte, error) { return in, nil })
	verifier, tok := testTokens("bench", "p1")
	cfg := process.Config{App: "bench", PID: "p1", Verifier: verifier, DrainTimeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var opt client.DialOptions
	if withTLS {
		cfg.TLS, opt.TLS = testTLS(b)
	}
	if configure != nil {
		configure(&cfg)
	}
	opt.TracerProvider = cfg.TracerProvider
	rt, err := process.New(cfg, im)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	select {
	case <-rt.Ready():
	case err := <-done:
		b.Fatal(err)
	}
	dc, err := client.Dial(context.Background(), rt.Addr(), tok, opt)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		dc.Close()
		cancel()
		<-done
	})
	return dc
}

// BenchmarkDataPlaneInvoke is one no-op invocation round trip over loopback
// TCP, client and process runtime in one OS process.
func BenchmarkDataPlaneInvoke(b *testing.B) { benchmarkInvoke(b, false) }

// BenchmarkDataPlaneInvokeMetrics is the 1 KiB BenchmarkDataPlaneInvoke
// with the runtime's invocation metrics on and off (praas up --metrics), to
// compare with benchstat -col /metrics.
func BenchmarkDataPlaneInvokeMetrics(b *testing.B) {
	for _, on := range []bool{true, false} {
		b.Run(fmt.Sprintf("metrics=%v", on), func(b *testing.B) {
			dc := benchConnWith(b, false, func(c *process.Config) { c.NoMetrics = !on })
			ctx := context.Background()
			in := make([]byte, 1<<10)
			b.SetBytes(int64(2 * len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if out, err := dc.Invoke(ctx, "echo", in); err != nil || len(out) != len(in) {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDataPlaneInvokeTLS is BenchmarkDataPlaneInvoke over TLS 1.3, as
// processes serve when the control plane runs with --tls-cert.
func BenchmarkDataPlaneInvokeTLS(b *testing.B) { benchmarkInvoke(b, true) }

func benchmarkInvoke(b *testing.B, withTLS bool) {
	for _, sz := range []struct {
		name string
		n    int
	}{{"1B", 1}, {"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}} {
		b.Run(sz.name, func(b *testing.B) {
			dc := benchConnTLS(b, withTLS)
			ctx := context.Background()
			in := make([]byte, sz.n)
			b.SetBytes(int64(2 * sz.n))
			b.ReportAllocs()
			for b.Loop() {
				out, err := dc.Invoke(ctx, "echo", in)
				if err != nil || len(out) != sz.n {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDataPlaneInvokeParallel has GOMAXPROCS×16 invocations in flight
// on one connection.
func BenchmarkDataPlaneInvokeParallel(b *testing.B) {
	dc := benchConn(b)
	ctx := context.Background()
	in := []byte("x")
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := dc.Invoke(ctx, "echo", in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDataPlaneInvokeTracing is the 1 KiB invocation of
// BenchmarkDataPlaneInvoke with tracing off (no tracer provider: the
// default, which must cost what an untraced build did) and on (client and
// process make a sampled span each, and the frame carries the trace
// context; the spans go to no exporter).
func BenchmarkDataPlaneInvokeTracing(b *testing.B) {
	sampled := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.Cleanup(func() { sampled.Shutdown(context.Background()) })
	for _, tc := range []struct {
		name string
		tp   trace.TracerProvider
	}{{"tracing=off", nil}, {"tracing=on", sampled}} {
		b.Run(tc.name, func(b *testing.B) {
			dc := benchConnWith(b, false, func(c *process.Config) { c.TracerProvider = tc.tp })
			ctx := context.Background()
			in := make([]byte, 1<<10)
			b.SetBytes(2 << 10)
			b.ReportAllocs()
			for b.Loop() {
				out, err := dc.Invoke(ctx, "echo", in)
				if err != nil || len(out) != len(in) {
					b.Fatal(err)
				}
			}
		})
	}
}
