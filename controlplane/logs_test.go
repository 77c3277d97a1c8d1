package controlplane

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/proclog"
)

func logHarness(t *testing.T, maxBytes int64) (*harness, string) {
	dir := t.TempDir()
	h := newHarness(t, nil, func(c *Config) { c.NoAuth, c.LogDir, c.MaxLogBytes = true, dir, maxBytes })
	return h, dir
}

// tokenOf returns the credential of the running generation of pid.
func (h *harness) tokenOf(l *live) string {
	return h.be.proc(l.backendHandle()).env[cpapi.EnvToken]
}

// shipLines sends lines as generation gen of pid would.
func (h *harness) shipLines(pid string, gen uint64, tok string, lines ...proclog.Line) int {
	h.t.Helper()
	return postInternal(h.t, h, cpapi.PathLogs, tok, cpapi.Logs{App: "app", PID: pid, Generation: gen, Lines: lines})
}

func numbered(from, to int, at time.Time) []proclog.Line {
	var lines []proclog.Line
	for i := from; i < to; i++ {
		lines = append(lines, proclog.Line{Time: at.Add(time.Duration(i) * time.Millisecond), Stream: proclog.StreamStdout, Line: fmt.Sprintf("line %04d %s", i, strings.Repeat("x", 60))})
	}
	return lines
}

// getLogs reads a log through the REST API: status and JSON lines.
func getLogs(t *testing.T, h *harness, pid, query string) (int, []proclog.Line) {
	t.Helper()
	resp, err := http.Get(h.s.cfg.URL + "/v1/apps/app/processes/" + pid + "/logs" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	var lines []proclog.Line
	dec := json.NewDecoder(resp.Body)
	for {
		var l proclog.Line
		if err := dec.Decode(&l); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode: %v", err)
		}
		lines = append(lines, l)
	}
	return resp.StatusCode, lines
}

func lineNumbers(lines []proclog.Line) []int {
	var ns []int
	for _, l := range lines {
		var n int
		if _, err := fmt.Sscanf(l.Line, "line %d", &n); err == nil {
			ns = append(ns, n)
		}
	}
	return ns
}

// TestLogsRotate: the log file is rotated past MaxLogBytes, one old file is
// kept, and a read returns the lines of both in order.
func TestLogsRotate(t *testing.T) {
	const maxBytes = 4096
	h, dir := logHarness(t, maxBytes)
	h.create("p")
	l := h.mustActivate("p")
	tok := h.tokenOf(l)
	start := time.Now()
	const total = 200 // about 100 bytes each in the file: five rotations
	for i := 0; i < total; i += 10 {
		if code := h.shipLines("p", l.gen, tok, numbered(i, i+10, start)...); code != http.StatusNoContent {
			t.Fatalf("ship: %d", code)
		}
	}
	current := filepath.Join(dir, "app", "p.log")
	for _, path := range []string{current, current + ".1"} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > maxBytes || fi.Size() < maxBytes/2 {
			t.Errorf("%s: %d bytes, want at most %d and most of it", path, fi.Size(), maxBytes)
		}
	}
	if _, err := os.Stat(current + ".2"); err == nil {
		t.Error("more than one rotated file kept")
	}
	_, lines := getLogs(t, h, "p", "")
	ns := lineNumbers(lines)
	if len(ns) == 0 || ns[len(ns)-1] != total-1 || len(ns) > 2*maxBytes/90 {
		t.Fatalf("read %d lines ending at %v; want the last ones up to %d", len(ns), ns[max(0, len(ns)-1):], total-1)
	}
	for i := 1; i < len(ns); i++ {
		if ns[i] != ns[i-1]+1 {
			t.Fatalf("lines out of order or missing: %d after %d", ns[i], ns[i-1])
		}
	}
	// The file is the text format.
	b, _ := os.ReadFile(current)
	first, _, _ := strings.Cut(string(b), "\n")
	if pl, err := proclog.ParseText(first); err != nil || pl.Stream != proclog.StreamStdout {
		t.Fatalf("first line of the file %q: %v", first, err)
	}
}

func TestLogsQuery(t *testing.T) {
	h, _ := logHarness(t, 0)
	h.create("p")
	l := h.mustActivate("p")
	old := time.Now().Add(-time.Hour)
	h.shipLines("p", l.gen, h.tokenOf(l), numbered(0, 5, old)...)
	recent := time.Now()
	h.shipLines("p", l.gen, h.tokenOf(l), numbered(5, 8, recent)...)

	for _, tc := range []struct {
		query string
		want  []int
	}{
		{"", []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{"?tail=3", []int{5, 6, 7}},
		{"?tail=0", []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{"?since=10m", []int{5, 6, 7}},
		{"?since=" + recent.Add(6*time.Millisecond).UTC().Format(time.RFC3339Nano), []int{6, 7}},
		{"?since=2h&tail=6", []int{2, 3, 4, 5, 6, 7}},
	} {
		code, lines := getLogs(t, h, "p", tc.query)
		if got := lineNumbers(lines); code != http.StatusOK || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("logs%s: %d %v, want %v", tc.query, code, got, tc.want)
		}
	}

	resp, err := http.Get(h.s.cfg.URL + "/v1/apps/app/processes/p/logs?format=text&tail=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if pl, err := proclog.ParseText(strings.TrimSuffix(string(b), "\n")); err != nil || !strings.HasPrefix(pl.Line, "line 0007") ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("format=text: %q (%s): %v", b, resp.Header.Get("Content-Type"), err)
	}

	for _, tc := range []struct {
		path string
		want int
	}{
		{"/v1/apps/app/processes/p/logs?since=yesterday", http.StatusBadRequest},
		{"/v1/apps/app/processes/p/logs?since=-5m", http.StatusBadRequest},
		{"/v1/apps/app/processes/p/logs?tail=-1", http.StatusBadRequest},
		{"/v1/apps/app/processes/p/logs?follow=maybe", http.StatusBadRequest},
		{"/v1/apps/app/processes/p/logs?format=xml", http.StatusBadRequest},
		{"/v1/apps/app/processes/nobody/logs", http.StatusNotFound},
		{"/v1/apps/noapp/processes/p/logs", http.StatusNotFound},
	} {
		resp, err := http.Get(h.s.cfg.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || body.Error == "" {
			t.Errorf("GET %s: %d %q, want %d and a JSON error", tc.path, resp.StatusCode, body.Error, tc.want)
		}
	}
}

// TestLogsReceive: only the process's own credential ships its lines, and
// lines are made to fit the file format.
func TestLogsReceive(t *testing.T) {
	h, _ := logHarness(t, 0)
	h.create("p")
	h.create("q")
	l := h.mustActivate("p")
	lq := h.mustActivate("q")
	line := proclog.Line{Time: time.Now(), Stream: proclog.StreamStdout, Line: "hello"}
	if code := h.shipLines("p", l.gen, h.tokenOf(lq), line); code != http.StatusForbidden {
		t.Errorf("q's credential shipping p's lines: %d, want 403", code)
	}
	if code := h.shipLines("p", l.gen+1, h.tokenOf(l), line); code != http.StatusForbidden {
		t.Errorf("another generation's lines: %d, want 403", code)
	}
	if code := h.shipLines("p", l.gen, "", line); code/100 != 4 {
		t.Errorf("no credential: %d", code)
	}
	if code := h.shipLines("p", l.gen, h.tokenOf(l), make([]proclog.Line, cpapi.MaxLogsBatch+1)...); code != http.StatusRequestEntityTooLarge {
		t.Errorf("an oversized batch: %d, want 413", code)
	}
	odd := []proclog.Line{
		{Stream: "stdout", Line: "two\nlines"},
		{Time: time.Now(), Stream: "has space", Line: "x"},
		{Time: time.Now(), Stream: "stderr", Line: strings.Repeat("y", proclog.MaxLine+100)},
	}
	if code := h.shipLines("p", l.gen, h.tokenOf(l), odd...); code != http.StatusNoContent {
		t.Fatalf("ship: %d", code)
	}
	_, lines := getLogs(t, h, "p", "")
	if len(lines) != 3 || lines[0].Line != "two lines" || lines[0].Time.IsZero() || lines[1].Stream != proclog.StreamStderr ||
		len(lines[2].Line) != proclog.MaxLine {
		t.Fatalf("read back %+v", lines)
	}
}

// TestLogsFollow: a follower gets the history, then new lines as they are
// shipped, also from the next generation after a swap, until it leaves.
func TestLogsFollow(t *testing.T) {
	h, _ := logHarness(t, 0)
	h.create("p")
	l := h.mustActivate("p")
	now := time.Now()
	h.shipLines("p", l.gen, h.tokenOf(l), numbered(0, 2, now)...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.s.cfg.URL+"/v1/apps/app/processes/p/logs?follow=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan proclog.Line, 100)
	go func() {
		defer close(got)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var pl proclog.Line
			if json.Unmarshal(sc.Bytes(), &pl) == nil {
				got <- pl
			}
		}
	}()
	next := func(want int) {
		t.Helper()
		select {
		case pl := <-got:
			if ns := lineNumbers([]proclog.Line{pl}); len(ns) != 1 || ns[0] != want {
				t.Fatalf("followed %q, want line %d", pl.Line, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("line %d not followed", want)
		}
	}
	next(0)
	next(1)
	h.shipLines("p", l.gen, h.tokenOf(l), numbered(2, 3, now)...)
	next(2)
	if err := h.s.swapOut(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	// The swapped-out generation's last lines still count.
	if code := h.shipLines("p", l.gen, h.tokenOf(l), numbered(3, 4, now)...); code != http.StatusNoContent {
		t.Fatalf("last lines after the swap-out: %d", code)
	}
	next(3)
	l2 := h.mustActivate("p")
	h.shipLines("p", l2.gen, h.tokenOf(l2), numbered(4, 6, now)...)
	next(4)
	next(5)

	pl := h.s.logs.get("app", "p", false)
	h.s.logs.mu.Lock()
	followers := pl.followers
	h.s.logs.mu.Unlock()
	if followers != 1 {
		t.Fatalf("%d followers, want 1", followers)
	}
	cancel()
	waitUntil(t, "the follower gone", func() bool {
		h.s.logs.mu.Lock()
		defer h.s.logs.mu.Unlock()
		return pl.followers == 0
	})
	// Rings without lines or followers for a while are forgotten; the file stays.
	h.s.logs.evictIdle(time.Now().Add(2 * logIdle))
	if _, lines := getLogs(t, h, "p", ""); len(lines) != 6 {
		t.Fatalf("after eviction: %d lines, want 6", len(lines))
	}
}

// TestLogsInMemory: without a log directory the ring serves reads.
func TestLogsInMemory(t *testing.T) {
	h := newHarness(t, nil, func(c *Config) { c.NoAuth = true })
	h.create("p")
	l := h.mustActivate("p")
	h.shipLines("p", l.gen, h.tokenOf(l), numbered(0, 3, time.Now())...)
	if _, lines := getLogs(t, h, "p", "?tail=2"); fmt.Sprint(lineNumbers(lines)) != "[1 2]" {
		t.Fatalf("lines %v", lineNumbers(lines))
	}
}
