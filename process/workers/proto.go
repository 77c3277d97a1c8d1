// Package workers runs the functions of an image written in another
// language than Go: the process runtime (package process) keeps the state,
// the mailbox and the triggers, and a pool of worker OS processes beside it
// runs the functions, one invocation at a time per worker, calling back to
// the runtime for state, messages and invocations. Python is the first
// language (sdk/python); docs/workers.md explains the design.
//
// This file is the specification of the worker protocol. It is in the
// spirit of the data-plane protocol (package wire), on a socketpair the
// worker inherits as file descriptor 3 (never its stdout).
//
// Every frame is a 16-byte header followed by a body of BodyLen bytes:
//
//	offset size field
//	0      4    BodyLen  uint32, big endian: bytes after the header (meta + payload)
//	4      1    Type     one of the Frame* constants below
//	5      1    Flags    FlagShm on Invoke (not triggered) and Result,
//	                     FlagNext on Result and Error from a worker; else 0
//	6      2    MetaLen  uint16: the first MetaLen bytes of the body are the
//	                     type-specific metadata; the rest is the payload
//	8      8    ID       an invocation id (chosen by the runtime) on Invoke
//	                     and its Result/Error; a call id (chosen by the
//	                     worker) on Call and its Reply/Error; 0 otherwise
//
// A worker starts with FrameHello; the runtime answers FrameWelcome, or
// FrameError and closes. Then the worker sends FrameNext whenever it is
// ready for an invocation (it pulls: one invocation at a time), gets
// FrameInvoke, may make calls (several at once, by id) while it runs, and
// answers FrameResult or FrameError. Frames of a direction are read in
// order; the runtime answers calls in any order.
//
// Shared memory: a worker may inherit a memfd as file descriptor 4
// (PRAAS_WORKER_SHM_FD names it; absent, there is none). An Invoke or a
// Result with FlagShm carries, instead of its payload, the payload's length
// (uint64); the payload is at offset 0 of that memory, which the sender
// grew (ftruncate, never shrinking) to hold it and the receiver maps at its
// current size (fstat) when it is shorter. Whoever holds the invocation
// owns the memory: the runtime until it sends the Invoke, the worker until
// it sends the Result, the runtime until it copied the result out.
//
// Version history:
//
//	1 (2026-12-01): first version.
package workers

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/praas-dev/praas/wire"
)

// Version is the protocol version this package speaks.
const Version uint16 = 1

const headerLen = 16

// maxPayload bounds a frame body the runtime reads from a worker.
const maxPayload = 1 << 30

// Frame types. Metadata is big endian; str8 is a uint8 length then bytes,
// str16 a uint16 length then bytes.
const (
	// FrameHello (worker → runtime, first frame, ID 0). meta: version
	// uint16, language str8 (informational, e.g. "python 3.11.2").
	// payload: count uint16, then count × (name str8, trigger uint8 (0
	// none, 1 standard, 2 multi-source, 3 batch), n uint32).
	FrameHello uint8 = 1
	// FrameWelcome (runtime → worker, ID 0). meta: version uint16, app
	// str8, pid str8.
	FrameWelcome uint8 = 2
	// FrameNext (worker → runtime, ID 0): the worker is ready for its next
	// invocation. No meta, no payload.
	FrameNext uint8 = 3
	// FrameInvoke (runtime → worker, ID the invocation). meta: function
	// str8, triggered uint8; if triggered is 1: key str16 (the invocation
	// key), count uint32. payload: the input, or for a triggered
	// invocation count × (source str8, key str16, length uint32, data).
	FrameInvoke uint8 = 4
	// FrameResult (worker → runtime, ID the invocation). payload: output.
	FrameResult uint8 = 5
	// FrameError (either way, ID the invocation or the call; ID 0 from a
	// worker that cannot start, from the runtime refusing a hello). meta:
	// code uint16 (errs.Code). payload: message (UTF-8).
	FrameError uint8 = 6
	// FrameCall (worker → runtime, ID the call). meta: op uint8, then the
	// op's fields; payload as the op says:
	//
	//	OpGet     key str16                              → Reply meta found uint8, payload value
	//	OpSet     key str16; payload value               → Reply
	//	OpDelete  key str16                              → Reply
	//	OpSend    dest str8, key str16; payload data     → Reply once the message is in dest's mailbox
	//	OpRecv    src str8, key str16, timeout_ms uint64 → Reply meta source str8, key str16; payload data
	//	OpInvoke  dest str8, function str8; payload input → Reply payload output
	//	OpMembers                                        → Reply payload JSON {"epoch":N,"members":[{"pid","status","address"}]}
	//	OpKeys                                           → Reply payload count uint32, count × key str16
	//
	// A call that fails is answered with FrameError instead.
	FrameCall uint8 = 7
	// FrameReply (runtime → worker, ID the call): the call's result.
	FrameReply uint8 = 8
)

// Frame flags.
const (
	// FlagShm: the payload is in the worker's shared memory; the frame's
	// payload is its length, uint64.
	FlagShm uint8 = 1
	// FlagNext on a worker's Result or Error: it is ready for its next
	// invocation, as if a Next followed (which it then does not send).
	FlagNext uint8 = 2
)

// Call operations.
const (
	OpGet     uint8 = 1
	OpSet     uint8 = 2
	OpDelete  uint8 = 3
	OpSend    uint8 = 4
	OpRecv    uint8 = 5
	OpInvoke  uint8 = 6
	OpMembers uint8 = 7
	OpKeys    uint8 = 8
)

// Trigger kinds in the hello.
const (
	triggerNone        uint8 = 0
	triggerStandard    uint8 = 1
	triggerMultiSource uint8 = 2
	triggerBatch       uint8 = 3
)

var errMalformed = errors.New("malformed worker frame")

type frame struct {
	typ     uint8
	flags   uint8
	id      uint64
	meta    []byte
	payload []byte
}

// frameReader reads frames; one goroutine per worker.
type frameReader struct {
	br  *bufio.Reader
	hdr [headerLen]byte
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, 64<<10)}
}

func (r *frameReader) next() (frame, error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return frame{}, err
	}
	body := binary.BigEndian.Uint32(r.hdr[0:4])
	f := frame{typ: r.hdr[4], flags: r.hdr[5], id: binary.BigEndian.Uint64(r.hdr[8:16])}
	metaLen := binary.BigEndian.Uint16(r.hdr[6:8])
	switch {
	case f.typ < FrameHello || f.typ > FrameReply:
		return f, fmt.Errorf("%w: unknown type %d", errMalformed, f.typ)
	case f.flags&^allowedFlags(f.typ) != 0:
		return f, fmt.Errorf("%w: flags %#x on type %d", errMalformed, f.flags, f.typ)
	case uint32(metaLen) > body:
		return f, fmt.Errorf("%w: metadata longer than the body", errMalformed)
	case body > maxPayload:
		return f, fmt.Errorf("%w: body of %d bytes", errMalformed, body)
	}
	b, err := readBody(r.br, int(body))
	if err != nil {
		return f, err
	}
	f.meta, f.payload = b[:metaLen], b[metaLen:]
	return f, nil
}

// readBody reads n bytes. A large body is allocated as it arrives, not as
// its header claims: a header that lies about its length costs no more
// than the bytes that follow it.
func readBody(r io.Reader, n int) ([]byte, error) {
	const whole = 1 << 20
	if n <= whole {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	var buf bytes.Buffer
	buf.Grow(whole)
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf.Bytes(), nil
}

// allowedFlags are the flags a frame of type typ may carry.
func allowedFlags(typ uint8) uint8 {
	switch typ {
	case FrameInvoke:
		return FlagShm
	case FrameResult:
		return FlagShm | FlagNext
	case FrameError:
		return FlagNext
	}
	return 0
}

// frameWriter writes frames; safe for concurrent use. Header, metadata and
// payload leave in one writev.
type frameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func (w *frameWriter) write(typ uint8, id uint64, meta, payload []byte) error {
	return w.writeFlags(typ, 0, id, meta, payload)
}

func (w *frameWriter) writeFlags(typ, flags uint8, id uint64, meta, payload []byte) error {
	if len(meta) > wire.MaxMeta {
		return fmt.Errorf("%w: metadata of %d bytes", errMalformed, len(meta))
	}
	if uint64(len(meta)+len(payload)) > maxPayload {
		return fmt.Errorf("%w: body of %d bytes", errMalformed, len(meta)+len(payload))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var hdr [headerLen]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(len(meta)+len(payload)))
	hdr[4], hdr[5] = typ, flags
	binary.BigEndian.PutUint16(hdr[6:8], uint16(len(meta)))
	binary.BigEndian.PutUint64(hdr[8:16], id)
	w.buf = append(append(w.buf[:0], hdr[:]...), meta...)
	if len(payload) < 16<<10 {
		w.buf = append(w.buf, payload...)
		_, err := w.w.Write(w.buf)
		return err
	}
	bufs := net.Buffers{w.buf, payload}
	_, err := bufs.WriteTo(w.w)
	return err
}
