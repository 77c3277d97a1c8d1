package builtin_test

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/praas-dev/praas"
	"github.com/praas-dev/praas/builtin"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/process"
)

// dialBuiltin runs a standalone process (no control plane) of the builtin
// image and returns a data-plane connection to it.
func dialBuiltin(t *testing.T) *client.DataConn {
	t.Helper()
	signer := token.NewSigner(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	rt, err := process.New(process.Config{App: "app", PID: "p1", Verifier: token.NewVerifier(signer.Public()),
		DrainTimeout: 5 * time.Second}, builtin.Image())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runtime: %v", err)
		}
	})
	select {
	case <-rt.Ready():
	case err := <-done:
		t.Fatalf("runtime ended: %v", err)
	}
	// A token that may relay, as the control plane's: the tests set
	// messages' sources.
	tok := signer.Sign(token.Claims{App: "app", PID: "p1", Ops: token.OpInvoke | token.OpSend | token.OpRelay,
		Expires: time.Now().Add(time.Hour)})
	dc, err := client.Dial(ctx, rt.Addr(), tok, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	return dc
}

// recv takes the SDK's spelling of "any source" (praas.Any), its alias ANY,
// and a pid.
func TestRecvSources(t *testing.T) {
	dc := dialBuiltin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range []struct{ src, data string }{{"a", "first"}, {"b", "second"}, {"a", "third"}, {"b", "fourth"}} {
		if err := dc.Send(ctx, m.src, "k", []byte(m.data)); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct{ in, want string }{
		{praas.Any + " k 1000", "first"},
		{"b k 1000", "second"},
		{"ANY k 1000", "third"},
		{"@any k", "fourth"},
	}
	for _, s := range steps {
		out, err := dc.Invoke(ctx, "recv", []byte(s.in))
		if err != nil || string(out) != s.want {
			t.Fatalf("recv %q = %q, %v; want %q", s.in, out, err, s.want)
		}
	}
	if out, err := dc.Invoke(ctx, "recv", []byte("@any k 0")); err == nil {
		t.Fatalf("recv from an empty mailbox = %q, want a timeout error", out)
	}
	if _, err := dc.Invoke(ctx, "recv", []byte("@any")); err == nil {
		t.Fatal("recv without a key succeeded")
	}
}
