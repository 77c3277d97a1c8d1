package process

import (
	"sort"
	"sync"
)

// Lock order of the durable state, where its locks meet: state.mu, then
// triggers.mu, then mailbox.mu. capture (swap.go) holds all three to take
// one cut; an UpdateState function runs under state.mu and may Send or
// Recv. No code takes an earlier lock of the list while holding a later one.

// state is the process memory: key → bytes, shared by all invocations.
type state struct {
	mu sync.RWMutex
	m  map[string][]byte
}

func newState() *state { return &state{m: make(map[string][]byte)} }

func (s *state) get(key string) ([]byte, bool) {
	s.mu.RLock()
	v, ok := s.m[key]
	s.mu.RUnlock()
	return v, ok
}

func (s *state) set(key string, v []byte) {
	s.mu.Lock()
	s.m[key] = v
	s.mu.Unlock()
}

func (s *state) delete(key string) {
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}

// update runs fn on the current value under the write lock and stores its
// result: an atomic read-modify-write.
func (s *state) update(key string, fn func(old []byte, ok bool) []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.m[key]
	v := fn(old, ok)
	s.m[key] = v
	return v
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
