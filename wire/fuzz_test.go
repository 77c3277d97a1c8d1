package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// FuzzReader feeds arbitrary bytes, split into small reads so partial reads
// are exercised, through the frame reader and the metadata decoders. It must
// never panic, and every frame it accepts must re-encode to the same bytes.
func FuzzReader(f *testing.F) {
	var seed bytes.Buffer
	w := NewWriter(&seed)
	inv, _ := AppendInvoke(nil, "echo", []uint64{1})
	_ = w.WriteFrame(FrameHello, 0, Hello{Version: Version, Token: strings.Repeat("t", 300), Source: "a"}.Encode(), nil)
	_ = w.WriteFrame(FrameInvoke, 1, inv, []byte("hello"))
	_ = w.WriteFrame(FrameMessage, 2, Message{Source: "a", Key: "k"}.Encode(), []byte("m"))
	_ = w.WriteFrame(FrameError, 3, EncodeCode(1), []byte("oops"))
	_ = w.WriteFrame(FrameMessage, 4, Message{Source: "b", Key: "k", Queued: 7}.Encode(), []byte("q"))
	tc := &TraceContext{TraceID: [16]byte{1, 2, 3}, SpanID: [8]byte{4, 5}, Flags: 1}
	_ = w.WriteTracedFrame(FrameInvoke, 5, inv, tc, []byte("traced"))
	_ = w.WriteTracedFrame(FrameMessage, 6, Message{Source: "c", Key: "k", Queued: 9}.Encode(), tc, []byte("t"))
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 1, 3, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(iotest.HalfReader(bytes.NewReader(data)), 1<<16)
		for {
			fr, err := r.Next()
			if errors.Is(err, ErrTooLarge) {
				continue
			}
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrMalformed) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			switch fr.Type {
			case FrameHello:
				if h, err := DecodeHello(fr.Meta); err == nil && !bytes.Equal(h.Encode(), fr.Meta) {
					t.Fatalf("hello meta does not round-trip")
				}
			case FrameWelcome:
				_, _ = DecodeWelcome(fr.Meta)
			case FrameInvoke:
				if inv, err := DecodeInvoke(fr.Meta); err == nil {
					again, err := AppendInvoke(nil, inv.Function, inv.After)
					if err != nil || !bytes.Equal(again, fr.Meta) {
						t.Fatalf("invoke meta does not round-trip: %q vs %q (%v)", again, fr.Meta, err)
					}
				}
			case FrameMessage:
				if m, err := DecodeMessage(fr.Meta); err == nil && !bytes.Equal(m.Encode(), fr.Meta) {
					t.Fatalf("message meta does not round-trip")
				}
			case FrameError, FrameGoAway:
				_ = DecodeError(fr)
			}
			var out bytes.Buffer
			if fr.Flags&FlagTraceContext != 0 {
				if !fr.Trace.IsValid() {
					t.Fatalf("accepted an invalid trace context %+v", fr.Trace)
				}
				err = NewWriter(&out).WriteTracedFrame(fr.Type, fr.ID, fr.Meta, &fr.Trace, fr.Payload)
			} else {
				err = NewWriter(&out).WriteFrame(fr.Type, fr.ID, fr.Meta, fr.Payload)
			}
			if err != nil {
				t.Fatal(err)
			}
			again, err := NewReader(&out, 1<<16).Next()
			if err != nil || again.ID != fr.ID || again.Flags != fr.Flags || again.Trace != fr.Trace || !bytes.Equal(again.Payload, fr.Payload) {
				t.Fatalf("frame does not round-trip: %v", err)
			}
		}
	})
}
