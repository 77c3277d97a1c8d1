package controlplane

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/memory"
)

func TestEventRing(t *testing.T) {
	l := newEventLog()
	for i := 0; i < eventRingSize+6; i++ {
		app := "a"
		if i%2 == 1 {
			app = "b"
		}
		l.add(Event{Type: EventProcessCreated, App: app})
	}
	all := l.since("", 0, 0)
	if len(all) != eventRingSize {
		t.Fatalf("ring keeps %d events, want %d", len(all), eventRingSize)
	}
	for i, e := range all {
		if want := uint64(i + 7); e.Seq != want {
			t.Fatalf("event %d has seq %d, want %d (oldest first, the first 6 dropped)", i, e.Seq, want)
		}
	}
	for _, e := range l.since("b", 0, 0) {
		if e.App != "b" {
			t.Fatalf("app filter let %+v through", e)
		}
	}
	last := l.since("", eventRingSize+3, 0)
	if len(last) != 3 || last[0].Seq != eventRingSize+4 {
		t.Fatalf("since %d: %+v", eventRingSize+3, last)
	}
	if got := l.since("", 0, 2); len(got) != 2 || got[1].Seq != eventRingSize+6 {
		t.Fatalf("limit 2 keeps %+v, want the newest two", got)
	}
}

func TestEventSubscriberThatFallsBehindIsEnded(t *testing.T) {
	l := newEventLog()
	l.add(Event{App: "a"})
	backlog, sub, _ := l.subscribe("a", 0)
	if len(backlog) != 1 {
		t.Fatalf("backlog %+v", backlog)
	}
	other, _, _ := l.subscribe("", 99) // a Last-Event-ID from before a restart: everything
	if len(other) != 1 {
		t.Fatalf("stale Last-Event-ID: backlog %+v, want the whole ring", other)
	}
	for i := 0; i < eventSubscriberBuffer+1; i++ {
		l.add(Event{App: "a"}) // must not block
	}
	n := 0
	for range sub.ch {
		n++
	}
	if n != eventSubscriberBuffer {
		t.Fatalf("got %d events before the end, want %d", n, eventSubscriberBuffer)
	}
	l.unsubscribe(sub) // already ended: no double close
}

// restCall makes one REST call with key (none if empty) to the harness's server.
func (h *harness) restCall(method, path, key string) (int, []byte) {
	return h.restCallBody(method, path, key, "")
}

func (h *harness) restCallBody(method, path, key, body string) (int, []byte) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.s.cfg.URL+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, answer
}

// keys stores an admin key and a key of app "app" and returns their tokens.
func (h *harness) keys() (admin, app string) {
	h.t.Helper()
	for _, a := range []string{"", "app"} {
		k, tok, err := NewKey(a, "test")
		if err != nil {
			h.t.Fatal(err)
		}
		if err := h.meta.CreateKey(context.Background(), k); err != nil {
			h.t.Fatal(err)
		}
		if a == "" {
			admin = tok
		} else {
			app = tok
		}
	}
	return admin, app
}

func (h *harness) events(query, key string) []Event {
	h.t.Helper()
	code, body := h.restCall("GET", "/v1/events"+query, key)
	if code != http.StatusOK {
		h.t.Fatalf("GET /v1/events%s: %d %s", query, code, body)
	}
	var v struct{ Events []Event }
	if err := json.Unmarshal(body, &v); err != nil {
		h.t.Fatal(err)
	}
	return v.Events
}

// eventTypes lists the types of pid's events, in order.
func eventTypes(events []Event, pid string) []string {
	var types []string
	for _, e := range events {
		if e.PID == pid {
			types = append(types, e.Type)
		}
	}
	return types
}

// A process's life shows as events: created, started, swapped out (with
// the snapshot's size), swapped in, failed (with the reason), restored,
// deleted; and an app key sees its own app's events only.
func TestLifecycleEvents(t *testing.T) {
	h := newHarness(t, nil)
	admin, appKey := h.keys()
	// The fake processes serve no data plane: the creation answers 503
	// once the process is up and the control plane fails to dial it.
	p := struct{ PID string }{"p1"}
	if code, body := h.restCallBody("POST", "/v1/apps/app/processes", admin, `{"pid": "p1"}`); code != http.StatusServiceUnavailable {
		t.Fatalf("create: %d %s", code, body)
	}
	h.waitStatus(p.PID, store.StatusActive)
	if code, body := h.restCall("POST", "/v1/apps/app/processes/"+p.PID+"/swap", admin); code != http.StatusOK {
		t.Fatalf("swap: %d %s", code, body)
	}
	l := h.mustActivate(p.PID)
	fp := h.be.proc(l.backendHandle())
	fp.killOnce.Do(func() { close(fp.kill) })
	h.waitStatus(p.PID, store.StatusFailed)
	h.mustActivate(p.PID)
	if code, body := h.restCall("DELETE", "/v1/apps/app/processes/"+p.PID, admin); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, body)
	}

	events := h.events("", admin)
	want := []string{EventProcessCreated, EventProcessStarted, EventProcessSwappedOut, EventProcessSwappedIn,
		EventProcessFailed, EventProcessRestored, EventProcessDeleted}
	if got := eventTypes(events, p.PID); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("events of %s:\n got %v\nwant %v", p.PID, got, want)
	}
	byType := make(map[string]Event)
	for _, e := range events {
		byType[e.Type] = e
		if e.Replica != "me" || e.Seq == 0 || e.Time.IsZero() || e.App != "app" {
			t.Fatalf("event without replica, seq, time or app: %+v", e)
		}
	}
	snapshotSize := int64(len("state of " + cpapi.SnapshotKey("app", p.PID, 1, 1))) // what fakeProc.run writes
	if e := byType[EventProcessSwappedOut]; e.Status != store.StatusSwapped || e.Bytes != snapshotSize || e.DurationNanos <= 0 || e.Generation != 1 {
		t.Fatalf("swap-out event %+v: want status swapped, the snapshot's size, a duration, generation 1", e)
	}
	if e, out := byType[EventProcessSwappedIn], byType[EventProcessSwappedOut]; e.Bytes != out.Bytes || e.Generation != 2 || e.Status != store.StatusActive {
		t.Fatalf("swap-in event %+v: want the %d bytes swapped out, generation 2", e, out.Bytes)
	}
	if e := byType[EventProcessFailed]; !strings.Contains(e.Reason, "exited unexpectedly") || e.Status != store.StatusFailed {
		t.Fatalf("failure event %+v: want the reason", e)
	}

	// The app's key sees the app's events; another app's are hidden, and
	// asking for them is refused.
	if err := h.meta.CreateApp(context.Background(), store.App{Name: "other", Image: "builtin"}); err != nil {
		t.Fatal(err)
	}
	h.s.emit(Event{Type: EventAppCreated, App: "other"})
	if got := h.events("", appKey); len(got) != len(events) {
		t.Fatalf("app key sees %d events, want the %d of its app", len(got), len(events))
	}
	if got := h.events("?app=other", admin); len(got) != 1 || got[0].Type != EventAppCreated {
		t.Fatalf("admin ?app=other: %+v", got)
	}
	if code, _ := h.restCall("GET", "/v1/events?app=other", appKey); code != http.StatusForbidden {
		t.Fatalf("app key asking for another app's events: %d, want 403", code)
	}
	if code, _ := h.restCall("GET", "/v1/events", ""); code != http.StatusUnauthorized {
		t.Fatalf("no key: %d, want 401", code)
	}
	if code, _ := h.restCall("GET", "/v1/events?since=x", admin); code != http.StatusBadRequest {
		t.Fatalf("bad since: %d, want 400", code)
	}
}

// sseReader reads server-sent events off a response body.
type sseReader struct {
	r     *bufio.Reader
	lines chan string
}

func newSSEReader(body io.Reader) *sseReader {
	s := &sseReader{r: bufio.NewReader(body), lines: make(chan string, 1024)}
	go func() {
		defer close(s.lines)
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				return
			}
			s.lines <- strings.TrimRight(line, "\n")
		}
	}()
	return s
}

// next returns the next event, and how many keep-alive comments came before it.
func (s *sseReader) next(t *testing.T, timeout time.Duration) (Event, int) {
	t.Helper()
	keepAlives := 0
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				t.Fatal("the stream ended")
			}
			if line == ": keep-alive" {
				keepAlives++
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				var e Event
				if err := json.Unmarshal([]byte(data), &e); err != nil {
					t.Fatalf("event %q: %v", data, err)
				}
				return e, keepAlives
			}
		case <-deadline:
			t.Fatalf("no event within %s", timeout)
		}
	}
}

func openStream(t *testing.T, ctx context.Context, url, key, lastID string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+key)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

// The stream sends what the client missed (Last-Event-ID), then new events
// as they happen, of the key's app only, with keep-alive comments between.
func TestEventStream(t *testing.T) {
	h := newHarness(t, nil)
	h.s.events.mu.Lock()
	h.s.events.keepAlive = 30 * time.Millisecond
	h.s.events.mu.Unlock()
	admin, appKey := h.keys()
	h.s.emit(Event{Type: EventAppCreated, App: "app"})
	h.s.emit(Event{Type: EventAppCreated, App: "other"})
	first := h.events("", admin)[0]

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := openStream(t, ctx, h.s.cfg.URL, appKey, "")
	defer resp.Body.Close()
	sse := newSSEReader(resp.Body)
	if e, _ := sse.next(t, 2*time.Second); e.Seq != first.Seq || e.App != "app" {
		t.Fatalf("backlog: %+v, want %+v", e, first)
	}
	time.Sleep(100 * time.Millisecond) // a few keep-alive periods
	h.s.emit(Event{Type: EventAppCreated, App: "other"})
	h.s.emit(Event{Type: EventProcessCreated, App: "app", PID: "p9"})
	e, keepAlives := sse.next(t, 2*time.Second)
	if e.PID != "p9" {
		t.Fatalf("live event %+v: want p9's (another app's is not for this key)", e)
	}
	if keepAlives == 0 {
		t.Fatal("no keep-alive comment on an idle stream")
	}

	// An admin catches up from Last-Event-ID.
	resp2 := openStream(t, ctx, h.s.cfg.URL, admin, "2")
	defer resp2.Body.Close()
	sse2 := newSSEReader(resp2.Body)
	if e, _ := sse2.next(t, 2*time.Second); e.Seq != 3 || e.App != "other" {
		t.Fatalf("after Last-Event-ID 2: %+v, want seq 3", e)
	}
	if e, _ := sse2.next(t, 2*time.Second); e.Seq != 4 || e.PID != "p9" {
		t.Fatalf("then %+v, want seq 4", e)
	}

	// The client going away ends the stream and its subscription.
	cancel()
	waitUntil(t, "subscriptions ended", func() bool {
		h.s.events.mu.Lock()
		defer h.s.events.mu.Unlock()
		return len(h.s.events.subs) == 0
	})
}

// A shutdown ends open streams at once: they must not hold the server's
// graceful stop for its timeout.
func TestEventStreamEndsAtShutdown(t *testing.T) {
	s, err := New(Config{Metadata: memory.New(), Backend: newFakeBackend(t, nil), SigningKey: testSigningKey,
		NoAuth: true, StopTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	waitUntil(t, "lease", s.holdsLease)
	resp := openStream(t, context.Background(), "http://"+ln.Addr().String(), "", "")
	defer resp.Body.Close()
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); ended <- err }()
	start := time.Now()
	stop()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream outlived the shutdown")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown took %s with a stream open", took)
	}
}

// flakyMeta fails ListReplicas while fail is set.
type flakyMeta struct {
	store.Metadata
	fail atomic.Bool
}

func (m *flakyMeta) ListReplicas(ctx context.Context) ([]store.Replica, error) {
	if m.fail.Load() {
		return nil, errors.New("connection refused")
	}
	return m.Metadata.ListReplicas(ctx)
}

// brokenSwap answers every read with an error other than not found.
type brokenSwap struct{ *memSwap }

func (brokenSwap) Get(context.Context, string) (io.ReadCloser, error) {
	return nil, errors.New("access denied")
}

func TestStatus(t *testing.T) {
	meta := &flakyMeta{Metadata: memory.New()}
	h := newHarness(t, meta)
	admin, appKey := h.keys()
	h.create("a1")
	h.mustActivate("a1")
	h.create("a2")
	if err := meta.CreateApp(context.Background(), store.App{Name: "other", Image: "builtin"}); err != nil {
		t.Fatal(err)
	}
	if _, err := meta.CreateProcess(context.Background(), store.Process{App: "other", PID: "x", Status: store.StatusSwapped}); err != nil {
		t.Fatal(err)
	}
	status := func(key string) statusView {
		t.Helper()
		code, body := h.restCall("GET", "/v1/status", key)
		if code != http.StatusOK {
			t.Fatalf("status: %d %s", code, body)
		}
		var v statusView
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := status(admin)
	if v.Apps != 2 || v.TotalProcesses != 3 || v.Processes[store.StatusActive] != 1 || v.Processes[store.StatusAllocating] != 1 ||
		v.Processes[store.StatusSwapped] != 1 {
		t.Fatalf("admin's counts: %+v", v)
	}
	if !v.Metadata.Healthy || !v.Swap.Healthy || !v.Swap.Configured || v.Version == "" || v.Replica != "me" {
		t.Fatalf("status %+v", v)
	}
	if len(v.Replicas) != 1 || v.Replicas[0].ID != "me" || !v.Replicas[0].Live || v.Replicas[0].URL != h.s.cfg.URL {
		t.Fatalf("replicas %+v", v.Replicas)
	}
	if v := status(appKey); v.Apps != 1 || v.TotalProcesses != 2 {
		t.Fatalf("app key's counts: %+v, want app's only", v)
	}

	meta.fail.Store(true)
	v = status(admin)
	meta.fail.Store(false)
	if v.Metadata.Healthy || !strings.Contains(v.Metadata.Error, "connection refused") {
		t.Fatalf("metadata store down: %+v", v.Metadata)
	}

	h2 := newHarness(t, nil, func(c *Config) { c.Swap, c.NoAuth = brokenSwap{newMemSwap()}, true })
	if v := h2.statusNoAuth(t); v.Swap.Healthy || v.Swap.Error == "" || !v.Metadata.Healthy {
		t.Fatalf("swap store broken: %+v", v)
	}
	h3 := newHarness(t, nil, func(c *Config) { c.Swap, c.NoAuth = nil, true })
	if v := h3.statusNoAuth(t); v.Swap.Configured || !v.Swap.Healthy {
		t.Fatalf("no swap store: %+v", v.Swap)
	}
}

func (h *harness) statusNoAuth(t *testing.T) statusView {
	t.Helper()
	code, body := h.restCall("GET", "/v1/status", "")
	if code != http.StatusOK {
		t.Fatalf("status: %d %s", code, body)
	}
	var v statusView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	return v
}
