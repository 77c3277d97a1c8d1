package process_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/process"
)

// A mailbox flooded past its limits refuses further messages with
// resource_exhausted, keeps every message it acknowledged, and takes
// messages again once some are read. Messages the control plane delivers
// from a backup queue (acknowledged already) are never refused; those it
// relays live (REST sends) are.
func TestMailboxLimits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxN     int
		maxBytes int64
		size     int
		want     int // messages taken before the first refusal
	}{
		{"messages", 50, 1 << 20, 10, 50},
		{"bytes", 1000, 10 << 10, 1 << 10, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt, tok := startRuntime(t, recvImage(), func(c *process.Config) {
				c.MaxMailbox, c.MaxMailboxBytes = tc.maxN, tc.maxBytes
			})
			dc := dial(t, rt, tok)
			ctx := context.Background()
			data := bytes.Repeat([]byte("x"), tc.size)
			taken := 0
			var err error
			for range 10 * tc.want {
				if err = dc.Send(ctx, "", "k", data); err != nil {
					break
				}
				taken++
			}
			if taken != tc.want || !errors.Is(err, errs.ErrResourceExhausted) {
				t.Fatalf("%d messages taken, then %v; want %d, then resource exhausted", taken, err, tc.want)
			}
			// Reading one makes room for one.
			if _, err := dc.Invoke(ctx, "recv", nil); err != nil {
				t.Fatal(err)
			}
			if err := dc.Send(ctx, "", "k", data); err != nil {
				t.Fatalf("send after a recv: %v", err)
			}
			if err := dc.Send(ctx, "", "k", data); !errors.Is(err, errs.ErrResourceExhausted) {
				t.Fatalf("send past the limit again: %v", err)
			}
			// The control plane's live relays (REST sends) are limited too;
			// messages it delivers from a backup queue are queued regardless.
			relay := dial(t, rt, sign(token.Claims{App: "app", PID: "p1", Ops: token.OpSend | token.OpRelay}))
			if err := relay.Send(ctx, "q", "k", data); !errors.Is(err, errs.ErrResourceExhausted) {
				t.Fatalf("live relayed message past the limit: %v, want resource exhausted", err)
			}
			call, err := relay.GoSendQueued("q", "k", 1, data)
			if err == nil {
				_, err = call.Wait(ctx)
			}
			if err != nil {
				t.Fatalf("queued message refused: %v", err)
			}
			// Every acknowledged message is still there.
			for i := range tc.want + 1 {
				if _, err := dc.Invoke(ctx, "recv", nil); err != nil {
					t.Fatalf("recv %d: %v", i, err)
				}
			}
		})
	}
}
