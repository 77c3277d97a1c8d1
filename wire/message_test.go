package wire

import (
	"errors"
	"testing"
)

func TestMessageQueued(t *testing.T) {
	for _, m := range []Message{
		{Source: "a", Key: "k"},
		{Source: "a", Key: "k", Queued: 1},
		{Source: "", Key: "key", Queued: 1<<64 - 1},
	} {
		got, err := DecodeMessage(m.Encode())
		if err != nil || got != m {
			t.Errorf("round trip of %+v: %+v, %v", m, got, err)
		}
	}
	// A frame of a sender that knows no queue sequence decodes as live.
	var old Meta
	got, err := DecodeMessage(old.Str8("a").Str16("k").B)
	if err != nil || got != (Message{Source: "a", Key: "k"}) {
		t.Errorf("without the sequence: %+v, %v", got, err)
	}
	with := func(tail ...byte) []byte { return append(append([]byte(nil), old.B...), tail...) }
	for name, meta := range map[string][]byte{
		"zero sequence":      with(0, 0, 0, 0, 0, 0, 0, 0),
		"truncated sequence": with(0, 0, 1),
		"trailing bytes":     with(0, 0, 0, 0, 0, 0, 0, 1, 9),
	} {
		if _, err := DecodeMessage(meta); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}
