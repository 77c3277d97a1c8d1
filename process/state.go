package process

import (
	"fmt"
	"math/bits"
	"sort"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
)

// Lock order of the durable state, where its locks meet: state.mu, then
// triggers.mu, then mailbox.mu. capture (swap.go) holds all three to take
// one cut; an UpdateState function runs under state.mu and may Send or
// Recv. No code takes an earlier lock of the list while holding a later one.

// state is the process memory: key → bytes, shared by all invocations.
type state struct {
	mu    sync.RWMutex
	m     map[string][]byte
	bytes int64 // of every key and value, bounded by max
	max   int64 // 0: no bound

	// The memory-time of the state, for billing: bytes integrated over
	// time since start, as a 128-bit count of byte-nanoseconds (a GiB held
	// a few seconds passes 64 bits). It is brought up to date only when
	// bytes changes, so a state write pays one clock read and an idle
	// state nothing; byteSeconds adds the time since.
	start        time.Time // monotonic clock reading
	accruedAt    time.Duration
	accHi, accLo uint64
}

func newState(max int64) *state {
	return &state{m: make(map[string][]byte), max: max, start: time.Now()}
}

// accrueLocked adds the memory-time of the current size up to now; the
// write lock is held and bytes is about to change.
func (s *state) accrueLocked() {
	now := time.Since(s.start)
	hi, lo := bits.Mul64(uint64(s.bytes), uint64(now-s.accruedAt))
	var carry uint64
	s.accLo, carry = bits.Add64(s.accLo, lo, 0)
	s.accHi += hi + carry
	s.accruedAt = now
}

// byteSeconds is the state's memory-time since the process started, in
// byte-seconds (rounded down).
func (s *state) byteSeconds() uint64 {
	s.mu.RLock()
	hi, lo := bits.Mul64(uint64(s.bytes), uint64(time.Since(s.start)-s.accruedAt))
	lo, carry := bits.Add64(s.accLo, lo, 0)
	hi += s.accHi + carry
	s.mu.RUnlock()
	if hi >= uint64(time.Second) {
		return ^uint64(0) // some 16 exabyte-years: saturate rather than wrap
	}
	q, _ := bits.Div64(hi, lo, uint64(time.Second))
	return q
}

// entrySize is what one entry counts against the bound.
func entrySize(key string, v []byte) int64 { return int64(len(key) + len(v)) }

// restore replaces the contents with a snapshot's, whatever the bound:
// they were accepted before.
func (s *state) restore(m map[string][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accrueLocked()
	s.m = m
	s.bytes = 0
	for k, v := range m {
		s.bytes += entrySize(k, v)
	}
}

func (s *state) get(key string) ([]byte, bool) {
	s.mu.RLock()
	v, ok := s.m[key]
	s.mu.RUnlock()
	return v, ok
}

func (s *state) set(key string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setLocked(key, v)
}

// setLocked stores v under key unless the state would grow past its bound.
func (s *state) setLocked(key string, v []byte) error {
	old, ok := s.m[key]
	grown := entrySize(key, v)
	if ok {
		grown -= entrySize(key, old)
	}
	if s.max > 0 && grown > 0 && s.bytes+grown > s.max {
		return fmt.Errorf("%w: state of %d bytes plus %d would pass its limit of %d bytes",
			errs.ErrResourceExhausted, s.bytes, grown, s.max)
	}
	s.m[key] = v
	if grown != 0 {
		s.accrueLocked()
		s.bytes += grown
	}
	return nil
}

func (s *state) delete(key string) {
	s.mu.Lock()
	if old, ok := s.m[key]; ok {
		s.accrueLocked()
		s.bytes -= entrySize(key, old)
		delete(s.m, key)
	}
	s.mu.Unlock()
}

// update runs fn on the current value under the write lock and stores its
// result: an atomic read-modify-write. If the result does not fit the
// bound, nothing changes and the old value is returned with the error.
func (s *state) update(key string, fn func(old []byte, ok bool) []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.m[key]
	v := fn(old, ok)
	if err := s.setLocked(key, v); err != nil {
		return old, err
	}
	return v, nil
}

// size is the bytes of every key and value.
func (s *state) size() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bytes
}

func (s *state) keys() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
