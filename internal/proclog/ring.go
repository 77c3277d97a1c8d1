package proclog

import "sync"

// Default bounds of a runtime's ring: what it holds while the control
// plane does not take its lines.
const (
	DefaultRingLines = 4096
	DefaultRingBytes = 1 << 20
)

// Ring holds the latest lines of a log, at most a number of lines and of
// bytes: appending past either drops the oldest. Every line appended gets
// the next sequence number, so a reader that remembers where it stopped
// reads on from there and learns how many lines it missed. It is safe for
// concurrent use.
type Ring struct {
	maxLines, maxBytes int

	mu      sync.Mutex
	buf     []Line // circular: buf[(start+i)%len(buf)], i < n
	start   int
	n       int
	bytes   int
	first   uint64 // sequence number of buf[start]
	dropped uint64
	// changed, if a reader asked for it, is closed at the next Append.
	changed chan struct{}
}

// NewRing returns a ring of at most maxLines lines and maxBytes bytes
// (the newest line is kept even if it alone is larger).
func NewRing(maxLines, maxBytes int) *Ring {
	return &Ring{maxLines: max(maxLines, 1), maxBytes: maxBytes, buf: make([]Line, max(maxLines, 1))}
}

// Append adds lines, dropping the oldest beyond the bounds.
func (r *Ring) Append(lines ...Line) {
	if len(lines) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range lines {
		if r.n == len(r.buf) {
			r.dropOldest()
		}
		r.buf[(r.start+r.n)%len(r.buf)] = l
		r.n++
		r.bytes += l.size()
		for r.bytes > r.maxBytes && r.n > 1 {
			r.dropOldest()
		}
	}
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

func (r *Ring) dropOldest() {
	r.bytes -= r.buf[r.start].size()
	r.buf[r.start] = Line{}
	r.start = (r.start + 1) % len(r.buf)
	r.n--
	r.first++
	r.dropped++
}

// Read returns the lines from sequence number from on, at most maxLines
// of them and, past the first, maxBytes bytes (0: no bound); next is the
// sequence number to read from next time, and missed how many lines from
// from on were dropped before they could be read.
func (r *Ring) Read(from uint64, maxLines, maxBytes int) (lines []Line, next uint64, missed uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if from < r.first {
		missed, from = r.first-from, r.first
	}
	end := r.first + uint64(r.n)
	size := 0
	for seq := from; seq < end; seq++ {
		if maxLines > 0 && len(lines) >= maxLines {
			break
		}
		l := r.buf[(r.start+int(seq-r.first))%len(r.buf)]
		if size += l.size(); maxBytes > 0 && len(lines) > 0 && size > maxBytes {
			break
		}
		lines = append(lines, l)
	}
	return lines, from + uint64(len(lines)), missed
}

// Next is the sequence number the next appended line gets.
func (r *Ring) Next() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first + uint64(r.n)
}

// Changed returns a channel closed at the next Append.
func (r *Ring) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	return r.changed
}

// Dropped counts the lines dropped for room since the ring was made.
func (r *Ring) Dropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}
