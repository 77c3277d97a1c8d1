package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// createServer is a control plane whose process creation and swap take
// delay; it records the pids asked for and the most creations at once.
// Creating the pid named fail answers 429.
type createServer struct {
	delay time.Duration
	fail  string

	mu        sync.Mutex
	pids      []string
	inFlight  int
	maxAtOnce int
}

func startCreateServer(t *testing.T, delay time.Duration, fail string) *createServer {
	t.Helper()
	cs := &createServer{delay: delay, fail: fail}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/swap") {
			time.Sleep(cs.delay)
			fmt.Fprint(w, `{"app":"demo","pid":"p1","status":"swapped","snapshot_bytes":3145728,"usage":{},"resources":{}}`)
			return
		}
		var req struct{ PID string }
		json.NewDecoder(r.Body).Decode(&req)
		cs.mu.Lock()
		n := len(cs.pids)
		cs.pids = append(cs.pids, req.PID)
		cs.inFlight++
		cs.maxAtOnce = max(cs.maxAtOnce, cs.inFlight)
		cs.mu.Unlock()
		time.Sleep(cs.delay)
		cs.mu.Lock()
		cs.inFlight--
		cs.mu.Unlock()
		if cs.fail != "" && req.PID == cs.fail {
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":"too many processes","code":"resource_exhausted"}`)
			return
		}
		if req.PID == "" {
			req.PID = fmt.Sprintf("auto%d", n)
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"app":"demo","pid":%q,"status":"active","address":"127.0.0.1:1","usage":{},"resources":{}}`, req.PID)
	}))
	t.Cleanup(srv.Close)
	t.Setenv(EnvEndpoint, srv.URL)
	return cs
}

// runStderrTerminal runs the CLI with stderr, and only stderr, counting as a
// terminal when terminal is set.
func runStderrTerminal(t *testing.T, terminal bool, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	c := &cli{ctx: ctx, stdin: untouchedStdin{t}, stdout: &out, stderr: &errOut,
		isTerminal: func(w io.Writer) bool { return terminal && w == any(&errOut) }}
	code := c.run(args)
	return out.String(), errOut.String(), code
}

// process create --count creates N processes, --parallel at a time, named
// from --pid, prints them in order, and shows "created i/N" on a terminal
// only.
func TestBulkCreate(t *testing.T) {
	cs := startCreateServer(t, 60*time.Millisecond, "")
	out, errOut, code := runStderrTerminal(t, false, "process", "create", "demo", "--count", "12", "--pid", "w", "--parallel", "3")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var want []string
	for i := 1; i <= 12; i++ {
		want = append(want, fmt.Sprintf("process demo/w%d active at 127.0.0.1:1", i))
	}
	if got := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
	cs.mu.Lock()
	if len(cs.pids) != 12 || cs.maxAtOnce > 3 {
		t.Errorf("the control plane was asked for %d processes, at most %d at once; want 12, at most 3", len(cs.pids), cs.maxAtOnce)
	}
	cs.mu.Unlock()

	out, errOut, code = runStderrTerminal(t, true, "process", "create", "demo", "--count", "8", "--parallel", "2")
	if code != 0 || !strings.Contains(errOut, "/8 (") || !strings.HasSuffix(errOut, "\r\033[K") || strings.Contains(out, "\r") {
		t.Errorf("on a terminal: exit %d, stderr %q, stdout %q; want a progress line cleared at the end, and stdout clean", code, errOut, out)
	}
	if strings.Count(out, "\n") != 8 {
		t.Errorf("stdout %q, want 8 processes", out)
	}

	out, _, code = runStderrTerminal(t, false, "process", "create", "demo", "--count", "3", "--json")
	var procs []map[string]any
	if err := json.Unmarshal([]byte(out), &procs); code != 0 || err != nil || len(procs) != 3 {
		t.Errorf("--json: exit %d, %v, stdout %q; want a list of 3", code, err, out)
	}
}

// After a failure, bulk creation starts no more, prints those created and
// fails with the failure's exit code.
func TestBulkCreateStopsAtFailure(t *testing.T) {
	cs := startCreateServer(t, 30*time.Millisecond, "w4")
	out, errOut, code := runStderrTerminal(t, false, "process", "create", "demo", "--count", "50", "--pid", "w", "--parallel", "2")
	if code != exitRetryable || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "of 50 processes created: too many processes") {
		t.Errorf("exit %d, stderr %q; want %d and one line saying how many were created", code, errOut, exitRetryable)
	}
	if !strings.Contains(out, "demo/w3 ") || strings.Contains(out, "demo/w4 ") {
		t.Errorf("stdout %q, want w1 to w3 and not w4", out)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.pids) > 6 {
		t.Errorf("%d creations were asked for after a failure at the 4th (%v)", len(cs.pids), cs.pids)
	}
}

// process swap shows what it does and for how long on a terminal's stderr,
// and nothing on one that is not.
func TestSwapProgress(t *testing.T) {
	startCreateServer(t, 250*time.Millisecond, "")
	out, errOut, code := runStderrTerminal(t, true, "process", "swap", "demo", "p1")
	if code != 0 || !strings.Contains(errOut, "swapping demo/p1 out (") || !strings.HasSuffix(errOut, "\r\033[K") {
		t.Errorf("exit %d, stderr %q; want a progress line, cleared", code, errOut)
	}
	if !strings.HasPrefix(out, "process demo/p1 swapped (") || !strings.HasSuffix(out, ", snapshot 3.0 MiB)\n") {
		t.Errorf("stdout %q", out)
	}
	if _, errOut, _ := runStderrTerminal(t, false, "process", "swap", "demo", "p1"); errOut != "" {
		t.Errorf("stderr not a terminal: %q, want nothing", errOut)
	}
}
