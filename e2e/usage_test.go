package e2e

import (
	"context"
	"testing"

	"github.com/praas-dev/praas/internal/cpapi"
)

// The usage of invocations made right before a swap-out, long before the
// next heartbeat, is in the record once the process is swapped: the final
// snapshot report carries it. Across swaps it adds up.
func TestUsageOfLastInvocationsKeptAtSwapOut(t *testing.T) {
	t.Parallel()
	// Heartbeats far apart: the swap-out comes before the next one.
	cl := newCluster(t, cpapi.EnvHeartbeat+"=4s")
	const app, pid, n = "usage", "p1", 25
	cl.createApp(t, app, bins.testImage, pid)
	for round := 1; round <= 2; round++ {
		for range n {
			cl.invoke(t, app, pid, "echo", "abc")
		}
		cl.swap(t, app, pid)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		p, err := cl.c.GetProcess(ctx, app, pid)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if want := uint64(round * n); p.Usage.Invocations != want || p.Usage.BytesIn != 3*want || p.Usage.BytesOut != 3*want {
			t.Fatalf("round %d: usage %+v after the swap, want %d invocations of 3 bytes in and out", round, p.Usage, want)
		}
	}
}
