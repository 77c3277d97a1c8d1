package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
)

// Many goroutines invoke a real process concurrently over one data-plane
// connection; every result must match its request, and state updates from
// all of them must add up.
func TestConcurrentDataPlaneInvocations(t *testing.T) {
	startControlPlane(t, t.TempDir())
	ctx := context.Background()
	c := demoClient(t)
	dc, err := c.DataConn(ctx, "demo", "p1")
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 64, 50
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				in := fmt.Appendf(nil, "%d/%d:%s", w, i, bytes.Repeat([]byte{byte('a' + w%26)}, (w*97+i*31)%5000))
				out, err := dc.Invoke(ctx, "echo", in)
				if err != nil || !bytes.Equal(out, in) {
					errc <- fmt.Errorf("worker %d call %d: got %d bytes (%v), want %d", w, i, len(out), err, len(in))
					return
				}
				if _, err := dc.Invoke(ctx, "counter", nil); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	out, err := dc.Invoke(ctx, "state-get", []byte("counter"))
	if err != nil || string(out) != fmt.Sprint(workers*each) {
		t.Fatalf("counter = %q (%v), want %d", out, err, workers*each)
	}
}
