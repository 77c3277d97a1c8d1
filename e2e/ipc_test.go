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
)

// Send and Recv between processes of the builtin image: the functions send
// ("PID KEY DATA") and recv ("SRC KEY [TIMEOUT_MS]").
func TestSendRecv(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "sendrecv"
	cl.createApp(t, app, "", "a", "b", "c")

	t.Run("send then recv", func(t *testing.T) {
		if out := cl.invoke(t, app, "a", "send", "b greet hello b"); out != "" {
			t.Fatalf("send returned %q", out)
		}
		if got := cl.invoke(t, app, "b", "recv", "a greet"); got != "hello b" {
			t.Fatalf("recv = %q, want %q", got, "hello b")
		}
	})

	t.Run("recv waits for a later send", func(t *testing.T) {
		got := make(chan string, 1)
		errc := make(chan error, 1)
		go func() {
			out, err := cl.call(app, "b", "recv", "c later 10000")
			got <- out
			errc <- err
		}()
		cl.invoke(t, app, "c", "send", "b later from c")
		if err := <-errc; err != nil {
			t.Fatalf("recv: %v", err)
		}
		if out := <-got; out != "from c" {
			t.Fatalf("recv = %q, want %q", out, "from c")
		}
	})

	t.Run("recv skips other sources", func(t *testing.T) {
		cl.invoke(t, app, "a", "send", "b pick from-a")
		_, err := cl.call(app, "b", "recv", "c pick 100")
		wantErr(t, err, errs.DeadlineExceeded, `no message with key "pick" from c within 100ms`)
		// The message from a was not consumed by the receiver that waited for c.
		if got := cl.invoke(t, app, "b", "recv", "a pick 0"); got != "from-a" {
			t.Fatalf("recv = %q, want from-a", got)
		}
	})

	t.Run("send to self", func(t *testing.T) {
		cl.invoke(t, app, "a", "send", "a note to myself")
		if got := cl.invoke(t, app, "a", "recv", "a note 0"); got != "to myself" {
			t.Fatalf("recv = %q", got)
		}
	})

	t.Run("message from outside through the REST API", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if err := cl.c.SendMessage(ctx, app, "b", "ext", []byte("from outside")); err != nil {
			t.Fatal(err)
		}
		if got := cl.invoke(t, app, "b", "recv", "ANY ext 1000"); got != "from outside" {
			t.Fatalf("recv = %q", got)
		}
	})

	t.Run("recv timeout", func(t *testing.T) {
		start := time.Now()
		_, err := cl.call(app, "b", "recv", "a nothing 150")
		wantErr(t, err, errs.DeadlineExceeded, `no message with key "nothing" from a within 150ms`)
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("recv gave up after %s, before its timeout", d)
		}
		_, err = cl.call(app, "b", "recv", "ANY nothing 50")
		wantErr(t, err, errs.DeadlineExceeded, `no message with key "nothing" from any process within 50ms`)
	})

	t.Run("recv without waiting on an empty mailbox", func(t *testing.T) {
		_, err := cl.call(app, "b", "recv", "a empty 0")
		wantErr(t, err, errs.NotFound, `no message with key "empty" from a`)
	})
}

// Several goroutines invoke send on a and on c at once, all to b with the
// same key, each numbering its messages. Order is kept per (source,
// destination, key): each sender's messages come out of b's mailbox in
// the order it sent them, whether b drains by source or from any.
func TestOrderingConcurrentSenders(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const (
		app     = "ordering"
		senders = 4  // goroutines per source process
		count   = 20 // messages per goroutine
	)
	cl.createApp(t, app, "", "a", "b", "c")
	sources := []string{"a", "c"}

	for _, tc := range []struct {
		name  string
		key   string
		drain []string // recv SRC, in turn, until empty
	}{
		{"drain by source", "seq1", []string{"a", "c"}},
		{"drain from any", "seq2", []string{"ANY"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			for _, src := range sources {
				for g := range senders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 1; i <= count; i++ {
							in := fmt.Sprintf("b %s %s/g%d/%d", tc.key, src, g, i)
							if _, err := cl.call(app, src, "send", in); err != nil {
								t.Errorf("send %q on %s: %v", in, src, err)
								return
							}
						}
					}()
				}
			}
			wg.Wait()
			if t.Failed() {
				return
			}

			got := make(map[string][]int) // "src/gN" → sequence numbers, as received
			for _, src := range tc.drain {
				for {
					out, err := cl.call(app, "b", "recv", src+" "+tc.key+" 0")
					if errs.CodeOf(err) == errs.NotFound {
						break
					}
					if err != nil {
						t.Fatalf("recv: %v", err)
					}
					var from string
					var g, i int
					if _, err := fmt.Sscanf(strings.ReplaceAll(out, "/", " "), "%s g%d %d", &from, &g, &i); err != nil {
						t.Fatalf("message %q: %v", out, err)
					}
					if src != "ANY" && from != src {
						t.Fatalf("recv from %s returned %q", src, out)
					}
					sender := fmt.Sprintf("%s/g%d", from, g)
					got[sender] = append(got[sender], i)
				}
			}

			want := make(map[string][]int)
			for _, src := range sources {
				for g := range senders {
					for i := 1; i <= count; i++ {
						sender := fmt.Sprintf("%s/g%d", src, g)
						want[sender] = append(want[sender], i)
					}
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("messages per sender, in receive order (-want +got):\n%s", diff)
			}
		})
	}
}

// Recv(Any) is first come, first served across sources: it returns
// messages in arrival order whoever sent them, so a busy source cannot
// starve a quiet one. The test image's recv returns "SRC DATA".
func TestRecvAnyFairness(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "fairness"
	cl.createApp(t, app, bins.testImage, "a", "b", "c")

	recvAll := func(t *testing.T, key string, n int) []string {
		t.Helper()
		var out []string
		for range n {
			out = append(out, cl.invoke(t, app, "b", "recv", "ANY "+key+" 1000"))
		}
		return out
	}

	t.Run("queued messages in arrival order", func(t *testing.T) {
		// a floods, c sends one message in the middle, a goes on.
		var want []string
		for i := 1; i <= 5; i++ {
			cl.invoke(t, app, "a", "send", fmt.Sprintf("b q a%d", i))
			want = append(want, fmt.Sprintf("a a%d", i))
		}
		cl.invoke(t, app, "c", "send", "b q c1")
		want = append(want, "c c1")
		for i := 6; i <= 8; i++ {
			cl.invoke(t, app, "a", "send", fmt.Sprintf("b q a%d", i))
			want = append(want, fmt.Sprintf("a a%d", i))
		}
		if diff := cmp.Diff(want, recvAll(t, "q", len(want))); diff != "" {
			t.Fatalf("Recv(Any) order (-want +got):\n%s", diff)
		}
	})

	t.Run("alternating sources", func(t *testing.T) {
		var want []string
		for i := 1; i <= 3; i++ {
			for _, src := range []string{"c", "a"} {
				cl.invoke(t, app, src, "send", fmt.Sprintf("b alt %s%d", src, i))
				want = append(want, fmt.Sprintf("%s %s%d", src, src, i))
			}
		}
		if diff := cmp.Diff(want, recvAll(t, "alt", len(want))); diff != "" {
			t.Fatalf("Recv(Any) order (-want +got):\n%s", diff)
		}
	})

	t.Run("a waiting receiver takes whichever source comes first", func(t *testing.T) {
		got := make(chan string, 1)
		go func() {
			out, err := cl.call(app, "b", "recv", "ANY wait 10000")
			if err != nil {
				out = "error: " + err.Error()
			}
			got <- out
		}()
		cl.invoke(t, app, "c", "send", "b wait first")
		cl.invoke(t, app, "a", "send", "b wait second")
		if out := <-got; out != "c first" {
			t.Fatalf("waiting Recv(Any) = %q, want %q", out, "c first")
		}
		if out := cl.invoke(t, app, "b", "recv", "ANY wait 0"); out != "a second" {
			t.Fatalf("Recv(Any) = %q, want %q", out, "a second")
		}
	})

	t.Run("recv by source leaves the others in order", func(t *testing.T) {
		for _, m := range []string{"a x1", "c y1", "a x2", "c y2"} {
			src, data, _ := strings.Cut(m, " ")
			cl.invoke(t, app, src, "send", "b mix "+data)
		}
		if out := cl.invoke(t, app, "b", "recv", "c mix 0"); out != "c y1" {
			t.Fatalf("recv c = %q", out)
		}
		if diff := cmp.Diff([]string{"a x1", "a x2", "c y2"}, recvAll(t, "mix", 3)); diff != "" {
			t.Fatalf("Recv(Any) order (-want +got):\n%s", diff)
		}
	})
}

// Errors of messaging reach the sender; the REST message route answers
// 404 for what does not exist.
func TestMessagingErrors(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "msgerrors"
	cl.createApp(t, app, "", "a", "b")

	for _, tc := range []struct {
		name, pid, function, input string
		code                       errs.Code
		msgs                       []string
	}{
		{"send to a pid that does not exist", "a", "send", "nosuch k data", errs.NotFound, []string{`no process "nosuch"`}},
		{"send to another app", "a", "send", "other/b k data", errs.PermissionDenied, []string{`"other/b"`, "own application"}},
		{"send without a key", "a", "send", "b", errs.InvalidArgument, []string{"send expects PID KEY DATA"}},
		{"recv with a bad timeout", "b", "recv", "a k soon", errs.InvalidArgument, []string{`TIMEOUT_MS "soon"`}},
		{"unknown function", "a", "no-such-function", "", errs.NotFound, []string{`"no-such-function"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cl.call(app, tc.pid, tc.function, tc.input)
			wantErr(t, err, tc.code, tc.msgs...)
		})
	}

	// The failed sends left nothing behind and the processes still work.
	cl.invoke(t, app, "a", "send", "b after ok")
	if got := cl.invoke(t, app, "b", "recv", "a after 1000"); got != "ok" {
		t.Fatalf("recv after the errors = %q", got)
	}

	for _, tc := range []struct{ name, app, pid string }{
		{"REST message to an unknown pid", app, "nosuch"},
		{"REST message to an unknown app", "no-such-app", "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			err := cl.c.SendMessage(ctx, tc.app, tc.pid, "k", []byte("x"))
			if apiStatus(err) != 404 {
				t.Fatalf("POST message to %s/%s: %v (status %d), want 404", tc.app, tc.pid, err, apiStatus(err))
			}
			wantErr(t, err, errs.NotFound)
		})
	}
}
