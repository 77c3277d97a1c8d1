package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// hitCounter is an HTTP server that counts the requests per path: the test
// image's http function calls it, so every run of an invocation is counted
// outside the process, where a crash cannot lose it.
type hitCounter struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits map[string]int
	// hold, if set, keeps requests to paths starting with it open until
	// the test ends, with reached told of each.
	hold    string
	reached chan string
}

func newHitCounter(t *testing.T, hold string) *hitCounter {
	h := &hitCounter{hits: make(map[string]int), hold: hold, reached: make(chan string, 16)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.hits[r.URL.Path]++
		h.mu.Unlock()
		if h.hold != "" && strings.HasPrefix(r.URL.Path, h.hold) {
			h.reached <- r.URL.Path
			<-r.Context().Done() // the caller dies with its connection
			return
		}
		fmt.Fprint(w, "hit")
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hitCounter) count(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hits[path]
}

// input is the http function's input that requests path.
func (h *hitCounter) input(path string) string {
	b, _ := json.Marshal(map[string]string{"Method": "GET", "URL": h.srv.URL + path})
	return string(b)
}

// A process killed while it runs an invocation: the caller learns that the
// outcome is unknown (not that the call was refused), and the invocation is
// not run again, neither by the client nor by the control plane.
func TestKilledMidInvocationIsNotRetried(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "killed"
	cl.createApp(t, app, bins.testImage, "viacp", "direct")
	hits := newHitCounter(t, "/hold/")
	for _, pid := range []string{"viacp", "direct"} {
		t.Run(pid, func(t *testing.T) {
			c := client.New(cl.url) // a client that knows no process yet
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			if pid == "direct" {
				// Learn the data-plane address: the next call goes straight
				// to the process.
				if _, err := c.Invoke(ctx, app, pid, "echo", nil); err != nil {
					t.Fatal(err)
				}
			}
			path := "/hold/" + pid
			errc := make(chan error, 1)
			go func() {
				_, err := c.Invoke(ctx, app, pid, "http", []byte(hits.input(path)))
				errc <- err
			}()
			select {
			case <-hits.reached:
			case err := <-errc:
				t.Fatalf("invocation ended before it ran: %v", err)
			}
			p, err := cl.c.GetProcess(ctx, app, pid)
			if err != nil {
				t.Fatal(err)
			}
			osPid, _, _ := strings.Cut(p.Handle, "@")
			n, err := strconv.Atoi(osPid)
			if err != nil || n <= 1 {
				t.Fatalf("handle %q names no OS process", p.Handle)
			}
			if err := syscall.Kill(n, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			err = <-errc
			wantErr(t, err, errs.OutcomeUnknown)
			if pid == "viacp" {
				if s := apiStatus(err); s != http.StatusBadGateway {
					t.Fatalf("REST status %d, want 502", s)
				}
			}
			cl.wantStatus(t, app, pid, store.StatusFailed, 10*time.Second)
			// A retry would have brought the process back and run it again.
			time.Sleep(500 * time.Millisecond)
			if got := hits.count(path); got != 1 {
				t.Fatalf("the invocation ran %d times, want 1", got)
			}
			if p, err := cl.c.GetProcess(ctx, app, pid); err != nil || p.Status != store.StatusFailed {
				t.Fatalf("process after the kill: %+v %v, want failed (not brought back)", p, err)
			}
		})
	}
}

// countingTransport counts the invocations a client sends to the control
// plane.
type countingTransport struct{ invokes atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/invoke/") {
		c.invokes.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// Calls that reach a process while it drains for a swap-out are refused
// unrun (or not sent, once the client heard the go-away); the client
// re-routes them through the control plane, which runs each once, in the
// process brought back.
func TestRefusedDuringDrainRunsOnce(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app, pid = "drained", "p1"
	cl.createApp(t, app, bins.testImage, pid)
	hits := newHitCounter(t, "")
	tr := &countingTransport{}
	c := client.New(cl.url, client.WithHTTPClient(&http.Client{Transport: tr}))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := c.Invoke(ctx, app, pid, "echo", nil); err != nil {
		t.Fatal(err)
	}
	viaCP := tr.invokes.Load()

	// A connection of its own shows when the process has begun to drain.
	watch, err := cl.c.DataConn(ctx, app, pid)
	if err != nil {
		t.Fatal(err)
	}
	// A long invocation keeps the drain going for a while.
	busy := make(chan error, 1)
	go func() { _, err := cl.call(app, pid, "busy", "1500"); busy <- err }()
	cl.wantState(t, app, pid, "get", "busy", "running")
	swapped := cl.swapInBackground(app, pid)
	// Calls start once the process said it goes away: an invocation it took
	// just before would see its context end with the process's.
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if watch.Usable() {
			return errors.New("no go-away yet")
		}
		return nil
	})

	// Several workers call on the connection the client has, through the
	// drain and the swap-in.
	const workers, calls = 4, 10
	var wg sync.WaitGroup
	errc := make(chan error, workers*calls)
	for w := range workers {
		wg.Go(func() {
			for i := range calls {
				path := fmt.Sprintf("/w%d/%d", w, i)
				if _, err := c.Invoke(ctx, app, pid, "http", []byte(hits.input(path))); err != nil {
					errc <- fmt.Errorf("%s: %w", path, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if err := <-busy; err != nil {
		t.Errorf("the long invocation: %v", err)
	}
	if err := <-swapped; err != nil {
		t.Errorf("swap: %v", err)
	}
	for w := range workers {
		for i := range calls {
			if path := fmt.Sprintf("/w%d/%d", w, i); hits.count(path) != 1 {
				t.Errorf("%s ran %d times, want 1", path, hits.count(path))
			}
		}
	}
	if tr.invokes.Load() == viaCP {
		t.Fatal("no call was re-routed through the control plane: none met the drain")
	}
	t.Logf("%d calls re-routed through the control plane", tr.invokes.Load()-viaCP)
}
