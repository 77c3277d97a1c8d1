package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
)

// fullMailbox answers the first refusals sends with 429 resource_exhausted
// (a payload over the limit always gets 413), then 204.
func fullMailbox(t *testing.T, refusals int64) (*httptest.Server, *atomic.Int64) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.ContentLength > 10 {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			_, _ = w.Write([]byte(`{"error":"too large","code":"resource_exhausted"}`))
			return
		}
		if n <= refusals {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":"mailbox full","code":"resource_exhausted"}`))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func TestWaitWhenFull(t *testing.T) {
	ctx := context.Background()
	t.Run("without the option a refusal is returned at once", func(t *testing.T) {
		srv, calls := fullMailbox(t, 3)
		err := New(srv.URL).SendMessage(ctx, "app", "p1", "k", []byte("x"))
		if !errors.Is(err, errs.ErrResourceExhausted) || calls.Load() != 1 {
			t.Fatalf("%v after %d calls, want resource exhausted after 1", err, calls.Load())
		}
	})
	t.Run("with it the send is tried again until taken", func(t *testing.T) {
		srv, calls := fullMailbox(t, 3)
		if err := New(srv.URL, WithWaitWhenFull(time.Minute)).SendMessage(ctx, "app", "p1", "k", []byte("x")); err != nil || calls.Load() != 4 {
			t.Fatalf("%v after %d calls, want success after 4", err, calls.Load())
		}
	})
	t.Run("the wait is bounded", func(t *testing.T) {
		srv, calls := fullMailbox(t, 1<<40)
		err := New(srv.URL, WithWaitWhenFull(100*time.Millisecond)).SendMessage(ctx, "app", "p1", "k", []byte("x"))
		if !errors.Is(err, errs.ErrResourceExhausted) || calls.Load() < 2 {
			t.Fatalf("%v after %d calls, want resource exhausted after a few", err, calls.Load())
		}
	})
	t.Run("a payload over its limit is not tried again", func(t *testing.T) {
		srv, calls := fullMailbox(t, 0)
		err := New(srv.URL, WithWaitWhenFull(time.Minute)).SendMessage(ctx, "app", "p1", "k", []byte("far too large"))
		if !errors.Is(err, errs.ErrResourceExhausted) || calls.Load() != 1 {
			t.Fatalf("%v after %d calls, want one refusal", err, calls.Load())
		}
	})
}
