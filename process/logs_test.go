package process_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/proclog"
	"github.com/praas-dev/praas/process"
)

// logSink is a control plane that answers reports and keeps the log lines
// it is sent; while down it refuses them with 503.
type logSink struct {
	*httptest.Server
	down   atomic.Bool
	retire atomic.Bool // answer heartbeats 410: the runtime ends without a snapshot
	posts  atomic.Int64

	mu    sync.Mutex
	lines []proclog.Line
}

func newLogSink(t *testing.T) *logSink {
	s := &logSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case cpapi.PathRegister, cpapi.PathHeartbeat:
			if s.retire.Load() {
				w.WriteHeader(http.StatusGone)
				return
			}
			json.NewEncoder(w).Encode(cpapi.HeartbeatReply{Epoch: 1})
		case cpapi.PathLogs:
			if s.down.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			var msg cpapi.Logs
			if err := json.NewDecoder(r.Body).Decode(&msg); err != nil || msg.App != "app" || msg.PID != "p1" || msg.Generation != 1 {
				t.Errorf("logs: %+v, %v", msg, err)
			}
			if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
				t.Errorf("logs without the process's credential")
			}
			s.posts.Add(1)
			s.mu.Lock()
			s.lines = append(s.lines, msg.Lines...)
			s.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *logSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.lines {
		out = append(out, l.Stream+" "+l.Line)
	}
	return out
}

func (s *logSink) waitFor(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.got()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the control plane got %d lines, want %d: %v", len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func appendLines(ring *proclog.Ring, from, to int) {
	for i := from; i < to; i++ {
		ring.Append(proclog.Line{Time: time.Now(), Stream: proclog.StreamStdout, Line: fmt.Sprint("line ", i)})
	}
}

// TestLogShipping: the runtime ships captured lines to its control plane
// in batches, keeps them while the control plane refuses them (dropping the
// oldest past its ring, and saying how many), and ships the rest at exit.
func TestLogShipping(t *testing.T) {
	sink := newLogSink(t)
	ring := proclog.NewRing(10, 1<<20)
	rt, err := process.New(process.Config{
		App: "app", PID: "p1", Generation: 1, Verifier: testVerifier, Token: ownToken("app", "p1", 1),
		ControlPlane: sink.URL, Heartbeat: 50 * time.Millisecond, Logs: ring,
	}, testImage())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rt.Run(context.Background()) }()

	appendLines(ring, 0, 5)
	if got := sink.waitFor(t, 5); strings.Join(got, ",") != "stdout line 0,stdout line 1,stdout line 2,stdout line 3,stdout line 4" {
		t.Fatalf("shipped %v", got)
	}
	// Lines written in a burst go in few batches.
	posts := sink.posts.Load()
	for i := 5; i < 8; i++ {
		appendLines(ring, i, i+1)
		time.Sleep(20 * time.Millisecond)
	}
	sink.waitFor(t, 8)
	if n := sink.posts.Load() - posts; n > 2 {
		t.Errorf("3 lines within 60 ms took %d shipments", n)
	}

	// The control plane refuses: lines wait in the ring, the oldest go.
	sink.down.Store(true)
	appendLines(ring, 8, 30)
	time.Sleep(300 * time.Millisecond)
	sink.down.Store(false)
	got := sink.waitFor(t, 8+1+10)
	want := []string{"praas 12 lines dropped"}
	for i := 20; i < 30; i++ {
		want = append(want, fmt.Sprint("stdout line ", i))
	}
	if strings.Join(got[8:], ",") != strings.Join(want, ",") {
		t.Fatalf("after the outage the control plane got %v, want %v", got[8:], want)
	}

	// What is written at exit is shipped by Output.Close.
	sink.retire.Store(true)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the retired runtime did not end")
	}
	sink.retire.Store(false) // its last lines are still taken
	appendLines(ring, 30, 32)
	(&process.Output{}).Close(context.Background(), rt)
	if got := sink.got(); len(got) != 21 || got[20] != "stdout line 31" {
		t.Fatalf("after exit the control plane has %v", got[19:])
	}
}
