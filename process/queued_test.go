package process

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/store/file"
	"github.com/praas-dev/praas/wire"
)

func queuedRuntime(t *testing.T, im *Image, mutate ...func(*Config)) *Runtime {
	t.Helper()
	cfg := Config{App: "app", PID: "p1", Verifier: token.NewVerifier(make(ed25519.PublicKey, ed25519.PublicKeySize)),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mutate {
		m(&cfg)
	}
	rt, err := New(cfg, im)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// relay delivers queued message seq as the control plane does.
func relay(t *testing.T, rt *Runtime, key string, seq uint64) func(context.Context) {
	t.Helper()
	run, err := rt.acceptMessage(wire.Message{Source: "src", Key: key, Queued: seq}, []byte(strconv.FormatUint(seq, 10)), true)
	if err != nil {
		t.Fatalf("queued message %d: %v", seq, err)
	}
	return run
}

// mailboxSeqs is the data of every unread message with key k, in order.
func mailboxSeqs(rt *Runtime, k string) []string {
	rt.mailbox.mu.Lock()
	defer rt.mailbox.mu.Unlock()
	var out []string
	for _, m := range rt.mailbox.queues[k] {
		out = append(out, string(m.Data))
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A backup queue delivered again (the control plane crashed before it
// trimmed what was acknowledged) is taken once: messages at or below the
// highest sequence consumed are acknowledged and dropped.
func TestQueuedDeliveredTwiceIsTakenOnce(t *testing.T) {
	rt := queuedRuntime(t, NewImage())
	for seq := uint64(1); seq <= 5; seq++ {
		relay(t, rt, "k", seq)
	}
	for seq := uint64(3); seq <= 7; seq++ {
		relay(t, rt, "k", seq)
	}
	if got, want := mailboxSeqs(rt, "k"), []string{"1", "2", "3", "4", "5", "6", "7"}; !equal(got, want) {
		t.Fatalf("mailbox %v, want %v", got, want)
	}
	// Reading does not lower the mark: a message received and gone is not
	// taken again either.
	for range 7 {
		if _, err := rt.Process().Recv(context.Background(), Any, "k", 0); err != nil {
			t.Fatal(err)
		}
	}
	relay(t, rt, "k", 7)
	if got := mailboxSeqs(rt, "k"); len(got) != 0 {
		t.Fatalf("a consumed message came back: %v", got)
	}
	// A peer cannot set a sequence: its messages are live.
	if _, err := rt.acceptMessage(wire.Message{Source: "peer", Key: "k", Queued: 2}, []byte("live"), false); err != nil {
		t.Fatal(err)
	}
	if got := mailboxSeqs(rt, "k"); !equal(got, []string{"live"}) {
		t.Fatalf("a peer's message with a queue sequence: mailbox %v", got)
	}
}

// The highest sequence consumed is in the snapshot, and a restored process
// drops what its snapshot holds already.
func TestQueuedSurvivesRestore(t *testing.T) {
	swap, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rt := queuedRuntime(t, NewImage(), func(c *Config) { c.Swap = swap })
	for seq := uint64(1); seq <= 4; seq++ {
		relay(t, rt, "k", seq)
	}
	if _, err := rt.Process().Recv(ctx, Any, "k", 0); err != nil {
		t.Fatal(err)
	}
	if err := rt.saveSnapshot(ctx, false, false); err != nil {
		t.Fatal(err)
	}
	// The crash: the queue (1..6, nothing trimmed) is delivered again to a
	// process restored from the snapshot.
	back := queuedRuntime(t, NewImage(), func(c *Config) { c.Swap = swap })
	if err := back.restore(ctx, cpapi.SnapshotKey("app", "p1", 0, 1)); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 6; seq++ {
		relay(t, back, "k", seq)
	}
	if got, want := mailboxSeqs(back, "k"), []string{"2", "3", "4", "5", "6"}; !equal(got, want) {
		t.Fatalf("mailbox after restore and redelivery %v, want %v", got, want)
	}
}

// A queued message handed to a trigger counts as consumed then: delivered
// again, it neither fills the buffer twice nor runs the function twice.
func TestQueuedTriggerTakenOnce(t *testing.T) {
	im := NewImage()
	var runs atomic.Int32
	im.Register("sum", func(context.Context, *Process, []byte) ([]byte, error) { runs.Add(1); return nil, nil }, Batch(3))
	im.Register("each", func(context.Context, *Process, []byte) ([]byte, error) { runs.Add(1); return nil, nil }, OnMessage())
	rt := queuedRuntime(t, im)
	ctx := context.Background()
	for _, seq := range []uint64{1, 2, 1, 2} {
		if run := relay(t, rt, "sum:x", seq); run != nil {
			t.Fatalf("message %d completed a batch of 3", seq)
		}
	}
	if got := len(rt.triggers.pending["sum\x00"]); got != 2 {
		t.Fatalf("batch buffer holds %d messages, want 2", got)
	}
	run := relay(t, rt, "each", 3)
	if run == nil {
		t.Fatal("standard trigger did not start")
	}
	run(ctx)
	if run := relay(t, rt, "each", 3); run != nil {
		t.Fatal("a standard trigger ran again for a message delivered twice")
	}
	if runs.Load() != 1 {
		t.Fatalf("%d runs, want 1", runs.Load())
	}
}

// Every checkpoint sees the queue mark and the messages it covers
// together: delivered concurrently with captures, the mailbox always holds
// exactly the messages up to the mark.
func TestQueuedCaptureIsOneCut(t *testing.T) {
	im := NewImage()
	im.Register("sum", func(context.Context, *Process, []byte) ([]byte, error) { return nil, nil }, Batch(1000000))
	rt := queuedRuntime(t, im)
	const n = 3000
	var done atomic.Bool
	go func() {
		defer done.Store(true)
		for seq := uint64(1); seq <= n; seq++ {
			key := "k"
			if seq%2 == 0 {
				key = "sum:x" // into a trigger buffer
			}
			if _, err := rt.acceptMessage(wire.Message{Source: "src", Key: key, Queued: seq}, nil, true); err != nil {
				panic(err)
			}
		}
	}()
	checks := 0
	for !done.Load() || checks == 0 {
		d := rt.capture()
		held := uint64(len(d.Mailbox))
		for _, ms := range d.Triggers {
			held += uint64(len(ms))
		}
		if held != d.Queued {
			t.Fatalf("checkpoint %d: queue mark %d, but %d messages held", checks, d.Queued, held)
		}
		checks++
	}
	if d := rt.capture(); d.Queued != n {
		t.Fatalf("final mark %d, want %d", d.Queued, n)
	}
	t.Logf("%d checkpoints", checks)
}
