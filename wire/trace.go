package wire

import "fmt"

// TraceContextLen is the size of an encoded TraceContext.
const TraceContextLen = 25

// TraceContext is the W3C trace context (traceparent, version 00) of the
// span that sent a frame, in binary: trace id, parent span id, flags.
//
// layout: trace id [16]byte, span id [8]byte, flags uint8 (bit 0: sampled).
type TraceContext struct {
	TraceID [16]byte
	SpanID  [8]byte
	Flags   uint8
}

// IsValid reports whether tc names a span: W3C forbids all-zero ids.
func (tc *TraceContext) IsValid() bool {
	return tc.TraceID != [16]byte{} && tc.SpanID != [8]byte{}
}

// appendTo appends the encoded trace context to b.
func (tc *TraceContext) appendTo(b []byte) []byte {
	b = append(b, tc.TraceID[:]...)
	b = append(b, tc.SpanID[:]...)
	return append(b, tc.Flags)
}

// splitTrace cuts the trace context off the end of a frame's metadata
// (ParseHeader checked it is long enough).
func splitTrace(meta []byte) ([]byte, TraceContext, error) {
	var tc TraceContext
	rest, b := meta[:len(meta)-TraceContextLen], meta[len(meta)-TraceContextLen:]
	copy(tc.TraceID[:], b[:16])
	copy(tc.SpanID[:], b[16:24])
	tc.Flags = b[24]
	if !tc.IsValid() {
		return meta, TraceContext{}, fmt.Errorf("%w: trace context with an all-zero trace or span id", ErrMalformed)
	}
	return rest, tc, nil
}
