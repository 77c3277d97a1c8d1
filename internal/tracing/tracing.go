// Package tracing makes the OpenTelemetry spans of praas: the tracer
// providers that export them over OTLP/HTTP (off unless an endpoint is
// configured), the conversion between span contexts and the data plane's
// binary trace context (wire.TraceContext) or the traceparent header of
// HTTP calls, and the names and attributes of the spans of every hop (see
// docs/observability.md, "Traces").
//
// A component holds a *Tracer, nil while tracing is off. Callers compare it
// with nil before they touch OpenTelemetry, so with tracing off a hop costs
// one pointer comparison: no allocation, no lock, no trace bytes on the wire.
package tracing

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/wire"
)

// Service names of the spans' resources.
const (
	ServiceControlPlane = "praas-controlplane"
	ServiceProcess      = "praas-process"
)

// scope is the instrumentation scope of every praas span.
const scope = "github.com/praas-dev/praas"

// Config says where spans go. The zero value is tracing off.
type Config struct {
	// Endpoint is the OTLP/HTTP traces URL (http://collector:4318/v1/traces);
	// empty turns tracing off.
	Endpoint string
	// SampleRatio is the fraction of the traces started here that are
	// sampled, 0 to 1; a trace continued from a caller follows the caller's
	// decision.
	SampleRatio float64
}

// Enabled reports whether spans are exported.
func (c Config) Enabled() bool { return c.Endpoint != "" }

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("trace sample ratio %v: must be between 0 and 1", c.SampleRatio)
	}
	if c.Endpoint == "" {
		return nil
	}
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("OTLP endpoint %q: an http:// or https:// URL is required", c.Endpoint)
	}
	return nil
}

// TracesURL turns an OTLP/HTTP endpoint into its traces URL: a URL without
// a path gets /v1/traces (the OTLP default), one with a path is kept.
func TracesURL(endpoint string) string {
	if endpoint == "" {
		return ""
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return endpoint // Validate reports a bad URL
	}
	u.Path = "/v1/traces"
	return u.String()
}

// EndpointFromEnv returns the traces URL the standard OpenTelemetry
// environment names: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, else
// OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces appended; "" if neither is set.
func EndpointFromEnv() string {
	if v := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); v != "" {
		return v
	}
	if v := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
		return strings.TrimRight(v, "/") + "/v1/traces"
	}
	return ""
}

// ProcessEnv is the environment through which the control plane hands
// this configuration to the processes it starts (nil when off).
func (c Config) ProcessEnv() []string {
	if !c.Enabled() {
		return nil
	}
	return []string{
		cpapi.EnvOTLPEndpoint + "=" + c.Endpoint,
		cpapi.EnvTraceSampleRatio + "=" + strconv.FormatFloat(c.SampleRatio, 'g', -1, 64),
	}
}

// ProcessConfigFromEnv reads what ProcessEnv wrote.
func ProcessConfigFromEnv() (Config, error) {
	c := Config{Endpoint: os.Getenv(cpapi.EnvOTLPEndpoint), SampleRatio: 1}
	if v := os.Getenv(cpapi.EnvTraceSampleRatio); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return c, fmt.Errorf("%s: %w", cpapi.EnvTraceSampleRatio, err)
		}
		c.SampleRatio = r
	}
	return c, c.Validate()
}

// NewProvider returns a provider that batches spans of service, described
// by attrs, and exports them to c.Endpoint over OTLP/HTTP. Shut it down to
// flush what it holds.
func NewProvider(c Config, service string, attrs ...attribute.KeyValue) (*sdktrace.TracerProvider, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !c.Enabled() {
		return nil, fmt.Errorf("tracing: no OTLP endpoint")
	}
	// Creating the exporter connects to nothing: spans are sent in batches.
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(c.Endpoint))
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	attrs = append([]attribute.KeyValue{attribute.String("service.name", service)}, attrs...)
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
	), nil
}

// Shutdown flushes and stops tp if it is a provider that can (an SDK
// provider), waiting at most a few seconds.
func Shutdown(tp trace.TracerProvider) error {
	s, ok := tp.(interface{ Shutdown(context.Context) error })
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// Tracer makes the spans of one component. A nil *Tracer is tracing off:
// callers check for nil first.
type Tracer struct {
	t trace.Tracer
}

// New returns a tracer of tp, or nil (tracing off) if tp is nil.
func New(tp trace.TracerProvider) *Tracer {
	if tp == nil {
		return nil
	}
	return &Tracer{t: tp.Tracer(scope)}
}

// Attribute keys of praas spans: OpenTelemetry's semantic conventions for
// RPC and messaging, and praas's own.
const (
	keyRPCSystem      = "rpc.system"
	keyRPCService     = "rpc.service"
	keyRPCMethod      = "rpc.method"
	keyMsgSystem      = "messaging.system"
	keyMsgDestination = "messaging.destination.name"
	keyMsgOperation   = "messaging.operation.type"
	keyMsgBatchCount  = "messaging.batch.message_count"
	keyErrorType      = "error.type"
	KeyPID            = "praas.pid"
	KeyApp            = "praas.app"
	KeyGeneration     = "praas.generation"
	system            = "praas"
	opSend, opReceive = "send", "receive"
	opProcess         = "process"
)

// StartInvoke starts the span of an invocation of function in a process
// of app (pid, if known): kind Client for the caller, Server for the
// callee, Internal for a local call. Its name is "APP/FUNCTION", after the
// RPC conventions' "service/method".
func (t *Tracer) StartInvoke(ctx context.Context, kind trace.SpanKind, app, pid, function string) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		attribute.String(keyRPCSystem, system),
		attribute.String(keyRPCService, app),
		attribute.String(keyRPCMethod, function),
	}
	if pid != "" {
		attrs = append(attrs, attribute.String(KeyPID, pid))
	}
	return t.t.Start(ctx, app+"/"+function, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// StartSend starts the span of a message with key to process pid: kind
// Producer for the sender ("send F"), Consumer for the process that
// puts it in its mailbox ("receive F"), Server for the control plane
// relaying a REST send. F is the key's function part (before ":"),
// which keeps span names few; the whole key is an attribute.
func (t *Tracer) StartSend(ctx context.Context, kind trace.SpanKind, pid, key string) (context.Context, trace.Span) {
	op := opSend
	if kind == trace.SpanKindConsumer {
		op = opReceive
	}
	return t.t.Start(ctx, op+" "+keyName(key), trace.WithSpanKind(kind), trace.WithAttributes(
		attribute.String(keyMsgSystem, system),
		attribute.String(keyMsgDestination, key),
		attribute.String(keyMsgOperation, op),
		attribute.String(KeyPID, pid),
	))
}

// StartTriggered starts the span of function run by a message trigger
// ("process F"), a child of the span in ctx: that of the message that
// completed the trigger.
func (t *Tracer) StartTriggered(ctx context.Context, function, key string, messages int) (context.Context, trace.Span) {
	return t.t.Start(ctx, opProcess+" "+function, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String(keyMsgSystem, system),
		attribute.String(keyMsgDestination, key),
		attribute.String(keyMsgOperation, opProcess),
		attribute.Int(keyMsgBatchCount, messages),
		attribute.String(keyRPCMethod, function),
	))
}

func keyName(key string) string {
	name, _, _ := strings.Cut(key, ":")
	return name
}

// End ends span, with status Error and the praas error code as error.type
// if err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		code := errs.CodeOf(err)
		span.SetAttributes(attribute.String(keyErrorType, code.String()))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// ToWire returns the trace context of the span in ctx for a frame, and
// false if ctx holds no valid span context.
func ToWire(ctx context.Context) (wire.TraceContext, bool) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return wire.TraceContext{}, false
	}
	return wire.TraceContext{TraceID: sc.TraceID(), SpanID: sc.SpanID(), Flags: byte(sc.TraceFlags())}, true
}

// FromWire returns ctx with the frame's trace context as the remote
// parent of the spans started from it (ctx unchanged if tc is not valid:
// the frame carried none).
func FromWire(ctx context.Context, tc *wire.TraceContext) context.Context {
	if !tc.IsValid() {
		return ctx
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tc.TraceID, SpanID: tc.SpanID, TraceFlags: trace.TraceFlags(tc.Flags), Remote: true,
	})
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

var propagator = propagation.TraceContext{}

// Inject adds the traceparent header of the span in ctx to h.
func Inject(ctx context.Context, h http.Header) {
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// Extract returns ctx with the remote parent that h's traceparent header
// names, if any.
func Extract(ctx context.Context, h http.Header) context.Context {
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}
