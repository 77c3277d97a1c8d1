package process

import (
	"fmt"
	"sort"
	"sync"

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
}

func newState(max int64) *state { return &state{m: make(map[string][]byte), max: max} }

// entrySize is what one entry counts against the bound.
func entrySize(key string, v []byte) int64 { return int64(len(key) + len(v)) }

// restore replaces the contents with a snapshot's, whatever the bound:
// they were accepted before.
func (s *state) restore(m map[string][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
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
	s.bytes += grown
	return nil
}

func (s *state) delete(key string) {
	s.mu.Lock()
	if old, ok := s.m[key]; ok {
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
