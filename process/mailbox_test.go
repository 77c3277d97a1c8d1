package process

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
)

func TestMailboxOrderPerSourceAndKey(t *testing.T) {
	mb := newMailbox()
	const senders, each = 8, 200
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				mb.put(Message{Src: fmt.Sprint("s", s), Key: "k", Data: []byte(fmt.Sprint(i))})
			}
		}()
	}
	// A receiver per source reads concurrently with the senders.
	errc := make(chan error, senders)
	for s := range senders {
		go func() {
			for i := range each {
				m, err := mb.get(context.Background(), fmt.Sprint("s", s), "k", 5*time.Second, nil)
				if err != nil {
					errc <- err
					return
				}
				if string(m.Data) != fmt.Sprint(i) {
					errc <- fmt.Errorf("source s%d: message %q arrived as number %d", s, m.Data, i)
					return
				}
			}
			errc <- nil
		}()
	}
	wg.Wait()
	for range senders {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if mb.size != 0 {
		t.Fatalf("%d messages left", mb.size)
	}
}

func TestMailboxRecvAnyIsFirstComeFirstServed(t *testing.T) {
	mb := newMailbox()
	// Interleaved arrivals from two sources: Any must see arrival order, so
	// a chatty source cannot starve the other.
	arrivals := []string{"a", "b", "a", "a", "b", "a"}
	for i, src := range arrivals {
		mb.put(Message{Src: src, Key: "k", Data: []byte{byte(i)}})
	}
	for i, src := range arrivals {
		m, err := mb.get(context.Background(), Any, "k", 0, nil)
		if err != nil || m.Src != src || m.Data[0] != byte(i) {
			t.Fatalf("recv %d: got %+v %v, want from %s", i, m, err, src)
		}
	}
	// Waiting receivers are served in the order they started waiting.
	results := make(chan string, 3)
	for i := range 3 {
		go func() {
			m, err := mb.get(context.Background(), Any, "w", 5*time.Second, nil)
			if err != nil {
				results <- err.Error()
				return
			}
			results <- fmt.Sprint(i, string(m.Data))
		}()
		waitFor(t, func() bool { mb.mu.Lock(); defer mb.mu.Unlock(); return len(mb.waiters["w"]) == i+1 })
	}
	for _, d := range []string{"x", "y", "z"} {
		mb.put(Message{Src: "c", Key: "w", Data: []byte(d)})
	}
	got := map[string]bool{}
	for range 3 {
		got[<-results] = true
	}
	for _, want := range []string{"0x", "1y", "2z"} {
		if !got[want] {
			t.Fatalf("waiters served out of order: %v", got)
		}
	}
}

func TestMailboxTimeoutAndSourceFilter(t *testing.T) {
	mb := newMailbox()
	mb.put(Message{Src: "a", Key: "k", Data: []byte("from a")})
	_, err := mb.get(context.Background(), "b", "k", 30*time.Millisecond, nil)
	if !errors.Is(err, errs.ErrDeadlineExceeded) {
		t.Fatalf("recv from b: %v, want deadline exceeded", err)
	}
	if _, err := mb.get(context.Background(), "a", "other", 0, nil); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("recv without waiting: %v", err)
	}
	m, err := mb.get(context.Background(), "a", "k", time.Second, nil)
	if err != nil || string(m.Data) != "from a" {
		t.Fatalf("recv from a: %+v %v", m, err)
	}
}

func TestMailboxWakesWaiter(t *testing.T) {
	mb := newMailbox()
	got := make(chan Message, 1)
	go func() {
		m, _ := mb.get(context.Background(), "a", "k", 10*time.Second, nil)
		got <- m
	}()
	waitFor(t, func() bool { mb.mu.Lock(); defer mb.mu.Unlock(); return len(mb.waiters["k"]) == 1 })
	mb.put(Message{Src: "b", Key: "k", Data: []byte("not for it")})
	mb.put(Message{Src: "a", Key: "k", Data: []byte("for it")})
	select {
	case m := <-got:
		if string(m.Data) != "for it" {
			t.Fatalf("woke with %q", m.Data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken")
	}
	mb.mu.Lock()
	snap := mb.snapshotLocked()
	mb.mu.Unlock()
	if len(snap) != 1 || string(snap[0].Data) != "not for it" {
		t.Fatalf("left in mailbox: %+v", snap)
	}
}

// waitFor polls cond until it holds or 5s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
