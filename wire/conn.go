package wire

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Frame is one received frame. Meta and Payload alias one buffer that
// belongs to the receiver of the frame from then on.
type Frame struct {
	Header
	Meta    []byte // without the trace context, if the frame carried one
	Payload []byte
	// Trace is the sender's trace context if Flags has FlagTraceContext,
	// else zero.
	Trace TraceContext
}

// Reader reads frames from a stream. It is not safe for concurrent use: a
// connection has one reading goroutine.
type Reader struct {
	br         *bufio.Reader
	maxPayload uint32
	hdr        [HeaderLen]byte
}

// NewReader reads frames from r, refusing payloads over maxPayload bytes
// (DefaultMaxPayload if maxPayload is 0). Metadata is bounded by its uint16 length.
func NewReader(r io.Reader, maxPayload int) *Reader {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), maxPayload: uint32(min(maxPayload, 1<<32-1))}
}

// splitPayload is the payload size from which NextInto reads metadata and
// payload separately, so the payload can land in a buffer the caller chose.
const splitPayload = 64 << 10

// Next reads the next frame. On ErrTooLarge the frame's header is returned
// (so the caller can answer its ID), its body was discarded, and the reader
// can go on. Any other error leaves the stream unusable.
func (r *Reader) Next() (Frame, error) { return r.NextInto(nil) }

// NextInto is Next, but for a payload of 64 KiB or more it first reads the
// metadata and asks payloadBuf for a buffer: the payload is read into it if
// its capacity suffices (payloadBuf may return nil). Large payloads can so
// be read into reused memory, which spares allocating, zeroing and
// page-faulting a fresh buffer per frame.
func (r *Reader) NextInto(payloadBuf func(h Header, meta []byte) []byte) (Frame, error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return Frame{}, err
	}
	h, err := ParseHeader(r.hdr[:])
	if err != nil {
		return Frame{Header: h}, err
	}
	if h.BodyLen-uint32(h.MetaLen) > r.maxPayload {
		if _, err := r.br.Discard(int(h.BodyLen)); err != nil {
			return Frame{Header: h}, err
		}
		return Frame{Header: h}, fmt.Errorf("%w: payload of %d bytes, limit %d", ErrTooLarge, h.BodyLen-uint32(h.MetaLen), r.maxPayload)
	}
	payloadLen := int(h.BodyLen) - int(h.MetaLen)
	if payloadBuf == nil || payloadLen < splitPayload {
		body := make([]byte, h.BodyLen)
		if err := r.full(body); err != nil {
			return Frame{Header: h}, err
		}
		f := Frame{Header: h, Meta: body[:h.MetaLen], Payload: body[h.MetaLen:]}
		if h.Flags&FlagTraceContext != 0 {
			if f.Meta, f.Trace, err = splitTrace(f.Meta); err != nil {
				return Frame{Header: h}, err
			}
		}
		return f, nil
	}
	meta := make([]byte, h.MetaLen)
	if err := r.full(meta); err != nil {
		return Frame{Header: h}, err
	}
	var trace TraceContext
	if h.Flags&FlagTraceContext != 0 {
		if meta, trace, err = splitTrace(meta); err != nil {
			return Frame{Header: h}, err
		}
	}
	payload := payloadBuf(h, meta)
	if cap(payload) < payloadLen {
		payload = make([]byte, payloadLen)
	}
	payload = payload[:payloadLen]
	if err := r.full(payload); err != nil {
		return Frame{Header: h, Meta: meta, Payload: payload, Trace: trace}, err
	}
	return Frame{Header: h, Meta: meta, Payload: payload, Trace: trace}, nil
}

func (r *Reader) full(p []byte) error {
	if _, err := io.ReadFull(r.br, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

// writeBufferSize is how much small frames are batched before a flush.
const writeBufferSize = 64 << 10

// directPayload is the payload size from which a payload is written straight
// from the caller's slice with writev instead of being copied into the buffer.
const directPayload = 16 << 10

// Writer writes frames to a connection. It is safe for concurrent use: many
// goroutines answer invocations on one connection. Frames written while
// other writers wait are batched into one syscall; the last writer flushes,
// so nothing waits for a timer.
type Writer struct {
	w       io.Writer
	waiting atomic.Int32
	mu      sync.Mutex
	buf     []byte
	bufs    net.Buffers
	vec     [2][]byte // backing array of bufs, so a writev allocates nothing
	err     error     // sticky: after a write error every write fails

	// With a write timeout, a peer that does not read fails the write
	// that waits on it (and every later one) instead of holding the
	// writer, and whoever waits for it, forever.
	timeout  time.Duration
	deadline time.Time // the deadline set on conn
	conn     interface{ SetWriteDeadline(time.Time) error }
}

// NewWriter writes to w (usually a *net.TCPConn, so writev applies).
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, buf: make([]byte, 0, writeBufferSize)}
}

// SetWriteTimeout makes every write fail once the peer has not taken its
// bytes for between d/2 and d (the deadline is renewed only when half of it
// is gone, which spares a timer update per frame); 0 turns it off. It
// applies if the writer writes to a net.Conn (or anything with
// SetWriteDeadline). Call it before the first write.
func (w *Writer) SetWriteTimeout(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timeout = d
	w.conn, _ = w.w.(interface{ SetWriteDeadline(time.Time) error })
	if d <= 0 && w.conn != nil && !w.deadline.IsZero() {
		_ = w.conn.SetWriteDeadline(time.Time{})
		w.deadline = time.Time{}
	}
}

// armDeadline renews the write deadline if less than half of it is left.
func (w *Writer) armDeadline() {
	if w.timeout <= 0 || w.conn == nil {
		return
	}
	now := time.Now()
	if w.deadline.Sub(now) >= w.timeout/2 {
		return
	}
	w.deadline = now.Add(w.timeout)
	_ = w.conn.SetWriteDeadline(w.deadline)
}

// WriteFrame writes one frame. meta and payload are not retained.
func (w *Writer) WriteFrame(typ uint8, id uint64, meta, payload []byte) error {
	return w.writeFrame(typ, id, meta, nil, payload)
}

// WriteTracedFrame writes a FrameInvoke or FrameMessage that carries the
// trace context tc (FlagTraceContext). Only for peers that welcomed
// version 3 or more: older ones refuse the flag.
func (w *Writer) WriteTracedFrame(typ uint8, id uint64, meta []byte, tc *TraceContext, payload []byte) error {
	if typ != FrameInvoke && typ != FrameMessage {
		return fmt.Errorf("%w: trace context on frame type %d", ErrMalformed, typ)
	}
	return w.writeFrame(typ, id, meta, tc, payload)
}

func (w *Writer) writeFrame(typ uint8, id uint64, meta []byte, tc *TraceContext, payload []byte) error {
	metaLen := len(meta)
	var flags uint8
	if tc != nil {
		metaLen += TraceContextLen
		flags = FlagTraceContext
	}
	if metaLen > MaxMeta {
		return fmt.Errorf("%w: metadata of %d bytes", ErrMalformed, metaLen)
	}
	body := metaLen + len(payload)
	if uint64(body) > 1<<32-1 {
		return fmt.Errorf("%w: body of %d bytes", ErrTooLarge, body)
	}
	w.waiting.Add(1)
	w.mu.Lock()
	w.waiting.Add(-1)
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	var hdr [HeaderLen]byte
	PutHeader(hdr[:], Header{BodyLen: uint32(body), Type: typ, Flags: flags, MetaLen: uint16(metaLen), ID: id})
	w.buf = append(w.buf, hdr[:]...)
	w.buf = append(w.buf, meta...)
	if tc != nil {
		w.buf = tc.appendTo(w.buf)
	}
	if len(payload) >= directPayload {
		// Header and payload leave in one writev, the payload from the caller's memory.
		w.vec = [2][]byte{w.buf, payload}
		w.bufs = w.vec[:]
		w.armDeadline()
		_, err := w.bufs.WriteTo(w.w)
		w.vec = [2][]byte{} // do not keep the caller's payload alive
		w.buf = w.buf[:0]
		if err != nil {
			w.err = err
		}
		return err
	}
	w.buf = append(w.buf, payload...)
	if w.waiting.Load() == 0 || len(w.buf) >= writeBufferSize {
		return w.flushLocked()
	}
	return nil
}

func (w *Writer) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	w.armDeadline()
	_, err := w.w.Write(w.buf)
	if cap(w.buf) > 4*writeBufferSize {
		w.buf = make([]byte, 0, writeBufferSize) // don't keep a huge buffer after one big burst
	} else {
		w.buf = w.buf[:0]
	}
	if err != nil {
		w.err = err
	}
	return err
}
