package controlplane

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/internal/tracing"
)

// startSendSpan starts the server span of a message to process pid with
// key relayed through this replica (REST send, or a process's message for
// a peer that is not active), continuing the caller's trace from r's
// traceparent header. end ends it with the outcome. With tracing off it
// returns r's context and a no-op.
func (s *Server) startSendSpan(r *http.Request, pid, key string) (context.Context, func(error)) {
	if s.tracer == nil {
		return r.Context(), func(error) {}
	}
	ctx, span := s.tracer.StartSend(tracing.Extract(r.Context(), r.Header), trace.SpanKindServer, pid, key)
	return ctx, func(err error) { tracing.End(span, err) }
}
