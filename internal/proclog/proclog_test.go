package proclog

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func split(t *testing.T, max int, writes ...string) []string {
	t.Helper()
	var got []string
	sp := &Splitter{Stream: StreamStdout, Max: max, Emit: func(l Line) {
		if l.Stream != StreamStdout || l.Time.IsZero() {
			t.Errorf("line %+v: want stream stdout and a time", l)
		}
		got = append(got, l.Line)
	}}
	for _, w := range writes {
		if n, err := sp.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	sp.Flush()
	return got
}

func TestSplitter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		max    int
		writes []string
		want   []string
	}{
		{"lines", 0, []string{"a\nb\n"}, []string{"a", "b"}},
		{"across writes", 0, []string{"he", "llo\nwor", "ld\n"}, []string{"hello", "world"}},
		{"empty lines kept", 0, []string{"\n\nx\n"}, []string{"", "", "x"}},
		{"carriage return", 0, []string{"dos\r\n"}, []string{"dos"}},
		{"unfinished line at the end", 0, []string{"a\nrest"}, []string{"a", "rest"}},
		{"long line cut", 4, []string{"abcdefghij\n"}, []string{"abcd", "efgh", "ij"}},
		{"long unfinished line cut as it grows", 4, []string{"abc", "defg", "hij\nk\n"}, []string{"abcd", "efgh", "ij", "k"}},
		{"exactly max", 4, []string{"abcd\n"}, []string{"abcd"}},
		{"cut before a UTF-8 character", 4, []string{"abcé\n"}, []string{"abc", "é"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, split(t, tc.max, tc.writes...)); diff != "" {
				t.Fatalf("lines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSplitterDefaultMax(t *testing.T) {
	long := strings.Repeat("x", 2*MaxLine+10)
	got := split(t, 0, long+"\n")
	if len(got) != 3 || len(got[0]) != MaxLine || len(got[1]) != MaxLine || len(got[2]) != 10 {
		t.Fatalf("a line of %d bytes split into %d lines", len(long), len(got))
	}
}

func TestTextRoundTrip(t *testing.T) {
	l := Line{Time: time.Date(2026, 1, 2, 3, 4, 5, 60, time.FixedZone("x", 3600)), Stream: StreamStderr, Line: "with  spaces and \ttabs "}
	text := string(AppendText(nil, l))
	if want := "2026-01-02T02:04:05.000000060Z stderr with  spaces and \ttabs \n"; text != want {
		t.Fatalf("text = %q, want %q", text, want)
	}
	got, err := ParseText(strings.TrimSuffix(text, "\n"))
	if err != nil || !got.Time.Equal(l.Time) || got.Stream != l.Stream || got.Line != l.Line {
		t.Fatalf("ParseText = %+v, %v; want %+v", got, err, l)
	}
	empty, err := ParseText("2026-01-02T02:04:05.000000060Z stdout ")
	if err != nil || empty.Line != "" {
		t.Fatalf("empty line: %+v, %v", empty, err)
	}
	for _, bad := range []string{"", "nostamp", "2026-01-02 stdout x", "2026-01-02T02:04:05Z", "garbage stdout x"} {
		if _, err := ParseText(bad); err == nil {
			t.Errorf("ParseText(%q) succeeded", bad)
		}
	}
}

func lineN(i int) Line {
	return Line{Time: time.Unix(int64(i), 0), Stream: StreamStdout, Line: fmt.Sprint(i)}
}

func texts(lines []Line) []string {
	s := make([]string, len(lines))
	for i, l := range lines {
		s[i] = l.Line
	}
	return s
}

func TestRingBoundsLines(t *testing.T) {
	r := NewRing(3, 1<<20)
	for i := range 5 {
		r.Append(lineN(i))
	}
	lines, next, missed := r.Read(0, 0, 0)
	if diff := cmp.Diff([]string{"2", "3", "4"}, texts(lines)); diff != "" || next != 5 || missed != 2 {
		t.Fatalf("Read(0) = %v next %d missed %d (-want +got lines %s)", texts(lines), next, missed, diff)
	}
	if r.Dropped() != 2 || r.Next() != 5 {
		t.Fatalf("Dropped %d Next %d, want 2 and 5", r.Dropped(), r.Next())
	}
	lines, next, missed = r.Read(3, 0, 0)
	if diff := cmp.Diff([]string{"3", "4"}, texts(lines)); diff != "" || next != 5 || missed != 0 {
		t.Fatalf("Read(3) = %v next %d missed %d", texts(lines), next, missed)
	}
	if lines, next, _ := r.Read(5, 0, 0); len(lines) != 0 || next != 5 {
		t.Fatalf("Read past the end = %v next %d", texts(lines), next)
	}
	if lines, next, _ := r.Read(2, 2, 0); len(lines) != 2 || next != 4 {
		t.Fatalf("Read at most 2 = %v next %d", texts(lines), next)
	}
}

func TestRingBoundsBytes(t *testing.T) {
	big := Line{Stream: StreamStdout, Line: strings.Repeat("x", 1000)}
	r := NewRing(100, 2500)
	for range 10 {
		r.Append(big)
	}
	lines, _, missed := r.Read(0, 0, 0)
	if len(lines) != 2 || missed != 8 || r.Dropped() != 8 {
		t.Fatalf("kept %d, missed %d, dropped %d; want 2, 8, 8", len(lines), missed, r.Dropped())
	}
	// A line larger than the ring is kept alone.
	r.Append(Line{Stream: StreamStdout, Line: strings.Repeat("y", 5000)})
	lines, next, _ := r.Read(0, 0, 0)
	if len(lines) != 1 || len(lines[0].Line) != 5000 || next != 11 {
		t.Fatalf("after a huge line: %d lines, next %d", len(lines), next)
	}
	// Read's byte bound returns at least one line.
	r.Append(big, big)
	if lines, _, _ := r.Read(10, 0, 10); len(lines) != 1 {
		t.Fatalf("Read with a small byte bound returned %d lines", len(lines))
	}
	if lines, _, _ := r.Read(11, 0, 2200); len(lines) != 2 {
		t.Fatalf("Read with room for two returned %d lines", len(lines))
	}
}

// TestRingConcurrent appends from several goroutines while a reader
// follows with Changed; every line is read once, in sequence.
func TestRingConcurrent(t *testing.T) {
	const writers, each = 4, 500
	r := NewRing(writers*each, 1<<30)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r.Append(lineN(w*each + i))
			}
		}()
	}
	seen := make(map[string]bool)
	var from uint64
	deadline := time.After(10 * time.Second)
	for len(seen) < writers*each {
		changed := r.Changed()
		lines, next, missed := r.Read(from, 100, 0)
		if missed != 0 {
			t.Fatalf("missed %d", missed)
		}
		for _, l := range lines {
			if seen[l.Line] {
				t.Fatalf("line %s read twice", l.Line)
			}
			seen[l.Line] = true
		}
		from = next
		if len(lines) == 0 {
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("read %d of %d lines", len(seen), writers*each)
			}
		}
	}
	wg.Wait()
}
