package tracing

import (
	"context"
	"net/http"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/wire"
)

func TestEndpoints(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"http://collector:4318", "http://collector:4318/v1/traces"},
		{"http://collector:4318/", "http://collector:4318/v1/traces"},
		{"https://collector/otlp/v1/traces", "https://collector/otlp/v1/traces"},
	} {
		if got := TracesURL(tc.in); got != tc.want {
			t.Errorf("TracesURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/")
	if got := EndpointFromEnv(); got != "http://base:4318/v1/traces" {
		t.Errorf("from OTEL_EXPORTER_OTLP_ENDPOINT: %q", got)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom")
	if got := EndpointFromEnv(); got != "http://traces:4318/custom" {
		t.Errorf("from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: %q", got)
	}
	for _, bad := range []Config{{Endpoint: "collector:4318", SampleRatio: 1}, {Endpoint: "ftp://x/", SampleRatio: 1}, {SampleRatio: 1.5}, {SampleRatio: -0.1}} {
		if bad.Validate() == nil {
			t.Errorf("%+v is valid", bad)
		}
	}
}

// What the control plane puts in a process's environment reads back.
func TestProcessEnvRoundTrip(t *testing.T) {
	if env := (Config{}).ProcessEnv(); env != nil {
		t.Fatalf("tracing off passes %q", env)
	}
	want := Config{Endpoint: "http://c:4318/v1/traces", SampleRatio: 0.25}
	for _, kv := range want.ProcessEnv() {
		for i := range kv {
			if kv[i] == '=' {
				t.Setenv(kv[:i], kv[i+1:])
				break
			}
		}
	}
	got, err := ProcessConfigFromEnv()
	if err != nil || got != want {
		t.Fatalf("read back %+v, %v; want %+v", got, err, want)
	}
	t.Setenv(cpapi.EnvTraceSampleRatio, "lots")
	if _, err := ProcessConfigFromEnv(); err == nil {
		t.Fatal("a bad ratio is accepted")
	}
}

func TestContextCarriers(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr := New(tp)
	ctx, span := tr.StartInvoke(context.Background(), trace.SpanKindClient, "app", "p1", "fn")
	tc, ok := ToWire(ctx)
	if !ok || tc.TraceID != span.SpanContext().TraceID() || tc.SpanID != span.SpanContext().SpanID() || tc.Flags != 1 {
		t.Fatalf("ToWire = %+v, %v", tc, ok)
	}
	_, child := tr.StartInvoke(FromWire(context.Background(), &tc), trace.SpanKindServer, "app", "", "fn")
	h := http.Header{}
	Inject(ctx, h)
	_, viaHTTP := tr.StartSend(Extract(context.Background(), h), trace.SpanKindServer, "p1", "k")
	End(child, errs.Errorf(errs.NotFound, "gone"))
	End(viaHTTP, nil)
	End(span, nil)
	for _, s := range rec.Ended()[:2] {
		if s.Parent().SpanID() != span.SpanContext().SpanID() || !s.Parent().IsRemote() {
			t.Errorf("%q: parent %v, want the remote %v", s.Name(), s.Parent(), span.SpanContext())
		}
	}
	if got := rec.Ended()[0]; got.Status().Code.String() != "Error" {
		t.Errorf("failed span status %v", got.Status())
	}
	if _, ok := ToWire(context.Background()); ok {
		t.Error("ToWire of no span")
	}
	var none wire.TraceContext
	if ctx := FromWire(context.Background(), &none); trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("FromWire of no trace context made a parent")
	}
	if New(nil) != nil {
		t.Error("New(nil) is not off")
	}
	if _, err := NewProvider(Config{}, ServiceProcess); err == nil {
		t.Error("a provider without an endpoint")
	}
}
