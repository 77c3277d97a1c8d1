package process

import (
	"testing"
	"time"
)

// TestStateByteSeconds checks the state's memory-time against bounds taken
// around each change: it integrates the size, grows only while the state
// holds bytes, and survives sizes whose byte-nanoseconds pass 64 bits.
func TestStateByteSeconds(t *testing.T) {
	s := newState(0)
	if got := s.byteSeconds(); got != 0 {
		t.Fatalf("empty state: %d byte-seconds, want 0", got)
	}
	const size = 1 << 20
	before := time.Now()
	if err := s.set("k", make([]byte, size-1)); err != nil { // key "k" counts one byte
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	got := s.byteSeconds()
	held := time.Since(before)
	if lo, hi := uint64(size/20), uint64(float64(size)*held.Seconds()); got < lo || got > hi {
		t.Errorf("1 MiB for %v: %d byte-seconds, want between %d and %d", held, got, lo, hi)
	}
	s.delete("k")
	after := s.byteSeconds()
	time.Sleep(20 * time.Millisecond)
	if again := s.byteSeconds(); again != after {
		t.Errorf("empty state still accrues: %d then %d byte-seconds", after, again)
	}

	// 64 GiB for a minute is 3.9e21 byte-nanoseconds, past uint64.
	big := newState(0)
	big.bytes = 64 << 30
	big.start = big.start.Add(-time.Minute)
	got = big.byteSeconds()
	if want := uint64(64<<30) * 60; got < want || got > want+uint64(64<<30) {
		t.Errorf("64 GiB for a minute: %d byte-seconds, want about %d", got, want)
	}
}
