package process

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sort"
	"time"
)

// A snapshot is the whole durable part of a process, written at swap-out
// and at checkpoints, read at swap-in. docs/snapshot.md describes the format:
//
//	magic   "PRAASNAP"
//	version uint16 (2; 1 is still read)
//	app str16, pid str16, epoch uint64, taken int64 (unix nanos)
//	queued uint64: highest backup-queue sequence consumed (version 2 only)
//	records, each a tag byte and fields:
//	  1 state entry:     key str32, value bytes64
//	  2 mailbox message: src str32, key str32, data bytes64
//	  3 trigger message: buffer str32, src str32, key str32, data bytes64
//	  0 end
//	crc32c  uint32: CRC-32C (Castagnoli) of every byte before it
//
// All integers are big endian; strN and bytesN are an N-bit length then bytes.
const (
	snapshotMagic   = "PRAASNAP"
	snapshotVersion = 2

	recEnd     = 0
	recState   = 1
	recMailbox = 2
	recTrigger = 3
)

// snapshotReadBuffer is the read buffer of a snapshot of unknown or large
// size: large, so a stream from the network is read in few syscalls. (The
// fuzz test lowers it: the decoder must work whatever it is.)
var snapshotReadBuffer = 1 << 20

// maxSnapshotField bounds one length read from a snapshot, so a corrupt
// length cannot ask for an absurd allocation before the checksum fails.
const maxSnapshotField = 1 << 40

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptSnapshot is wrapped by every decoding failure.
var ErrCorruptSnapshot = errors.New("corrupt snapshot")

// snapshotData is what a snapshot holds.
type snapshotData struct {
	App, PID string
	Epoch    uint64
	Taken    time.Time
	// Queued is the highest backup-queue sequence the process had consumed
	// (0 in a version 1 snapshot).
	Queued   uint64
	State    map[string][]byte
	Mailbox  []Message
	Triggers map[string][]Message
}

// size is the exact encoded length, so stores can be told it up front.
func (d *snapshotData) size() int64 {
	n := int64(len(snapshotMagic) + 2 + 2 + len(d.App) + 2 + len(d.PID) + 8 + 8 + 8)
	for k, v := range d.State {
		n += 1 + 4 + int64(len(k)) + 8 + int64(len(v))
	}
	msg := func(m Message) int64 { return 4 + int64(len(m.Src)) + 4 + int64(len(m.Key)) + 8 + int64(len(m.Data)) }
	for _, m := range d.Mailbox {
		n += 1 + msg(m)
	}
	for buf, ms := range d.Triggers {
		for _, m := range ms {
			n += 1 + 4 + int64(len(buf)) + msg(m)
		}
	}
	return n + 1 + 4
}

// snapWriter encodes a snapshot.
type snapWriter struct {
	w   *bufio.Writer
	err error
	b   [8]byte
}

func (s *snapWriter) raw(p []byte) {
	if s.err != nil {
		return
	}
	_, s.err = s.w.Write(p)
}

// hashingWriter checksums what it writes. Large writes are checksummed on
// another core while they go out, so the checksum costs no time at swap-out.
type hashingWriter struct {
	w   io.Writer
	crc uint32
}

// parallelHash is the write size from which hashing runs beside the write.
const parallelHash = 256 << 10

func (h *hashingWriter) Write(p []byte) (int, error) {
	if len(p) < parallelHash {
		h.crc = crc32.Update(h.crc, castagnoli, p)
		return h.w.Write(p)
	}
	done := make(chan uint32, 1)
	go func(crc uint32) { done <- crc32.Update(crc, castagnoli, p) }(h.crc)
	n, err := h.w.Write(p)
	h.crc = <-done // p stays untouched until the checksum is done
	return n, err
}

func (s *snapWriter) u8(v uint8)   { s.b[0] = v; s.raw(s.b[:1]) }
func (s *snapWriter) u16(v uint16) { binary.BigEndian.PutUint16(s.b[:2], v); s.raw(s.b[:2]) }
func (s *snapWriter) u32(v uint32) { binary.BigEndian.PutUint32(s.b[:4], v); s.raw(s.b[:4]) }
func (s *snapWriter) u64(v uint64) { binary.BigEndian.PutUint64(s.b[:8], v); s.raw(s.b[:8]) }
func (s *snapWriter) str16(v string) {
	s.u16(uint16(len(v)))
	s.raw([]byte(v))
}
func (s *snapWriter) str32(v string) {
	s.u32(uint32(len(v)))
	s.raw([]byte(v))
}
func (s *snapWriter) bytes64(v []byte) {
	s.u64(uint64(len(v)))
	s.raw(v)
}
func (s *snapWriter) msg(m Message) {
	s.str32(m.Src)
	s.str32(m.Key)
	s.bytes64(m.Data)
}

// writeSnapshot encodes d to w.
func writeSnapshot(w io.Writer, d *snapshotData) error {
	hw := &hashingWriter{w: w}
	s := &snapWriter{w: bufio.NewWriterSize(hw, 1<<20)}
	s.raw([]byte(snapshotMagic))
	s.u16(snapshotVersion)
	s.str16(d.App)
	s.str16(d.PID)
	s.u64(d.Epoch)
	s.u64(uint64(d.Taken.UnixNano()))
	s.u64(d.Queued)
	keys := make([]string, 0, len(d.State))
	for k := range d.State {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s.u8(recState)
		s.str32(k)
		s.bytes64(d.State[k])
	}
	for _, m := range d.Mailbox {
		s.u8(recMailbox)
		s.msg(m)
	}
	bufs := make([]string, 0, len(d.Triggers))
	for b := range d.Triggers {
		bufs = append(bufs, b)
	}
	sort.Strings(bufs)
	for _, b := range bufs {
		for _, m := range d.Triggers[b] {
			s.u8(recTrigger)
			s.str32(b)
			s.msg(m)
		}
	}
	s.u8(recEnd)
	if s.err != nil {
		return s.err
	}
	if err := s.w.Flush(); err != nil {
		return err
	}
	binary.BigEndian.PutUint32(s.b[:4], hw.crc)
	_, err := w.Write(s.b[:4])
	return err
}

// snapReader decodes while it checksums.
type snapReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	err error
	b   [8]byte
	// size is the whole snapshot's length if the transport told it (else
	// -1): a field that fits in it is allocated at once.
	size int64
}

func (s *snapReader) full(p []byte) {
	if s.err != nil {
		return
	}
	if _, err := io.ReadFull(s.r, p); err != nil {
		s.err = fmt.Errorf("%w: truncated: %w", ErrCorruptSnapshot, err)
		return
	}
	s.crc.Write(p)
}

func (s *snapReader) u8() uint8   { s.full(s.b[:1]); return s.b[0] }
func (s *snapReader) u16() uint16 { s.full(s.b[:2]); return binary.BigEndian.Uint16(s.b[:2]) }
func (s *snapReader) u32() uint32 { s.full(s.b[:4]); return binary.BigEndian.Uint32(s.b[:4]) }
func (s *snapReader) u64() uint64 { s.full(s.b[:8]); return binary.BigEndian.Uint64(s.b[:8]) }

// bytesN reads n bytes. A field over 64 KiB is not allocated whole up
// front: its buffer doubles as the data actually arrives, so a corrupt
// length fails on the missing data, never asking for more than twice what
// was there (or 64 KiB).
func (s *snapReader) bytesN(n uint64) []byte {
	if s.err != nil {
		return nil
	}
	if n > maxSnapshotField {
		s.err = fmt.Errorf("%w: field of %d bytes", ErrCorruptSnapshot, n)
		return nil
	}
	const direct = 64 << 10
	if s.size >= 0 && n > uint64(s.size) {
		s.err = fmt.Errorf("%w: field of %d bytes in a snapshot of %d", ErrCorruptSnapshot, n, s.size)
		return nil
	}
	if n <= direct || s.size >= 0 {
		p := make([]byte, n)
		s.full(p)
		return p
	}
	// A larger field is read in chunks first (each as large as what came
	// so far, up to 1 MiB), so a forged length costs at most about twice
	// what really arrived; the field itself is allocated once all of it is
	// here. (Growing one buffer by doubling made huge
	// copies that the garbage collector fought with: swap-in slowed ten
	// times.)
	const maxChunk = 1 << 20
	var chunks [][]byte
	for got := uint64(0); got < n && s.err == nil; {
		c := make([]byte, min(n-got, max(direct, min(got, maxChunk))))
		s.full(c)
		chunks = append(chunks, c)
		got += uint64(len(c))
	}
	if s.err != nil {
		return nil
	}
	p := make([]byte, 0, n)
	for _, c := range chunks {
		p = append(p, c...)
	}
	return p
}

func (s *snapReader) str16() string { return string(s.bytesN(uint64(s.u16()))) }
func (s *snapReader) str32() string { return string(s.bytesN(uint64(s.u32()))) }
func (s *snapReader) bytes64() []byte {
	return s.bytesN(s.u64())
}
func (s *snapReader) msg() Message {
	return Message{Src: s.str32(), Key: s.str32(), Data: s.bytes64()}
}

// readSnapshot decodes a snapshot and verifies its checksum; nothing is
// returned unless the whole snapshot is intact.
func readSnapshot(r io.Reader) (*snapshotData, error) { return readSnapshotSized(r, -1) }

// readSnapshotSized is readSnapshot of a stream of size bytes (-1: not
// known). With the size known, fields are allocated whole at once: a forged
// length can claim no more than the stream holds.
func readSnapshotSized(r io.Reader, size int64) (*snapshotData, error) {
	bufSize := snapshotReadBuffer
	if size >= 0 && size < int64(bufSize) {
		bufSize = int(size) // a small snapshot needs no large buffer
	}
	s := &snapReader{r: bufio.NewReaderSize(r, bufSize), crc: crc32.New(castagnoli), size: size}
	magic := make([]byte, len(snapshotMagic))
	s.full(magic)
	if s.err == nil && string(magic) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a praas snapshot", ErrCorruptSnapshot)
	}
	version := s.u16()
	if s.err == nil && (version < 1 || version > snapshotVersion) {
		return nil, fmt.Errorf("%w: snapshot version %d is not supported", ErrCorruptSnapshot, version)
	}
	d := &snapshotData{State: make(map[string][]byte), Triggers: make(map[string][]Message)}
	d.App = s.str16()
	d.PID = s.str16()
	d.Epoch = s.u64()
	d.Taken = time.Unix(0, int64(s.u64()))
	if version >= 2 {
		d.Queued = s.u64()
	}
	for s.err == nil {
		switch tag := s.u8(); tag {
		case recEnd:
			want := s.crc.Sum32()
			if _, err := io.ReadFull(s.r, s.b[:4]); err != nil {
				return nil, fmt.Errorf("%w: missing checksum", ErrCorruptSnapshot)
			}
			if got := binary.BigEndian.Uint32(s.b[:4]); got != want {
				return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptSnapshot)
			}
			if _, err := s.r.ReadByte(); err != io.EOF {
				return nil, fmt.Errorf("%w: data after the checksum", ErrCorruptSnapshot)
			}
			return d, nil
		case recState:
			k := s.str32()
			d.State[k] = s.bytes64()
		case recMailbox:
			d.Mailbox = append(d.Mailbox, s.msg())
		case recTrigger:
			b := s.str32()
			d.Triggers[b] = append(d.Triggers[b], s.msg())
		default:
			if s.err == nil {
				s.err = fmt.Errorf("%w: unknown record tag %d", ErrCorruptSnapshot, tag)
			}
		}
	}
	return nil, s.err
}
