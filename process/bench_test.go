package process_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/praas-dev/praas/process"
)

// benchProcess returns the Process handle of a runtime that is not serving:
// state, mailbox and local invokes work without the network.
func benchProcess(b *testing.B) *process.Process {
	b.Helper()
	im := process.NewImage()
	im.Register("echo", func(_ context.Context, _ *process.Process, in []byte) ([]byte, error) { return in, nil })
	rt, err := process.New(process.Config{App: "bench", PID: "p1", Verifier: testVerifier,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, im)
	if err != nil {
		b.Fatal(err)
	}
	return rt.Process()
}

// BenchmarkLocalInvoke is a function invoking another in its own process.
func BenchmarkLocalInvoke(b *testing.B) {
	p := benchProcess(b)
	ctx := context.Background()
	in := make([]byte, 1<<10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Invoke(ctx, process.Self, "echo", in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkState reads and writes process state.
func BenchmarkState(b *testing.B) {
	p := benchProcess(b)
	v := make([]byte, 64)
	b.Run("get", func(b *testing.B) {
		p.SetState("k", v)
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := p.State("k"); !ok {
				b.Fatal("missing")
			}
		}
	})
	b.Run("set", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p.SetState("k", v)
		}
	})
	b.Run("update", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p.UpdateState("k", func(old []byte, _ bool) []byte { return old })
		}
	})
	b.Run("get-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				p.State("k")
			}
		})
	})
}

// BenchmarkMailbox puts a message into the process's own mailbox and takes
// it out again.
func BenchmarkMailbox(b *testing.B) {
	p := benchProcess(b)
	ctx := context.Background()
	data := make([]byte, 64)
	b.Run("put-get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := p.Send(ctx, process.Self, "k", data); err != nil {
				b.Fatal(err)
			}
			if _, err := p.Recv(ctx, process.Self, "k", 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("put-100-get-100", func(b *testing.B) {
		keys := make([]string, 100)
		for i := range keys {
			keys[i] = "k" + strconv.Itoa(i%4)
		}
		b.ReportAllocs()
		for b.Loop() {
			for _, k := range keys {
				if err := p.Send(ctx, process.Self, k, data); err != nil {
					b.Fatal(err)
				}
			}
			for _, k := range keys {
				if _, err := p.Recv(ctx, process.Any, k, 0); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
