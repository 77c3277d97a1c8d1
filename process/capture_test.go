package process

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/praas-dev/praas/internal/token"
)

// TestCaptureIsOneCut checks that a checkpoint is a single cut through
// state and mailbox. A function takes messages one at a time and counts
// them in state; n messages were queued. At any instant the function holds
// at most one message it took but has not counted yet, so every checkpoint
// must see queued + counted equal to n or n-1: fewer means a message was in
// neither copy (lost on restore), more means one was in both (seen twice).
func TestCaptureIsOneCut(t *testing.T) {
	im := NewImage()
	rt, err := New(Config{App: "app", PID: "p1", Verifier: token.NewVerifier(make(ed25519.PublicKey, ed25519.PublicKeySize)),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, im)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := range n {
		rt.deliver(Message{Src: "src", Key: "m", Data: []byte(strconv.Itoa(i))}, false, 0)
	}
	p := rt.Process()
	var done atomic.Bool
	go func() {
		defer done.Store(true)
		ctx := context.Background()
		for seen := 1; ; seen++ {
			if _, err := p.Recv(ctx, Any, "m", 0); err != nil {
				return // mailbox empty
			}
			p.SetState("seen", []byte(strconv.Itoa(seen)))
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	checks := 0
	for !done.Load() && time.Now().Before(deadline) {
		d := rt.capture()
		seen := 0
		if v, ok := d.State["seen"]; ok {
			seen, _ = strconv.Atoi(string(v))
		}
		if total := len(d.Mailbox) + seen; total != n && total != n-1 {
			t.Fatalf("checkpoint %d: %d queued + %d counted = %d, want %d or %d", checks, len(d.Mailbox), seen, total, n, n-1)
		}
		checks++
	}
	if !done.Load() {
		t.Fatal("the consumer did not finish")
	}
	t.Logf("%d checkpoints", checks)
}
