package main

import (
	"strings"
	"testing"

	"github.com/praas-dev/praas/internal/tracing"
)

// praas up's tracing flags, and the standard environment they default to.
func TestUpTracingFlags(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	if tc, tp, err := upTracing(upConfig{traceSampleRatio: 1}, "r1"); err != nil || tp != nil || tc.Enabled() || tc.ProcessEnv() != nil {
		t.Fatalf("no endpoint: %+v, %v, %v; want tracing off", tc, tp, err)
	}
	tc, tp, err := upTracing(upConfig{otlpEndpoint: "http://127.0.0.1:4318", traceSampleRatio: 0.5}, "r1")
	if err != nil || tp == nil || tc != (tracing.Config{Endpoint: "http://127.0.0.1:4318/v1/traces", SampleRatio: 0.5}) {
		t.Fatalf("--otlp-endpoint: %+v, %v, %v", tc, tp, err)
	}
	tracing.Shutdown(tp)
	if env := strings.Join(tc.ProcessEnv(), " "); !strings.Contains(env, "PRAAS_OTLP_ENDPOINT=http://127.0.0.1:4318/v1/traces") || !strings.Contains(env, "PRAAS_TRACE_SAMPLE_RATIO=0.5") {
		t.Fatalf("process environment %q", env)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
	tc, tp, err = upTracing(upConfig{traceSampleRatio: 1}, "r1")
	if err != nil || tp == nil || tc.Endpoint != "http://collector:4318/v1/traces" {
		t.Fatalf("from the environment: %+v, %v, %v", tc, tp, err)
	}
	tracing.Shutdown(tp)
	for _, bad := range []upConfig{{otlpEndpoint: "collector:4318", traceSampleRatio: 1}, {otlpEndpoint: "http://c:4318", traceSampleRatio: 2}} {
		if _, _, err := upTracing(bad, "r1"); err == nil || !strings.Contains(err.Error(), "--otlp-endpoint") {
			t.Errorf("%+v: %v, want a flag error", bad, err)
		}
	}
}
