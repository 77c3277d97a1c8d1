package proclog

import (
	"bytes"
	"time"
	"unicode/utf8"
)

// Splitter turns a byte stream into stamped lines: every newline ends a
// line, and a line longer than Max bytes is cut into several, at a UTF-8
// character boundary where there is one. A trailing "\r" is dropped. It is
// not safe for concurrent use.
type Splitter struct {
	Stream string
	// Max is the longest line (default MaxLine).
	Max int
	// Emit receives every line, in order.
	Emit func(Line)
	// Now stamps lines (default time.Now).
	Now func() time.Time

	partial []byte
}

// Write splits p into lines; an unfinished line waits for the next Write
// or Flush. It never fails.
func (s *Splitter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.partial = append(s.partial, p...)
			s.cutLong()
			return n, nil
		}
		if len(s.partial) == 0 {
			s.emitLine(p[:i])
		} else {
			s.partial = append(s.partial, p[:i]...)
			s.emitLine(s.partial)
			s.partial = s.partial[:0]
		}
		p = p[i+1:]
	}
	return n, nil
}

// Flush emits an unfinished line, if any (at the end of the stream).
func (s *Splitter) Flush() {
	if len(s.partial) > 0 {
		s.emitLine(s.partial)
		s.partial = s.partial[:0]
	}
}

// cutLong emits the full-length pieces of an unfinished line that is
// already too long, so the partial buffer stays bounded.
func (s *Splitter) cutLong() {
	max := s.max()
	for len(s.partial) > max {
		cut := cutAt(s.partial, max)
		s.emit(s.partial[:cut])
		s.partial = append(s.partial[:0], s.partial[cut:]...)
	}
}

// emitLine emits one complete line, in pieces if it is too long.
func (s *Splitter) emitLine(b []byte) {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	max := s.max()
	for len(b) > max {
		cut := cutAt(b, max)
		s.emit(b[:cut])
		b = b[cut:]
	}
	s.emit(b)
}

func (s *Splitter) emit(b []byte) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	s.Emit(Line{Time: now(), Stream: s.Stream, Line: string(b)})
}

func (s *Splitter) max() int {
	if s.Max > 0 {
		return s.Max
	}
	return MaxLine
}

// cutAt returns where to cut b, longer than max: at max, or a little before
// if that would split a UTF-8 character.
func cutAt(b []byte, max int) int {
	for i := max; i > max-utf8.UTFMax && i > 0; i-- {
		if utf8.RuneStart(b[i]) {
			return i
		}
	}
	return max
}
