package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestTraceContextRoundTrip(t *testing.T) {
	tc := TraceContext{
		TraceID: [16]byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  [8]byte{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		Flags:   1,
	}
	inv := mustInvoke(t, "echo", 3)
	msg := Message{Source: "a", Key: "k", Queued: 4}.Encode()
	big := bytes.Repeat([]byte("x"), splitPayload+1) // read through NextInto's split path
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for i, f := range []struct {
		typ           uint8
		meta, payload []byte
	}{{FrameInvoke, inv, []byte("in")}, {FrameMessage, msg, []byte("m")}, {FrameInvoke, inv, big}} {
		if err := w.WriteTracedFrame(f.typ, uint64(i+1), f.meta, &tc, f.payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteFrame(FrameInvoke, 4, inv, []byte("untraced")); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf, 0)
	for i, want := range [][]byte{inv, msg, inv} {
		var sawMeta []byte
		f, err := r.NextInto(func(_ Header, meta []byte) []byte { sawMeta = meta; return nil })
		if err != nil {
			t.Fatalf("frame %d: %v", i+1, err)
		}
		if f.Flags != FlagTraceContext || f.Trace != tc {
			t.Fatalf("frame %d: flags %#x trace %+v, want the sent trace context", i+1, f.Flags, f.Trace)
		}
		if !bytes.Equal(f.Meta, want) {
			t.Fatalf("frame %d: meta %q, want %q without the trace context", i+1, f.Meta, want)
		}
		if sawMeta != nil && !bytes.Equal(sawMeta, want) {
			t.Fatalf("frame %d: payloadBuf got meta %q, want %q", i+1, sawMeta, want)
		}
	}
	if _, err := DecodeInvoke(inv); err != nil {
		t.Fatal(err)
	}
	f, err := r.Next()
	if err != nil || f.Flags != 0 || f.Trace != (TraceContext{}) || !bytes.Equal(f.Meta, inv) {
		t.Fatalf("untraced frame: %+v, %v", f, err)
	}
}

func TestTraceContextMalformed(t *testing.T) {
	good := TraceContext{TraceID: [16]byte{1}, SpanID: [8]byte{2}, Flags: 1}
	frame := func(typ, flags uint8, meta []byte) []byte {
		b := make([]byte, HeaderLen, HeaderLen+len(meta))
		PutHeader(b, Header{BodyLen: uint32(len(meta)), Type: typ, Flags: flags, MetaLen: uint16(len(meta)), ID: 1})
		return append(b, meta...)
	}
	inv := mustInvoke(t, "echo")
	withTrace := func(tc TraceContext) []byte { return tc.appendTo(append([]byte(nil), inv...)) }
	tests := []struct {
		name string
		data []byte
	}{
		{"unknown flag", frame(FrameInvoke, 0x02, inv)},
		{"trace on a result", frame(FrameResult, FlagTraceContext, withTrace(good))},
		{"trace on a hello", frame(FrameHello, FlagTraceContext, withTrace(good))},
		{"metadata shorter than a trace context", frame(FrameInvoke, FlagTraceContext, make([]byte, TraceContextLen-1))},
		{"zero trace id", frame(FrameInvoke, FlagTraceContext, withTrace(TraceContext{SpanID: [8]byte{1}}))},
		{"zero span id", frame(FrameMessage, FlagTraceContext, withTrace(TraceContext{TraceID: [16]byte{1}}))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tc.data), 0).Next()
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
	// A trace context that leaves too little for the type's own metadata
	// reads, and the metadata decoder then refuses what is left.
	f, err := NewReader(bytes.NewReader(frame(FrameInvoke, FlagTraceContext, good.appendTo(nil))), 0).Next()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeInvoke(f.Meta); !errors.Is(err, ErrMalformed) {
		t.Fatalf("invoke metadata of only a trace context: %v, want ErrMalformed", err)
	}
	var buf bytes.Buffer
	if err := NewWriter(&buf).WriteTracedFrame(FrameResult, 1, nil, &good, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("WriteTracedFrame of a result: %v, want ErrMalformed", err)
	}
}
