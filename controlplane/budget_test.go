package controlplane

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// Requests whose payloads would pass MaxRequestBytes are refused with 429
// resource_exhausted and Retry-After while others hold the budget; one
// request is always let in; the budget frees up as requests end.
func TestRequestBytesBudget(t *testing.T) {
	s := &Server{cfg: Config{MaxPayload: 1000, MaxRequestBytes: 2000}, log: slog.New(slog.DiscardHandler)}
	s.payloads.max = s.cfg.MaxRequestBytes
	release := make(chan struct{})
	var entered sync.WaitGroup
	h := s.budgeted(func(w http.ResponseWriter, r *http.Request) {
		entered.Done()
		<-release
		w.WriteHeader(http.StatusNoContent)
	})
	call := func(size int, chunked bool) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/", bytes.NewReader(make([]byte, size)))
		if chunked {
			req.ContentLength = -1
		}
		rec := httptest.NewRecorder()
		h(rec, req)
		return rec
	}
	entered.Add(2)
	var held sync.WaitGroup
	for range 2 {
		held.Add(1)
		go func() { defer held.Done(); call(1000, false) }()
	}
	entered.Wait()
	rec := call(10, false)
	var body struct{ Code string }
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if rec.Code != http.StatusTooManyRequests || body.Code != "resource_exhausted" || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("past the budget: %d %q Retry-After %q", rec.Code, body.Code, rec.Header().Get("Retry-After"))
	}
	close(release)
	held.Wait()
	if got := s.payloadsInUse(); got != 0 {
		t.Fatalf("%d bytes still held after every request ended", got)
	}
	// A body of unknown length counts as MaxPayload: two fit, a third not.
	release = make(chan struct{})
	entered.Add(2)
	for range 2 {
		held.Add(1)
		go func() { defer held.Done(); call(10, true) }()
	}
	entered.Wait()
	if rec := call(10, true); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("third chunked request: %d, want 429", rec.Code)
	}
	close(release)
	held.Wait()
	// Alone, a request is let in whatever the budget.
	s.payloads.max = 10
	entered.Add(1)
	if rec := call(1000, false); rec.Code != http.StatusNoContent {
		t.Fatalf("a lone request over the budget: %d, want it served", rec.Code)
	}
}
