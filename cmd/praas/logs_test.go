package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/internal/proclog"
)

// parseLogs parses the output of praas logs: TIME STREAM LINE per line.
func parseLogs(t *testing.T, out string) []proclog.Line {
	t.Helper()
	var lines []proclog.Line
	for s := range strings.Lines(out) {
		l, err := proclog.ParseText(strings.TrimSuffix(s, "\n"))
		if err != nil {
			t.Fatalf("praas logs printed %q: %v", s, err)
		}
		lines = append(lines, l)
	}
	return lines
}

// find returns the index of the first line of stream that contains text, or -1.
func find(lines []proclog.Line, stream, text string) int {
	for i, l := range lines {
		if l.Stream == stream && strings.Contains(l.Line, text) {
			return i
		}
	}
	return -1
}

// TestLogs: what a function writes to stdout, stderr and the SDK's logger
// reaches praas logs, stamped and in order; --since and --tail select,
// --json prints JSON lines, --follow gets new lines across a swap, and the
// raw output file has the same lines.
func TestLogs(t *testing.T) {
	data := t.TempDir()
	startControlPlane(t, data)
	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")
	started := time.Now()
	mustPraas(t, "", "invoke", "demo", "log", "--pid", "p1", "--data", "first")

	var lines []proclog.Line
	waitFor(t, 10*time.Second, "the first lines", func() bool {
		lines = parseLogs(t, mustPraas(t, "", "logs", "demo", "p1"))
		return find(lines, "stdout", "out: first") >= 0 && find(lines, "stderr", "err: first") >= 0 &&
			find(lines, "stderr", "msg=first") >= 0
	})
	sdk := lines[find(lines, "stderr", "msg=first")].Line
	for _, attr := range []string{"level=INFO", "app=demo", "pid=p1", "function=log"} {
		if !strings.Contains(sdk, attr) {
			t.Errorf("the SDK logger's line %q lacks %s", sdk, attr)
		}
	}
	if strings.Contains(sdk, "time=") {
		t.Errorf("the SDK logger's line %q has a time of its own", sdk)
	}
	if find(lines, "stderr", "data plane listening") < 0 {
		t.Errorf("the runtime's own log is not in the process log:\n%v", lines)
	}

	mid := time.Now()
	mustPraas(t, "", "invoke", "demo", "log", "--pid", "p1", "--data", "second")
	waitFor(t, 10*time.Second, "the second lines", func() bool {
		lines = parseLogs(t, mustPraas(t, "", "logs", "demo", "p1"))
		return find(lines, "stdout", "out: second") >= 0
	})
	for i, l := range lines {
		if l.Time.Before(started.Add(-time.Second)) || l.Time.After(time.Now()) {
			t.Errorf("line %q stamped %v", l.Line, l.Time)
		}
		if i > 0 && l.Time.Before(lines[i-1].Time) {
			t.Errorf("line %q (%v) before line %q (%v)", l.Line, l.Time, lines[i-1].Line, lines[i-1].Time)
		}
	}
	if find(lines, "stdout", "out: first") > find(lines, "stdout", "out: second") {
		t.Error("first printed after second")
	}

	since := parseLogs(t, mustPraas(t, "", "logs", "demo", "p1", "--since", mid.Format(time.RFC3339Nano)))
	if find(since, "stdout", "out: first") >= 0 || find(since, "stdout", "out: second") < 0 {
		t.Errorf("--since between the invocations:\n%v", since)
	}
	if all := parseLogs(t, mustPraas(t, "", "logs", "demo", "p1", "--since", "1h")); len(all) != len(lines) {
		t.Errorf("--since 1h: %d lines, want all %d", len(all), len(lines))
	}
	if tail := parseLogs(t, mustPraas(t, "", "logs", "demo", "p1", "--tail", "2")); len(tail) != 2 || tail[1] != lines[len(lines)-1] {
		t.Errorf("--tail 2: %v", tail)
	}
	jsonOut := mustPraas(t, "", "logs", "demo", "p1", "--json", "--tail", "1")
	var jl struct{ Time, Stream, Line string }
	if err := json.Unmarshal([]byte(jsonOut), &jl); err != nil || jl.Stream == "" || jl.Time == "" {
		t.Errorf("--json: %q: %v", jsonOut, err)
	}
	// praas process logs is the same command.
	if out := mustPraas(t, "", "process", "logs", "demo", "p1", "--tail", "2"); len(parseLogs(t, out)) != 2 {
		t.Errorf("process logs --tail 2:\n%s", out)
	}
	// The raw output has the same stamped lines.
	raw, err := os.ReadFile(filepath.Join(data, "logs", "demo", "p1.out"))
	if err != nil || !strings.Contains(string(raw), " stdout out: second\n") || !strings.Contains(string(raw), " stderr err: second\n") {
		t.Errorf("raw output %v:\n%s", err, raw)
	}
	if out := mustPraas(t, "", "process", "logs", "demo", "p1", "--raw", "--data", data); !strings.HasPrefix(out, string(raw)) {
		t.Errorf("process logs --raw:\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"logs", "demo", "nosuch"}, exitNotFound},
		{[]string{"logs", "nosuch", "p1"}, exitNotFound},
		{[]string{"logs", "demo", "p1", "--since", "yesterday"}, exitUsage},
		{[]string{"logs", "demo", "p1", "--tail", "-3"}, exitUsage},
		{[]string{"process", "logs", "demo", "p1", "--raw", "--tail", "3"}, exitUsage},
	} {
		out, errOut, code := runCLI(t, "", tc.args...)
		if code != tc.code || out != "" || strings.Count(errOut, "\n") != 1 {
			t.Errorf("praas %s: exit %d, stdout %q, stderr %q; want exit %d and one error line", strings.Join(tc.args, " "), code, out, errOut, tc.code)
		}
	}

	t.Run("follow across a swap", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out, errOut syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- runIn(ctx, untouchedStdin{t}, &out, &errOut, false, "logs", "demo", "p1", "-f", "--tail", "1")
		}()
		waitFor(t, 10*time.Second, "the tail", func() bool { return strings.Count(out.String(), "\n") >= 1 })
		mustPraas(t, "", "invoke", "demo", "log", "--pid", "p1", "--data", "third")
		waitFor(t, 10*time.Second, "a line printed while following", func() bool { return strings.Contains(out.String(), " stdout out: third\n") })
		mustPraas(t, "", "process", "swap", "demo", "p1")
		waitFor(t, 20*time.Second, "p1 swapped", func() bool { return processStatus(t, "demo", "p1").Status == "swapped" })
		mustPraas(t, "", "invoke", "demo", "log", "--pid", "p1", "--data", "fourth") // swaps it in
		waitFor(t, 10*time.Second, "a line of the next generation", func() bool { return strings.Contains(out.String(), " stdout out: fourth\n") })
		followed := parseLogs(t, out.String())
		if find(followed, "stdout", "out: first") >= 0 {
			t.Errorf("--tail 1 -f printed old lines:\n%s", out.String())
		}
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("logs -f exit %d: %s", code, errOut.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("logs -f did not stop when interrupted")
		}
	})
}
