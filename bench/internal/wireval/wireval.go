// Package wireval encodes the small binary arguments that the harness
// passes to the functions of the benchmark image.
package wireval

import (
	"encoding/binary"
	"errors"
	"time"
)

// Reader decodes arguments; the first error sticks.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

var errShort = errors.New("argument too short")

func (r *Reader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = errShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// U32 reads a little-endian uint32.
func (r *Reader) U32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// U64 reads a little-endian uint64.
func (r *Reader) U64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// Str8 reads a string with a one-byte length.
func (r *Reader) Str8() string {
	n := r.take(1)
	if n == nil {
		return ""
	}
	return string(r.take(int(n[0])))
}

// Rest returns what is left.
func (r *Reader) Rest() []byte {
	v := r.b
	r.b = nil
	return v
}

// Err is the first error.
func (r *Reader) Err() error { return r.err }

// Str8 appends s with a one-byte length (s must be at most 255 bytes).
func Str8(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }

// U32 appends v.
func U32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }

// U64 appends v.
func U64(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }

// Durations decodes the little-endian int64 nanoseconds a timing function returns.
func Durations(b []byte) ([]time.Duration, error) {
	if len(b)%8 != 0 || len(b) == 0 {
		return nil, errors.New("bad timing result")
	}
	out := make([]time.Duration, len(b)/8)
	for i := range out {
		out[i] = time.Duration(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out, nil
}
