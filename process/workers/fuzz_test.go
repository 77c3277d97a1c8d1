package workers

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/process"
	"github.com/praas-dev/praas/wire"
)

// FuzzWorkerFrames feeds arbitrary bytes, as a worker would write them,
// through the runtime's side of the worker protocol: the frame reader, the
// hello's function list, and the calls a worker makes during an invocation,
// run against a real process (state, mailbox, invocations of itself). Nothing
// may panic, every frame the reader refuses is errMalformed or a short
// read, and every call gets exactly one answer.
func FuzzWorkerFrames(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	verifier := token.NewVerifier(key.Public().(ed25519.PublicKey))
	rt, err := process.New(process.Config{App: "app", PID: "p1", Verifier: verifier}, process.NewImage())
	if err != nil {
		f.Fatal(err)
	}
	proc := rt.Process()
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		answers := &answerCounter{}
		w := &worker{w: frameWriter{w: answers}, conn: nopConn{}}
		w.cur = &invocation{id: 1, ctx: ctx, proc: proc, done: make(chan outcome, 1)}
		r := newFrameReader(iotest.HalfReader(bytes.NewReader(data)))
		calls := 0
		for {
			fr, err := r.next()
			if err != nil {
				if !errors.Is(err, errMalformed) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error kind: %v", err)
				}
				break
			}
			switch fr.typ {
			case FrameHello:
				_, _ = decodeFuncs(fr.payload)
			case FrameCall:
				calls++
				w.call(fr)
			}
		}
		// Calls that wait (send, recv, invoke) answer on goroutines of
		// their own, within the invocation's context.
		deadline := time.Now().Add(5 * time.Second)
		for answers.count() < calls && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := answers.count(); got != calls {
			t.Fatalf("%d calls, %d answers", calls, got)
		}
	})
}

// fuzzSeeds are well-formed worker frames: a hello and a call of each op.
func fuzzSeeds() [][]byte {
	frame := func(typ uint8, id uint64, meta, payload []byte) []byte {
		var hdr [headerLen]byte
		binary.BigEndian.PutUint32(hdr[0:4], uint32(len(meta)+len(payload)))
		hdr[4] = typ
		binary.BigEndian.PutUint16(hdr[6:8], uint16(len(meta)))
		binary.BigEndian.PutUint64(hdr[8:16], id)
		return append(append(hdr[:], meta...), payload...)
	}
	meta := func(build func(m *wire.Meta)) []byte {
		var m wire.Meta
		build(&m)
		return m.B
	}
	hello := frame(FrameHello, 0, meta(func(m *wire.Meta) { m.U16(Version).Str8("python") }),
		meta(func(m *wire.Meta) {
			m.U16(2).Str8("echo").U8(triggerNone).U32(0).Str8("sum").U8(triggerMultiSource).U32(3)
		}))
	calls := [][]byte{
		frame(FrameCall, 1, meta(func(m *wire.Meta) { m.U8(OpSet).Str16("k") }), []byte("v")),
		frame(FrameCall, 2, meta(func(m *wire.Meta) { m.U8(OpGet).Str16("k") }), nil),
		frame(FrameCall, 3, meta(func(m *wire.Meta) { m.U8(OpDelete).Str16("k") }), nil),
		frame(FrameCall, 4, meta(func(m *wire.Meta) { m.U8(OpKeys) }), nil),
		frame(FrameCall, 5, meta(func(m *wire.Meta) { m.U8(OpMembers) }), nil),
		frame(FrameCall, 6, meta(func(m *wire.Meta) { m.U8(OpSend).Str8("p1").Str16("key") }), []byte("m")),
		frame(FrameCall, 7, meta(func(m *wire.Meta) { m.U8(OpRecv).Str8("@any").Str16("key").U64(10) }), nil),
		frame(FrameCall, 8, meta(func(m *wire.Meta) { m.U8(OpInvoke).Str8("p1").Str8("nothing") }), []byte("in")),
	}
	seeds := [][]byte{hello, bytes.Join(calls, nil), {}}
	return append(seeds, calls...)
}

// answerCounter counts the frames the runtime writes to the worker.
type answerCounter struct {
	mu     sync.Mutex
	frames int
}

func (a *answerCounter) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.frames++ // frameWriter writes each frame in one call
	return len(p), nil
}

func (a *answerCounter) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.frames
}

// nopConn is the worker's socket, which the runtime closes on a failed write.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }
