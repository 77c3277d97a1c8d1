package process

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/internal/tracing"
	"github.com/praas-dev/praas/wire"
)

// Spans of the process (see internal/tracing): rt.tracer is nil while
// tracing is off, and every caller checks that first, so an untraced
// invocation touches none of this. A frame's trace context is then
// ignored.

// invocationSpan is the span of a data-plane invocation. The invocation's
// closure holds it by pointer, not as an interface: one word more keeps
// the closure in the allocation size class it has without tracing.
type invocationSpan struct{ trace.Span }

// startInvokeSpan starts the server span of an invocation of function
// that arrived with the caller's trace context tc (maybe none).
func (rt *Runtime) startInvokeSpan(tc *wire.TraceContext, function string) *invocationSpan {
	_, span := rt.tracer.StartInvoke(tracing.FromWire(context.Background(), tc), trace.SpanKindServer, rt.cfg.App, "", function)
	return &invocationSpan{span}
}

// startReceiveSpan starts the consumer span of a message with key that
// arrived with the sender's trace context tc (maybe none).
func (rt *Runtime) startReceiveSpan(tc *wire.TraceContext, key string) trace.Span {
	_, span := rt.tracer.StartSend(tracing.FromWire(context.Background(), tc), trace.SpanKindConsumer, rt.cfg.PID, key)
	return span
}

// underSpan returns run with span as the parent of the spans it makes: a
// triggered invocation is a child of the message that completed it.
func underSpan(run func(context.Context), span trace.Span) func(context.Context) {
	if run == nil {
		return nil
	}
	return func(ctx context.Context) { run(trace.ContextWithSpan(ctx, span)) }
}
