package controlplane

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
)

// Events. Every replica keeps the last eventRingSize things that happened
// through it (apps created and deleted, processes created, started, swapped
// out and in, failed, restored, deleted, taken over) in a ring in memory,
// for the dashboard and for operators: GET /v1/events returns them as JSON,
// or streams them as server-sent events. A replica sees only what it did
// itself; nothing is stored, and a restart starts the ring afresh.

// Event types.
const (
	EventAppCreated        = "app.created"
	EventAppDeleted        = "app.deleted"
	EventProcessCreated    = "process.created"
	EventProcessStarted    = "process.started"     // activated with an empty state
	EventProcessSwappedIn  = "process.swapped_in"  // activated from the snapshot of its swap-out
	EventProcessRestored   = "process.restored"    // activated from its last snapshot after a failure
	EventProcessSwappedOut = "process.swapped_out" // its final snapshot is stored
	EventProcessFailed     = "process.failed"
	EventProcessDeleted    = "process.deleted"
	EventProcessTakenOver  = "process.taken_over" // this replica took it over from another
)

// Event is one thing that happened to an app or a process.
type Event struct {
	// Seq numbers the events of one replica from 1 on; it starts over when
	// the replica restarts.
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	App     string    `json:"app"`
	PID     string    `json:"pid,omitempty"`
	Replica string    `json:"replica"`
	// Generation is the process's generation the event concerns.
	Generation uint64 `json:"generation,omitempty"`
	// Status is the process's status right after the event.
	Status string `json:"status,omitempty"`
	// Bytes is the size of the snapshot written (swapped out) or restored
	// (swapped in, restored), when known.
	Bytes int64 `json:"bytes,omitempty"`
	// DurationNanos is how long the swap-out or the activation took.
	DurationNanos int64 `json:"duration_ns,omitempty"`
	// Reason says why a process failed or was taken over.
	Reason string `json:"reason,omitempty"`
}

// eventRingSize bounds the events a replica keeps.
const eventRingSize = 1024

// eventSubscriberBuffer is how many events a stream may fall behind before
// it is ended; its client reconnects with Last-Event-ID and gets what it
// missed from the ring.
const eventSubscriberBuffer = 256

// defaultEventKeepAlive is how often an idle event stream gets a comment,
// so that proxies and browsers keep it open.
const defaultEventKeepAlive = 15 * time.Second

// eventLog is the ring and the live streams. Its mu is a leaf lock:
// nothing else is taken, and nothing blocks, under it.
type eventLog struct {
	mu        sync.Mutex
	ring      []Event // circular once full; next is where the next event goes
	next      int
	seq       uint64
	subs      map[*eventSub]struct{}
	keepAlive time.Duration
}

// eventSub is one live stream: events of app ("" for all) go to ch, which
// is closed when the stream falls too far behind.
type eventSub struct {
	app string
	ch  chan Event
}

func newEventLog() *eventLog {
	return &eventLog{ring: make([]Event, 0, eventRingSize), subs: make(map[*eventSub]struct{}), keepAlive: defaultEventKeepAlive}
}

// add numbers e, keeps it and hands it to the streams that want it, without
// ever waiting for one.
func (l *eventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e.Seq = l.seq
	if len(l.ring) < cap(l.ring) {
		l.ring = append(l.ring, e)
	} else {
		l.ring[l.next] = e
	}
	l.next = (l.next + 1) % cap(l.ring)
	for sub := range l.subs {
		if sub.app != "" && sub.app != e.App {
			continue
		}
		select {
		case sub.ch <- e:
		default:
			close(sub.ch)
			delete(l.subs, sub)
		}
	}
}

// sinceLocked returns the kept events of app ("" for all) after seq, oldest
// first, at most limit of them (the newest). l.mu is held.
func (l *eventLog) sinceLocked(app string, seq uint64, limit int) []Event {
	var out []Event
	n := len(l.ring)
	start := 0
	if n == cap(l.ring) {
		start = l.next // the oldest
	}
	for i := 0; i < n; i++ {
		e := l.ring[(start+i)%n]
		if e.Seq > seq && (app == "" || e.App == app) {
			out = append(out, e)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

func (l *eventLog) since(app string, seq uint64, limit int) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sinceLocked(app, seq, limit)
}

// subscribe starts a stream of app's events after seq: the kept ones, then
// the new ones on the subscription's channel, with none missed in between.
// It returns the keep-alive period of streams too.
func (l *eventLog) subscribe(app string, seq uint64) ([]Event, *eventSub, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sub := &eventSub{app: app, ch: make(chan Event, eventSubscriberBuffer)}
	l.subs[sub] = struct{}{}
	if seq > l.seq {
		seq = 0 // a Last-Event-ID from before a restart of this replica
	}
	return l.sinceLocked(app, seq, 0), sub, l.keepAlive
}

func (l *eventLog) unsubscribe(sub *eventSub) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.subs[sub]; ok {
		delete(l.subs, sub)
		close(sub.ch)
	}
}

// emit records an event of this replica.
func (s *Server) emit(e Event) {
	e.Time = time.Now().UTC()
	e.Replica = s.id
	s.events.add(e)
}

// listEvents answers the kept events as JSON, or streams them as
// server-sent events when the client accepts text/event-stream. An app's
// key sees its app's events only; an admin sees all, or one app's with
// ?app=. ?since=SEQ skips what the client has (Last-Event-ID does the same
// for a stream); ?limit=N keeps the newest N of a JSON answer.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	app := q.Get("app")
	c := callerOf(r)
	if !c.admin {
		if app != "" && app != c.app {
			writeError(w, s.log, fmt.Errorf("%w: the key of app %s may not see the events of app %s", errs.ErrPermissionDenied, c.app, app))
			return
		}
		app = c.app
	}
	var since uint64
	var err error
	if v := cmp.Or(q.Get("since"), r.Header.Get("Last-Event-ID")); v != "" {
		if since, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, s.log, fmt.Errorf("%w: since %q is not an event sequence number", errs.ErrInvalidArgument, v))
			return
		}
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			writeError(w, s.log, fmt.Errorf("%w: limit %q is not a count", errs.ErrInvalidArgument, v))
			return
		}
	}
	if strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		s.streamEvents(w, r, app, since)
		return
	}
	events := s.events.since(app, since, limit)
	if events == nil {
		events = []Event{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": events, "replica": s.id})
}

// streamEvents sends the kept events after since, then every new one as it
// happens, until the client goes away, the stream falls too far behind
// (the client reconnects and catches up from the ring) or the replica shuts
// down. Each event is "id: SEQ" and "data: JSON"; idle streams get a
// comment every keepAlive.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, app string, since uint64) {
	rc := http.NewResponseController(w)
	backlog, sub, keepAlive := s.events.subscribe(app, since)
	defer s.events.unsubscribe(sub)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies must not hold events back
	w.WriteHeader(http.StatusOK)
	// The retry hint, and a first write so the client knows it is connected.
	if _, err := fmt.Fprint(w, "retry: 2000\n: connected to replica "+s.id+"\n\n"); err != nil {
		return
	}
	for _, e := range backlog {
		if writeSSE(w, e) != nil {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case e, ok := <-sub.ch:
			if !ok {
				return // fell behind
			}
			if writeSSE(w, e) != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}

func writeSSE(w http.ResponseWriter, e Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "id: %d\ndata: %s\n\n", e.Seq, b)
	return err
}
