// Package wire is the data-plane protocol of praas: binary, length-prefixed,
// versioned frames over TCP, multiplexed by request id and pipelined.
//
// This file is the specification; docs/protocol.md explains it in prose.
//
// Every frame is a 16-byte header followed by a body of BodyLen bytes:
//
//	offset size field
//	0      4    BodyLen  uint32, big endian: bytes after the header (meta + payload)
//	4      1    Type     one of the Frame* constants
//	5      1    Flags    FlagTraceContext on FrameInvoke and FrameMessage;
//	                     every other bit is reserved and must be 0
//	6      2    MetaLen  uint16: the first MetaLen bytes of the body are the
//	                     type-specific metadata; the rest is the payload
//	8      8    ID       request id chosen by the sender of a request; a reply
//	                     carries the id of its request; 0 for connection-level frames
//
// Payloads (invocation inputs and results, message data) are never encoded:
// they are written to the socket from the caller's slice (writev) and read
// into one buffer per frame whose tail the handler receives, so a payload is
// copied only between the kernel and that buffer.
//
// A connection starts with the client's FrameHello; the server answers
// FrameWelcome or FrameError and closes. Any malformed frame is answered with
// a connection-level FrameError and the connection is closed. A frame whose
// body exceeds the receiver's limit is skipped and answered with FrameError
// (code ResourceExhausted) for its id; the connection stays open.
//
// Version history:
//
//	1 (2026-11-22): first version: hello/welcome, invoke/result/error,
//	                message/ack, go-away, ping/pong.
//	2 (2026-12-01): the hello's token is a str16 (control-plane-signed
//	                tokens, see internal/token, are longer than 255 bytes);
//	                the caller's identity and a message's source come from
//	                the token; a request the token does not allow is
//	                answered with FrameError PermissionDenied. Version 1 is
//	                no longer accepted.
//	2 (2026-12-01, compatible): FrameMessage may end with the message's
//	                backup-queue sequence (uint64), which a process uses
//	                to drop a queued message it already consumed; a frame
//	                without it is read as before.
//	3 (2026-12-01): FrameInvoke and FrameMessage may carry the caller's
//	                trace context (FlagTraceContext: 25 bytes at the end of
//	                the metadata). A sender sets it only on a connection
//	                whose welcome said 3 or more, so version 2 peers, which
//	                refuse any flag, never see it; frames without it are
//	                read as before.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the highest protocol version this package speaks.
const Version uint16 = 3

// TraceVersion is the first protocol version with FlagTraceContext.
const TraceVersion uint16 = 3

// MinVersion is the lowest protocol version this package still accepts.
const MinVersion uint16 = 2

// HeaderLen is the size of the fixed frame header.
const HeaderLen = 16

// DefaultMaxPayload is the default limit on a frame body (64 MiB plus room for metadata).
const DefaultMaxPayload = 64 << 20

// MaxMeta bounds the metadata section (it is a uint16 anyway).
const MaxMeta = 1<<16 - 1

// Frame types and the layout of their metadata (big endian; str8 is a
// uint8 length then bytes, str16 a uint16 length then bytes).
const (
	// FrameHello (client → server, first frame, ID 0).
	// meta: version uint16 (highest the client speaks), token str16 (signed
	// by the control plane: who the caller is, what it may do, until when),
	// source pid str8 (the calling process's pid, else empty; informational:
	// the server trusts the token, not this).
	FrameHello uint8 = 1
	// FrameWelcome (server → client, ID 0). meta: version uint16 (the one both
	// will speak), app str8, pid str8.
	FrameWelcome uint8 = 2
	// FrameInvoke (client → server). meta: function str8, count uint8, then
	// count × uint64 ids of earlier invocations on this connection that must
	// finish before this one starts. payload: the input.
	FrameInvoke uint8 = 3
	// FrameResult (server → client). payload: the function's output.
	FrameResult uint8 = 4
	// FrameError (either way). meta: code uint16 (errs.Code). payload: message.
	FrameError uint8 = 5
	// FrameMessage (client → server): put a message into the mailbox.
	// meta: source pid str8, key str16, then optionally queued uint64 (the
	// message's sequence in the destination's backup queue, never 0; absent
	// for a live message). payload: the message data. Unless the token
	// allows relaying (the control plane delivering queued messages), the
	// server replaces source with the token's subject and ignores queued.
	FrameMessage uint8 = 6
	// FrameAck (server → client): the message is in the mailbox. No meta, no payload.
	FrameAck uint8 = 7
	// FrameGoAway (server → client, ID 0): the process is leaving (swap, shutdown).
	// It finishes requests already received; new ones get FrameError Unavailable.
	// meta: code uint16. payload: reason.
	FrameGoAway uint8 = 8
	// FramePing / FramePong: liveness; a pong echoes the ping's id and payload.
	FramePing uint8 = 9
	FramePong uint8 = 10
)

// FlagTraceContext marks a FrameInvoke or FrameMessage whose metadata ends
// with the sender's trace context (TraceContextLen bytes, see
// TraceContext): the W3C traceparent in binary. Reader strips it from
// Frame.Meta into Frame.Trace, so the metadata decoders never see it.
// Senders set it only towards peers that welcomed version 3 or more.
const FlagTraceContext uint8 = 1 << 0

// Header is a decoded frame header.
type Header struct {
	BodyLen uint32
	Type    uint8
	Flags   uint8
	MetaLen uint16
	ID      uint64
}

// PutHeader encodes h into b, which must be at least HeaderLen long.
func PutHeader(b []byte, h Header) {
	_ = b[HeaderLen-1]
	binary.BigEndian.PutUint32(b[0:4], h.BodyLen)
	b[4] = h.Type
	b[5] = h.Flags
	binary.BigEndian.PutUint16(b[6:8], h.MetaLen)
	binary.BigEndian.PutUint64(b[8:16], h.ID)
}

// ParseHeader decodes and checks a header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("%w: short header", ErrMalformed)
	}
	h := Header{
		BodyLen: binary.BigEndian.Uint32(b[0:4]),
		Type:    b[4],
		Flags:   b[5],
		MetaLen: binary.BigEndian.Uint16(b[6:8]),
		ID:      binary.BigEndian.Uint64(b[8:16]),
	}
	if h.Type < FrameHello || h.Type > FramePong {
		return h, fmt.Errorf("%w: unknown frame type %d", ErrMalformed, h.Type)
	}
	if h.Flags&^FlagTraceContext != 0 {
		return h, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, h.Flags)
	}
	if uint32(h.MetaLen) > h.BodyLen {
		return h, fmt.Errorf("%w: meta length %d exceeds body length %d", ErrMalformed, h.MetaLen, h.BodyLen)
	}
	if h.Flags&FlagTraceContext != 0 {
		if h.Type != FrameInvoke && h.Type != FrameMessage {
			return h, fmt.Errorf("%w: trace context on frame type %d", ErrMalformed, h.Type)
		}
		if h.MetaLen < TraceContextLen {
			return h, fmt.Errorf("%w: metadata of %d bytes too short for a trace context", ErrMalformed, h.MetaLen)
		}
	}
	return h, nil
}

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed frame")

// ErrTooLarge is returned by Reader.Next for a frame over the limit; the
// frame was skipped and the stream is still in sync.
var ErrTooLarge = errors.New("frame too large")
