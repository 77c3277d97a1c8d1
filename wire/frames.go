package wire

import (
	"fmt"

	"github.com/praas-dev/praas/errs"
)

// Hello is the decoded FrameHello metadata.
type Hello struct {
	Version uint16
	Token   string
	// Source is the pid of the calling process, or empty for a client. It
	// is informational: a server takes the caller's identity from the token.
	Source string
}

// Encode returns the metadata bytes.
func (h Hello) Encode() []byte {
	var m Meta
	return m.U16(h.Version).Str16(h.Token).Str8(h.Source).B
}

// DecodeHello parses FrameHello metadata. Version is set whenever meta
// holds one, even if the rest does not decode: the layout after it depends
// on the version, so a server answers an old client by its version.
func DecodeHello(meta []byte) (Hello, error) {
	r := NewMetaReader(meta)
	h := Hello{Version: r.U16("version")}
	if len(meta) < 2 {
		return h, r.Done()
	}
	if h.Version < MinVersion {
		return h, fmt.Errorf("%w: hello of protocol version %d, whose layout this package no longer reads", ErrMalformed, h.Version)
	}
	h.Token, h.Source = r.Str16("token"), r.Str8("source")
	return h, r.Done()
}

// Welcome is the decoded FrameWelcome metadata.
type Welcome struct {
	Version  uint16
	App, PID string
}

// Encode returns the metadata bytes.
func (w Welcome) Encode() []byte {
	var m Meta
	return m.U16(w.Version).Str8(w.App).Str8(w.PID).B
}

// DecodeWelcome parses FrameWelcome metadata.
func DecodeWelcome(meta []byte) (Welcome, error) {
	r := NewMetaReader(meta)
	w := Welcome{Version: r.U16("version"), App: r.Str8("app"), PID: r.Str8("pid")}
	return w, r.Done()
}

// Invoke is the decoded FrameInvoke metadata.
type Invoke struct {
	Function string
	After    []uint64 // ids of earlier invocations that must finish first
}

// MaxAfter bounds the dependencies of one invocation.
const MaxAfter = 255

// AppendInvoke appends FrameInvoke metadata to b. It is the allocation-free
// form used on the hot path.
func AppendInvoke(b []byte, function string, after []uint64) ([]byte, error) {
	if len(function) == 0 || len(function) > 255 {
		return b, fmt.Errorf("%w: function name must be 1 to 255 bytes", errs.ErrInvalidArgument)
	}
	if len(after) > MaxAfter {
		return b, fmt.Errorf("%w: at most %d dependencies", errs.ErrInvalidArgument, MaxAfter)
	}
	m := Meta{B: b}
	m.Str8(function).U8(uint8(len(after)))
	for _, id := range after {
		m.U64(id)
	}
	return m.B, nil
}

// DecodeInvoke parses FrameInvoke metadata.
func DecodeInvoke(meta []byte) (Invoke, error) {
	r := NewMetaReader(meta)
	inv := Invoke{Function: r.Str8("function")}
	n := r.U8("dependency count")
	if n > 0 {
		inv.After = make([]uint64, n)
		for i := range inv.After {
			inv.After[i] = r.U64("dependency")
		}
	}
	if err := r.Done(); err != nil {
		return inv, err
	}
	if inv.Function == "" {
		return inv, fmt.Errorf("%w: empty function name", ErrMalformed)
	}
	return inv, nil
}

// Message is the decoded FrameMessage metadata.
type Message struct {
	Source string
	Key    string
	// Queued is the message's sequence number in the destination's backup
	// queue when the control plane delivers it from there, 0 for a live
	// message. It is encoded only when non-zero.
	Queued uint64
}

// Encode returns the metadata bytes.
func (m Message) Encode() []byte {
	var b Meta
	b.Str8(m.Source).Str16(m.Key)
	if m.Queued != 0 {
		b.U64(m.Queued)
	}
	return b.B
}

// DecodeMessage parses FrameMessage metadata, with or without the trailing
// queue sequence.
func DecodeMessage(meta []byte) (Message, error) {
	r := NewMetaReader(meta)
	m := Message{Source: r.Str8("source"), Key: r.Str16("key")}
	if r.Remaining() > 0 {
		if m.Queued = r.U64("queue sequence"); r.Done() == nil && m.Queued == 0 {
			return m, fmt.Errorf("%w: queue sequence 0", ErrMalformed)
		}
	}
	return m, r.Done()
}

// EncodeCode returns FrameError / FrameGoAway metadata.
func EncodeCode(c errs.Code) []byte {
	var m Meta
	return m.U16(uint16(c)).B
}

// DecodeError turns a FrameError or FrameGoAway into an error carrying its code.
func DecodeError(f Frame) error {
	r := NewMetaReader(f.Meta)
	code := r.U16("code")
	if err := r.Done(); err != nil {
		return err
	}
	return errs.New(errs.Code(code), string(f.Payload))
}
