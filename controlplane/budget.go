package controlplane

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/praas-dev/praas/errs"
)

// byteBudget bounds the payload bytes that requests being served hold in
// memory, so a flood of large invocations or messages is refused (429)
// rather than growing the control plane without end.
type byteBudget struct {
	mu   sync.Mutex
	used int64
	max  int64
}

// take reserves n bytes, or reports false if they would pass the bound.
// One request is always let in, whatever its size (it is bounded by
// MaxPayload).
func (b *byteBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used > 0 && b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *byteBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// budgeted serves a route whose body is a payload (an invocation input, a
// message) within Config.MaxRequestBytes: the body's declared length is
// reserved for the request's lifetime, MaxPayload if it declares none.
func (s *Server) budgeted(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n := r.ContentLength
		if n < 0 || n > s.cfg.MaxPayload {
			n = s.cfg.MaxPayload // readPayload refuses anything larger
		}
		if !s.payloads.take(n) {
			writeError(w, s.log, fmt.Errorf("%w: the control plane holds %d bytes of requests (limit %d); retry later",
				errs.ErrResourceExhausted, s.payloadsInUse(), s.cfg.MaxRequestBytes))
			return
		}
		defer s.payloads.give(n)
		h(w, r)
	}
}

func (s *Server) payloadsInUse() int64 {
	s.payloads.mu.Lock()
	defer s.payloads.mu.Unlock()
	return s.payloads.used
}
