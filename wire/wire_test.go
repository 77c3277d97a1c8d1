package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/praas-dev/praas/errs"
)

func TestRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("x"), directPayload+5)
	tests := []struct {
		name    string
		typ     uint8
		id      uint64
		meta    []byte
		payload []byte
	}{
		{"empty", FramePing, 1, nil, nil},
		{"invoke", FrameInvoke, 7, mustInvoke(t, "echo", 3, 5), []byte("hello")},
		{"direct payload", FrameResult, 1<<63 + 1, nil, big},
		{"message", FrameMessage, 9, Message{Source: "a", Key: "k"}.Encode(), []byte("data")},
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, tc := range tests {
		if err := w.WriteFrame(tc.typ, tc.id, tc.meta, tc.payload); err != nil {
			t.Fatalf("%s: write: %v", tc.name, err)
		}
	}
	r := NewReader(&buf, 0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if f.Type != tc.typ || f.ID != tc.id || !bytes.Equal(f.Meta, tc.meta) || !bytes.Equal(f.Payload, tc.payload) {
				t.Fatalf("got type %d id %d meta %q payload %d bytes; want %d %d %q %d bytes",
					f.Type, f.ID, f.Meta, len(f.Payload), tc.typ, tc.id, tc.meta, len(tc.payload))
			}
		})
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after last frame: %v, want EOF", err)
	}
}

func mustInvoke(t *testing.T, fn string, after ...uint64) []byte {
	t.Helper()
	b, err := AppendInvoke(nil, fn, after)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInvokeMeta(t *testing.T) {
	inv, err := DecodeInvoke(mustInvoke(t, "counter", 1, 2, 3))
	if err != nil {
		t.Fatal(err)
	}
	if inv.Function != "counter" || len(inv.After) != 3 || inv.After[2] != 3 {
		t.Fatalf("decoded %+v", inv)
	}
	if _, err := AppendInvoke(nil, "", nil); !errors.Is(err, errs.ErrInvalidArgument) {
		t.Fatalf("empty name: %v", err)
	}
	if _, err := DecodeInvoke([]byte{5, 'a'}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated meta: %v", err)
	}
	if _, err := DecodeInvoke(append(mustInvoke(t, "f"), 0xff)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing meta: %v", err)
	}
}

func TestTooLargeIsSkipped(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	_ = w.WriteFrame(FrameInvoke, 1, mustInvoke(t, "echo"), make([]byte, 100))
	_ = w.WriteFrame(FramePing, 2, nil, []byte("ok"))
	r := NewReader(&buf, 50)
	f, err := r.Next()
	if !errors.Is(err, ErrTooLarge) || f.ID != 1 {
		t.Fatalf("oversized frame: id %d err %v", f.ID, err)
	}
	f, err = r.Next()
	if err != nil || f.ID != 2 || string(f.Payload) != "ok" {
		t.Fatalf("frame after oversized one: %+v %v", f, err)
	}
}

func TestMalformedHeaders(t *testing.T) {
	good := make([]byte, HeaderLen)
	PutHeader(good, Header{Type: FramePing, ID: 1})
	tests := map[string]func(b []byte){
		"unknown type": func(b []byte) { b[4] = 99 },
		"zero type":    func(b []byte) { b[4] = 0 },
		"flags":        func(b []byte) { b[5] = 1 },
		"meta > body":  func(b []byte) { b[7] = 1 },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			b := bytes.Clone(good)
			mutate(b)
			if _, err := NewReader(bytes.NewReader(b), 0).Next(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestHello(t *testing.T) {
	long := strings.Repeat("t", 1000) // signed tokens are longer than a str8
	h := Hello{Version: Version, Token: long, Source: "p1"}
	got, err := DecodeHello(h.Encode())
	if err != nil || got != h {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	// A version-1 hello (token str8) is recognised by its version, so the
	// server can answer with the versions it speaks.
	var m Meta
	old := m.U16(1).Str8("token").Str8("").B
	got, err = DecodeHello(old)
	if !errors.Is(err, ErrMalformed) || got.Version != 1 {
		t.Fatalf("version-1 hello: %+v, %v", got, err)
	}
	if _, err := DecodeHello([]byte{0}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short hello: %v", err)
	}
}

func TestErrorFrame(t *testing.T) {
	f := Frame{Header: Header{Type: FrameError}, Meta: EncodeCode(errs.NotFound), Payload: []byte("no such function")}
	err := DecodeError(f)
	if !errors.Is(err, errs.ErrNotFound) || err.Error() != "no such function" {
		t.Fatalf("got %v", err)
	}
}
