package process

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// smallSnapshots are the fuzzer's valid seeds: a few bytes of state, a
// message, a trigger buffer. They stay small so the fuzzer runs thousands of
// inputs a second instead of minimising a large one.
func smallSnapshots() []*snapshotData {
	taken := time.Unix(0, 1234567890)
	return []*snapshotData{
		{App: "a", PID: "p", Taken: taken},
		{App: "app", PID: "p1", Epoch: 3, Taken: taken, State: map[string][]byte{"k": []byte("v"), "": nil}},
		{App: "app", PID: "p1", Taken: taken, Mailbox: []Message{{Src: "b", Key: "k", Data: []byte("hi")}, {Key: "k"}}},
		{App: "app", PID: "p1", Taken: taken, Triggers: map[string][]Message{"sum\x00r1": {{Src: "a", Key: "sum:r1", Data: []byte("1")}}}},
		{App: "app", PID: "p1", Epoch: 1 << 40, Taken: time.Unix(0, -1),
			State:    map[string][]byte{"counter": []byte("41")},
			Mailbox:  []Message{{Src: "x", Key: "y", Data: []byte{0, 0xff}}},
			Triggers: map[string][]Message{"batch\x00": {{Src: "a", Key: "k"}, {Src: "b", Key: "k", Data: []byte("2")}}}},
		{App: "app", PID: "p1", Taken: taken, Queued: 42, Mailbox: []Message{{Src: "b", Key: "k", Data: []byte("q")}}},
	}
}

func encodeSnapshot(t testing.TB, d *snapshotData) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, d); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != d.size() {
		t.Fatalf("encoded %d bytes, size() said %d", buf.Len(), d.size())
	}
	return buf.Bytes()
}

// withCRC replaces the last four bytes of b with the checksum of the rest,
// so a seed that is corrupt on purpose gets past the checksum.
func withCRC(b []byte) []byte {
	b = bytes.Clone(b)
	body := b[:len(b)-4]
	binary.BigEndian.PutUint32(b[len(b)-4:], crc32.Checksum(body, castagnoli))
	return b
}

// header is the start of a snapshot of app "a", pid "p", before its records.
func header() []byte {
	b := []byte(snapshotMagic)
	b = binary.BigEndian.AppendUint16(b, snapshotVersion)
	b = binary.BigEndian.AppendUint16(b, 1)
	b = append(b, 'a')
	b = binary.BigEndian.AppendUint16(b, 1)
	b = append(b, 'p')
	b = binary.BigEndian.AppendUint64(b, 1)    // epoch
	b = binary.BigEndian.AppendUint64(b, 2)    // taken
	return binary.BigEndian.AppendUint64(b, 0) // queued
}

// asVersion1 re-encodes a snapshot of version 2 as version 1, which has no
// queued field (it must be 0 in d).
func asVersion1(t testing.TB, d *snapshotData) []byte {
	t.Helper()
	if d.Queued != 0 {
		t.Fatal("a version 1 snapshot has no queued field")
	}
	b := encodeSnapshot(t, d)
	at := len(snapshotMagic) + 2 + 2 + len(d.App) + 2 + len(d.PID) + 8 + 8
	v1 := append(bytes.Clone(b[:at]), b[at+8:]...)
	binary.BigEndian.PutUint16(v1[len(snapshotMagic):], 1)
	return withCRC(v1)
}

// heapAllocated is the bytes allocated on the heap so far.
func heapAllocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// readBudget bounds what readSnapshot may allocate for an input of n bytes:
// its 1 MiB read buffer, the decoded data and the slack of a field growing
// as it arrives. A length read from the input must not buy more.
func readBudget(n int) uint64 { return 2<<20 + 16*uint64(n) }

// FuzzReadSnapshot checks the snapshot decoder: it never panics, allocates
// in proportion to its input whatever lengths the input claims, and what it
// accepts encodes to a snapshot that decodes to the same data, and encodes
// the same again.
func FuzzReadSnapshot(f *testing.F) {
	for _, d := range smallSnapshots() {
		good := encodeSnapshot(f, d)
		f.Add(good)
		f.Add(good[:len(good)-4])                      // no checksum
		f.Add(good[:len(good)/2])                      // truncated
		f.Add(flip(good, len(good)/2))                 // corrupt
		f.Add(append(bytes.Clone(good), 0))            // trailing byte
		f.Add(withCRC(flip(good, len(snapshotMagic)))) // another version
		if d.Queued == 0 {
			f.Add(asVersion1(f, d))
		}
	}
	// Lengths that claim far more than the input holds.
	f.Add(append(header(), recState, 0xff, 0xff, 0xff, 0xff))
	f.Add(append(binary.BigEndian.AppendUint32(append(header(), recState), 1), 'k', 0, 0, 0, 0, 4, 0, 0, 0))
	f.Add(append(header(), recMailbox, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 'd', 'a', 't', 'a'))
	f.Add(append(header(), recTrigger, 3, 0xff, 0xff, 0xff))
	f.Add(withCRC(append(header(), 9, 0, 0, 0, 0))) // unknown record
	f.Add([]byte(snapshotMagic))
	f.Add([]byte{})

	equate := cmpopts.EquateEmpty()
	// A small read buffer: each input costs no 1 MiB allocation, and reads
	// that straddle refills are exercised.
	snapshotReadBuffer = 64
	f.Fuzz(func(t *testing.T, b []byte) {
		before := heapAllocated()
		d, err := readSnapshot(bytes.NewReader(b))
		if used := heapAllocated() - before; used > readBudget(len(b)) {
			// Measure again, alone, in case another goroutine allocated meanwhile.
			before = heapAllocated()
			_, _ = readSnapshot(bytes.NewReader(b))
			if used = heapAllocated() - before; used > readBudget(len(b)) {
				t.Fatalf("decoding %d bytes allocated %d bytes", len(b), used)
			}
		}
		if err != nil {
			if d != nil || !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("got %v with data %v, want only ErrCorruptSnapshot", err, d != nil)
			}
			return
		}
		again := encodeSnapshot(t, d)
		d2, err := readSnapshot(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("re-encoded snapshot does not read back: %v", err)
		}
		if diff := cmp.Diff(d, d2, equate); diff != "" {
			t.Fatalf("re-encoded snapshot reads back different (-first +again):\n%s", diff)
		}
		if third := encodeSnapshot(t, d2); !bytes.Equal(third, again) {
			t.Fatal("a re-encoded snapshot encodes differently again")
		}
	})
}
