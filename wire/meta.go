package wire

import (
	"encoding/binary"
	"fmt"
)

// Meta builds the metadata section of a frame. The zero value is ready; it
// appends to B so a caller can reuse one buffer.
type Meta struct{ B []byte }

// Str8 appends a string of at most 255 bytes.
func (m *Meta) Str8(s string) *Meta {
	m.B = append(m.B, byte(len(s)))
	m.B = append(m.B, s...)
	return m
}

// Str16 appends a string of at most 65535 bytes.
func (m *Meta) Str16(s string) *Meta {
	m.B = binary.BigEndian.AppendUint16(m.B, uint16(len(s)))
	m.B = append(m.B, s...)
	return m
}

// U8 appends a byte.
func (m *Meta) U8(v uint8) *Meta { m.B = append(m.B, v); return m }

// U16 appends a uint16.
func (m *Meta) U16(v uint16) *Meta { m.B = binary.BigEndian.AppendUint16(m.B, v); return m }

// U32 appends a uint32.
func (m *Meta) U32(v uint32) *Meta { m.B = binary.BigEndian.AppendUint32(m.B, v); return m }

// U64 appends a uint64.
func (m *Meta) U64(v uint64) *Meta { m.B = binary.BigEndian.AppendUint64(m.B, v); return m }

// MetaReader decodes a metadata section; the first error sticks and every
// later read returns zero values, so callers check Err once at the end.
type MetaReader struct {
	b   []byte
	err error
}

// NewMetaReader reads b.
func NewMetaReader(b []byte) *MetaReader { return &MetaReader{b: b} }

func (r *MetaReader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = fmt.Errorf("%w: metadata too short for %s", ErrMalformed, what)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// Str8 reads a str8.
func (r *MetaReader) Str8(what string) string {
	n := r.take(1, what)
	if n == nil {
		return ""
	}
	return string(r.take(int(n[0]), what))
}

// Str16 reads a str16.
func (r *MetaReader) Str16(what string) string {
	n := r.take(2, what)
	if n == nil {
		return ""
	}
	return string(r.take(int(binary.BigEndian.Uint16(n)), what))
}

// U8 reads a byte.
func (r *MetaReader) U8(what string) uint8 {
	b := r.take(1, what)
	if b == nil {
		return 0
	}
	return b[0]
}

// U16 reads a uint16.
func (r *MetaReader) U16(what string) uint16 {
	b := r.take(2, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

// U32 reads a uint32.
func (r *MetaReader) U32(what string) uint32 {
	b := r.take(4, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// U64 reads a uint64.
func (r *MetaReader) U64(what string) uint64 {
	b := r.take(8, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// Remaining returns how many metadata bytes are left to read (0 after an
// error), for optional trailing fields.
func (r *MetaReader) Remaining() int {
	if r.err != nil {
		return 0
	}
	return len(r.b)
}

// Done returns the first error, or an error if bytes are left over.
func (r *MetaReader) Done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d unexpected metadata bytes", ErrMalformed, len(r.b))
	}
	return r.err
}
