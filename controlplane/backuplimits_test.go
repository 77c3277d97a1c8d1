package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
)

// A backup queue at either of its limits refuses one more message with
// resource_exhausted (REST: 429 with Retry-After) and keeps every message
// it acknowledged; the process here never starts, so nothing drains it.
func TestBackupQueueLimits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxN     int
		maxBytes int64
		size     int
		want     int // messages taken before the first refusal
	}{
		{"messages", 5, 1 << 20, 10, 5},
		{"bytes", 1000, 1000, 300, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil, func(c *Config) {
				c.MaxBackupQueue, c.MaxBackupQueueBytes, c.NoAuth = tc.maxN, tc.maxBytes, true
			})
			h.be.mu.Lock()
			h.be.noStart = true
			h.be.mu.Unlock()
			h.create("dest")
			ctx := context.Background()
			data := bytes.Repeat([]byte("x"), tc.size)
			taken := 0
			var err error
			for range 10 * tc.want {
				if err = h.s.deliverMessage(ctx, h.app, "dest", "src", "k", data); err != nil {
					break
				}
				taken++
			}
			if taken != tc.want || !errors.Is(err, errs.ErrResourceExhausted) {
				t.Fatalf("%d messages queued, then %v; want %d, then resource exhausted", taken, err, tc.want)
			}
			req := httptest.NewRequest(http.MethodPost, "/v1/apps/app/processes/dest/messages/k", bytes.NewReader(data))
			rec := httptest.NewRecorder()
			h.s.Handler().ServeHTTP(rec, req)
			var body struct{ Code string }
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != http.StatusTooManyRequests || body.Code != "resource_exhausted" || rec.Header().Get("Retry-After") == "" {
				t.Fatalf("REST send past the limit: %d %s Retry-After %q, want 429 resource_exhausted with Retry-After",
					rec.Code, rec.Body, rec.Header().Get("Retry-After"))
			}
			msgs, err := h.meta.ListBackup(ctx, "app", "dest")
			if err != nil || len(msgs) != tc.want {
				t.Fatalf("queue holds %d messages (%v), want %d", len(msgs), err, tc.want)
			}
			// Room again once some are delivered (trimmed).
			if err := h.meta.TrimBackup(ctx, "app", "dest", msgs[0].Seq); err != nil {
				t.Fatal(err)
			}
			if err := h.s.deliverMessage(ctx, h.app, "dest", "src", "k", data); err != nil {
				t.Fatalf("send after a trim: %v", err)
			}
		})
	}
}

// A swap asked for right after a restart, before an active process has
// registered again, is answered unavailable (try again), not "active, not
// active".
func TestSwapBeforeReregistrationIsUnavailable(t *testing.T) {
	h := newHarness(t, nil, func(c *Config) { c.NoAuth = true })
	_, err := h.meta.CreateProcess(context.Background(), store.Process{App: "app", PID: "p1", Status: store.StatusActive,
		Owner: "me", Generation: 1, Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/v1/apps/app/processes/p1/swap", nil)
	rec := httptest.NewRecorder()
	h.s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "not registered") {
		t.Fatalf("swap of an active process not registered here: %d %s, want 503", rec.Code, rec.Body)
	}
}

// The backup queue is trimmed as snapshots that hold its messages are
// recorded, up to the sequence the report says the snapshot consumed; a
// refused report (another generation) trims nothing.
func TestSnapshotReportTrimsBackupQueue(t *testing.T) {
	h := newHarness(t, nil)
	h.create("dest")
	ctx := context.Background()
	var seqs []uint64
	for i := range 5 {
		seq, err := h.meta.AppendBackup(ctx, "app", "dest", store.Message{Src: "src", Key: "k", Data: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	report := func(gen, seq, queued uint64) int {
		t.Helper()
		key := cpapi.SnapshotKey("app", "dest", gen, seq)
		if err := h.swap.Put(ctx, key, bytes.NewReader([]byte("snapshot")), 8); err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(cpapi.Snapshot{App: "app", PID: "dest", Generation: gen, Key: key, Bytes: 8, Queued: queued})
		own, _ := h.s.processTokens("app", "dest", gen)
		code, _ := internalCall(t, h, http.MethodPost, cpapi.PathSnapshot, own, body)
		return code
	}
	left := func() []uint64 {
		t.Helper()
		msgs, err := h.meta.ListBackup(ctx, "app", "dest")
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, m := range msgs {
			out = append(out, m.Seq)
		}
		return out
	}
	if code := report(7, 1, seqs[4]); code != http.StatusGone {
		t.Fatalf("report of another generation: %d, want 410", code)
	}
	if got := left(); len(got) != 5 {
		t.Fatalf("a refused report trimmed the queue to %v", got)
	}
	if code := report(0, 1, seqs[2]); code != http.StatusOK {
		t.Fatalf("report: %d", code)
	}
	if got := left(); len(got) != 2 || got[0] != seqs[3] {
		t.Fatalf("after a snapshot that consumed %d: queue %v, want %v", seqs[2], got, seqs[3:])
	}
}
