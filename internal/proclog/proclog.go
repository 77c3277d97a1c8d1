// Package proclog is the log of a process: lines its runtime captured from
// stdout and stderr (and from the SDK's logger, which writes to stderr),
// each stamped with the time and the stream. The runtime splits and stamps
// them (Splitter, Capture) and buffers them in a bounded Ring until the
// control plane has them; the control plane keeps them in a Ring of its
// own for followers and in files in the text format of AppendText.
package proclog

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Streams a line comes from. StreamPraas marks lines the platform adds
// itself, such as the count of lines dropped when a buffer was full.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
	StreamPraas  = "praas"
)

// MaxLine is the longest line kept whole: longer ones are split into lines
// of at most MaxLine bytes.
const MaxLine = 16 << 10

// Line is one line of a process's log, without its newline.
type Line struct {
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"`
	Line   string    `json:"line"`
}

// size is what a line costs in a ring: its text and a fixed overhead.
func (l Line) size() int { return len(l.Line) + len(l.Stream) + 48 }

// DroppedLine is the marker recorded where n lines were lost.
func DroppedLine(t time.Time, n uint64) Line {
	return Line{Time: t, Stream: StreamPraas, Line: fmt.Sprintf("%d lines dropped", n)}
}

// timeLayout is the stamp of the text format: UTC, nanoseconds, fixed width,
// so stamped lines sort as text and align.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// AppendText appends l in the text format, "TIME STREAM LINE\n", with TIME
// in RFC 3339 UTC with nanoseconds. The process log files and the raw
// output of a runtime that captures it are written in this format.
func AppendText(b []byte, l Line) []byte {
	b = l.Time.UTC().AppendFormat(b, timeLayout)
	b = append(b, ' ')
	b = append(b, l.Stream...)
	b = append(b, ' ')
	b = append(b, l.Line...)
	return append(b, '\n')
}

// ErrMalformed is returned by ParseText for a line not in the text format.
var ErrMalformed = errors.New("proclog: not a stamped log line")

// ParseText reads one line of the text format, without its newline.
func ParseText(s string) (Line, error) {
	stamp, rest, ok := strings.Cut(s, " ")
	if !ok {
		return Line{}, ErrMalformed
	}
	stream, text, ok := strings.Cut(rest, " ")
	if !ok || stream == "" {
		return Line{}, ErrMalformed
	}
	t, err := time.Parse(time.RFC3339Nano, stamp)
	if err != nil {
		return Line{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return Line{Time: t, Stream: stream, Line: text}, nil
}
