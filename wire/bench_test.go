package wire

import (
	"bytes"
	"io"
	"testing"
)

var benchSizes = []struct {
	name string
	n    int
}{{"0B", 0}, {"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}}

// BenchmarkWriteFrame encodes an invocation frame into a discarding writer:
// the header and metadata are built in the writer's buffer and the payload
// is copied (small) or written from the caller's slice (large).
func BenchmarkWriteFrame(b *testing.B) {
	meta, err := AppendInvoke(nil, "echo", nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			payload := make([]byte, sz.n)
			w := NewWriter(io.Discard)
			b.SetBytes(int64(HeaderLen + len(meta) + sz.n))
			b.ReportAllocs()
			for b.Loop() {
				if err := w.WriteFrame(FrameInvoke, 1, meta, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// repeatReader returns the same bytes forever.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

// BenchmarkReaderNext decodes invocation frames from a stream: one
// allocation per frame, the buffer that the handler then owns.
func BenchmarkReaderNext(b *testing.B) {
	meta, err := AppendInvoke(nil, "echo", nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			if err := w.WriteFrame(FrameInvoke, 1, meta, make([]byte, sz.n)); err != nil {
				b.Fatal(err)
			}
			r := NewReader(&repeatReader{data: buf.Bytes()}, 0)
			b.SetBytes(int64(buf.Len()))
			b.ReportAllocs()
			for b.Loop() {
				f, err := r.Next()
				if err != nil || len(f.Payload) != sz.n {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkInvokeMeta builds and parses the metadata of an invocation.
func BenchmarkInvokeMeta(b *testing.B) {
	b.Run("append", func(b *testing.B) {
		var buf [64]byte
		b.ReportAllocs()
		for b.Loop() {
			if _, err := AppendInvoke(buf[:0], "echo", nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		meta, _ := AppendInvoke(nil, "echo", nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeInvoke(meta); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPutParseHeader encodes and decodes a frame header.
func BenchmarkPutParseHeader(b *testing.B) {
	var hdr [HeaderLen]byte
	b.ReportAllocs()
	for b.Loop() {
		PutHeader(hdr[:], Header{BodyLen: 1029, Type: FrameInvoke, MetaLen: 5, ID: 42})
		if _, err := ParseHeader(hdr[:]); err != nil {
			b.Fatal(err)
		}
	}
}
