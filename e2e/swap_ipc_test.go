package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// wantStatus polls app/pid until the REST API shows it with status.
func (cl *cluster) wantStatus(t testing.TB, app, pid, status string, within time.Duration) {
	t.Helper()
	checkFor(t, within, 2*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		p, err := cl.c.GetProcess(ctx, app, pid)
		if err != nil {
			return err
		}
		if p.Status != status {
			return fmt.Errorf("%s is %s, want %s", pid, p.Status, status)
		}
		return nil
	})
}

// trySwap swaps app/pid out through the REST API and returns the status it
// answers: swapped, or already a later one if a message or an invocation
// brought the process back at once.
func (cl *cluster) trySwap(app, pid string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	p, err := cl.c.SwapProcess(ctx, app, pid)
	if err != nil {
		return "", fmt.Errorf("swap %s/%s: %w", app, pid, err)
	}
	return p.Status, nil
}

// swap swaps out a process nothing else talks to.
func (cl *cluster) swap(t testing.TB, app, pid string) {
	t.Helper()
	status, err := cl.trySwap(app, pid)
	if err != nil {
		t.Fatal(err)
	}
	if status != store.StatusSwapped {
		t.Fatalf("swap %s/%s: status %s", app, pid, status)
	}
}

// swapInBackground swaps app/pid out in a goroutine while the test goes on;
// the channel yields its error.
func (cl *cluster) swapInBackground(app, pid string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := cl.trySwap(app, pid)
		done <- err
	}()
	return done
}

// Messages and invocations for a swapped-out process reach it: they wait in
// its backup queue and it is brought back.
func TestMessagesToSwappedProcess(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "toswapped"
	cl.createApp(t, app, bins.testImage, "a", "b")

	for _, tc := range []struct {
		name string
		send func(t *testing.T, key string)
		src  string // the source recv sees
	}{
		{"send from a process", func(t *testing.T, key string) {
			cl.invoke(t, app, "a", "send", "b "+key+" queued")
		}, "a"},
		{"message from outside", func(t *testing.T, key string) {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			if err := cl.c.SendMessage(ctx, app, "b", key, []byte("queued")); err != nil {
				t.Fatal(err)
			}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := strings.ReplaceAll(tc.name, " ", "-")
			cl.swap(t, app, "b")
			tc.send(t, key)
			// The message brings b back.
			cl.wantStatus(t, app, "b", store.StatusActive, 10*time.Second)
			if got := cl.invoke(t, app, "b", "recv", "ANY "+key+" 1000"); got != tc.src+" queued" {
				t.Fatalf("recv = %q, want %q", got, tc.src+" queued")
			}
		})
	}

	t.Run("remote invoke", func(t *testing.T) {
		cl.swap(t, app, "b")
		if got := cl.invoke(t, app, "a", "call", "b whoami"); got != "b" {
			t.Fatalf("call b whoami = %q", got)
		}
	})

	t.Run("unread messages survive the swap", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			cl.invoke(t, app, "a", "send", fmt.Sprintf("b kept m%d", i))
		}
		cl.swap(t, app, "b")
		for i := 1; i <= 3; i++ {
			if got, want := cl.invoke(t, app, "b", "recv", "a kept 1000"), fmt.Sprintf("a m%d", i); got != want {
				t.Fatalf("recv = %q, want %q", got, want)
			}
		}
		_, err := cl.call(app, "b", "recv", "a kept 0")
		wantErr(t, err, errs.NotFound)
	})
}

// Order is kept per (source, destination, key) across a swap-in: while b
// is swapped out, goroutines invoke send on a in a loop, each numbering its
// messages. The first messages go to b's backup queue and bring b back;
// later ones go straight to b once a learns that it is active again. b must
// still receive each sender's messages in order.
func TestOrderingAcrossSwapIn(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const (
		app     = "swaporder"
		senders = 4
		count   = 40
	)
	cl.createApp(t, app, "", "a", "b")

	for round := range 3 {
		t.Run(fmt.Sprint("round ", round), func(t *testing.T) {
			key := fmt.Sprint("k", round)
			cl.swap(t, app, "b")
			var wg sync.WaitGroup
			for g := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 1; i <= count; i++ {
						if _, err := cl.call(app, "a", "send", fmt.Sprintf("b %s g%d/%d", key, g, i)); err != nil {
							t.Errorf("send: %v", err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			got := make(map[string][]int)
			for range senders * count {
				out := cl.invoke(t, app, "b", "recv", "a "+key+" 1000")
				var g, i int
				if _, err := fmt.Sscanf(out, "g%d/%d", &g, &i); err != nil {
					t.Fatalf("message %q: %v", out, err)
				}
				got[fmt.Sprint("g", g)] = append(got[fmt.Sprint("g", g)], i)
			}
			want := make(map[string][]int)
			for g := range senders {
				for i := 1; i <= count; i++ {
					want[fmt.Sprint("g", g)] = append(want[fmt.Sprint("g", g)], i)
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("b received a's messages out of order, per sender (-sent +received):\n%s", diff)
			}
		})
	}
}

// A message that arrives while its destination is swapping out goes to the
// backup queue, like one that arrives after; either way the process must
// be brought back to take it (its trigger may be waiting for it).
func TestMessageDuringSwapOutBringsProcessBack(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "swapping"
	cl.createApp(t, app, bins.testImage, "b")

	// A running invocation holds b's swap-out in its drain.
	busy := make(chan error, 1)
	go func() {
		_, err := cl.call(app, "b", "busy", "1000")
		busy <- err
	}()
	cl.wantState(t, app, "b", "get", "busy", "running")
	swapped := cl.swapInBackground(app, "b")
	cl.wantStatus(t, app, "b", store.StatusSwapping, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := cl.c.SendMessage(ctx, app, "b", "log:late", []byte("m1")); err != nil {
		t.Fatal(err)
	}
	if err := <-swapped; err != nil {
		t.Fatal(err)
	}
	if err := <-busy; err != nil {
		t.Fatalf("busy: %v", err)
	}
	// The message in the backup queue brings b back, and its trigger runs.
	cl.wantStatus(t, app, "b", store.StatusActive, 5*time.Second)
	cl.wantState(t, app, "b", "get", "log/late/m1", "|m1")
}

// Sends to a process that is swapping out succeed and keep their order:
// those before the swap reach the mailbox (and the snapshot), the later
// ones the backup queue, and the ones after the swap-in the process again.
// a sends in a loop while b swaps out, a few times over.
func TestSendDuringSwapOut(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "sendswap"
	cl.createApp(t, app, "", "a", "b")

	for round := range 4 {
		t.Run(fmt.Sprint("round ", round), func(t *testing.T) {
			key := fmt.Sprint("k", round)
			swapped := cl.swapInBackground(app, "b")
			const n = 200
			var failed []string
			for i := 1; i <= n; i++ {
				if _, err := cl.call(app, "a", "send", fmt.Sprintf("b %s %d", key, i)); err != nil {
					failed = append(failed, fmt.Sprintf("send %d: %v", i, err))
				}
			}
			if err := <-swapped; err != nil {
				t.Fatal(err)
			}
			if len(failed) > 0 {
				t.Errorf("sends during b's swap-out failed:\n%s", strings.Join(failed, "\n"))
			}
			var got []string
			for {
				out, err := cl.call(app, "b", "recv", "a "+key+" 0")
				if errs.CodeOf(err) == errs.NotFound {
					break
				}
				if err != nil {
					t.Fatalf("recv: %v", err)
				}
				got = append(got, out)
			}
			var want []string
			for i := 1; i <= n; i++ {
				want = append(want, fmt.Sprint(i))
			}
			if diff := cmp.Diff(want, got); diff != "" && len(failed) == 0 {
				t.Fatalf("b received (-sent +received):\n%s", diff)
			} else if diff != "" {
				t.Logf("b received %v", got)
			}
		})
	}
}
