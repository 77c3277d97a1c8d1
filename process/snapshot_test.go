package process

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sampleSnapshot() *snapshotData {
	return &snapshotData{
		App: "app", PID: "p1", Epoch: 7, Taken: time.Unix(0, 1234567890),
		State: map[string][]byte{
			"counter": []byte("41"), "empty": {}, "blob": bytes.Repeat([]byte{0xab}, 100000),
			// Large enough to be checksummed beside its write.
			"big": bytes.Repeat([]byte("0123456789abcdef"), 512<<10/16),
		},
		Mailbox: []Message{
			{Src: "a", Key: "k", Data: []byte("first")},
			{Src: "", Key: "k", Data: []byte("from outside")},
			{Src: "b", Key: "other", Data: nil},
		},
		Triggers: map[string][]Message{"sum\x00round1": {{Src: "a", Key: "sum:round1", Data: []byte("1")}}},
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	d := sampleSnapshot()
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, d); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != d.size() {
		t.Fatalf("encoded %d bytes, size() said %d", buf.Len(), d.size())
	}
	got, err := readSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// nil and empty data are the same thing to a process.
	for i := range got.Mailbox {
		if len(got.Mailbox[i].Data) == 0 {
			got.Mailbox[i].Data = nil
		}
	}
	if diff := cmp.Diff(d, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
}

func TestSnapshotCorruptionIsDetected(t *testing.T) {
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, sampleSnapshot()); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	cases := map[string][]byte{
		"empty":        {},
		"truncated":    good[:len(good)/2],
		"no checksum":  good[:len(good)-4],
		"trailing":     append(bytes.Clone(good), 0),
		"bad magic":    append([]byte("NOTASNAP"), good[8:]...),
		"flipped byte": flip(good, len(good)/3),
		"flipped crc":  flip(good, len(good)-1),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := readSnapshot(bytes.NewReader(b)); !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("got %v, want ErrCorruptSnapshot", err)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x40
	return c
}
