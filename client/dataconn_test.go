package client_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/praas-dev/praas/builtin"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/process"
)

// InvokeInto reads a large result into the caller's buffer when it fits,
// and into new memory when it does not.
func TestInvokeInto(t *testing.T) {
	verifier, tok := testTokens("a", "p")
	rt, err := process.New(process.Config{App: "a", PID: "p", Verifier: verifier}, builtin.Image())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rt.Run(ctx)
	<-rt.Ready()
	dc, err := client.Dial(ctx, rt.Addr(), tok, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	dst := make([]byte, 0, 1<<20)
	for _, size := range []int{10, 100 << 10, 1 << 20, 2 << 20} {
		in := bytes.Repeat([]byte{byte(size)}, size)
		out, err := dc.InvokeInto(ctx, "echo", in, dst)
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("%d bytes: got %d bytes, %v", size, len(out), err)
		}
		inDst := len(out) > 0 && &out[0] == &dst[:1][0]
		if want := size >= 64<<10 && size <= cap(dst); inDst != want {
			t.Fatalf("%d bytes: result in the caller's buffer = %v, want %v", size, inDst, want)
		}
	}
}
