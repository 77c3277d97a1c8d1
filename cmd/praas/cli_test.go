package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run the CLI in-process against a fake control plane that
// records what it is sent; none needs `praas up`.

// fakeControlPlane answers invoke with its input and accepts messages; it
// records the last request.
type fakeControlPlane struct {
	mu   sync.Mutex
	path string
	body []byte
}

func startFakeControlPlane(t *testing.T) *fakeControlPlane {
	t.Helper()
	f := &fakeControlPlane{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.path, f.body = r.URL.RequestURI(), body
		f.mu.Unlock()
		switch {
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/apps/demo/invoke/"):
			w.Write(body)
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/apps/demo/processes/"):
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"not found","code":"not_found"}`)
		}
	}))
	t.Cleanup(srv.Close)
	t.Setenv(EnvEndpoint, srv.URL)
	return f
}

func (f *fakeControlPlane) last() (string, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.path, f.body
}

// untouchedStdin fails the test if the CLI reads it: it stands for a
// terminal or a pipe that nobody writes to, on which a read would hang.
type untouchedStdin struct{ t *testing.T }

func (s untouchedStdin) Read([]byte) (int, error) {
	s.t.Error("the CLI read stdin without --data - or --file -")
	return 0, errors.New("stdin must not be read")
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runIn runs the CLI in-process with ctx and stdin; terminal says whether
// stdout counts as a terminal.
func runIn(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, terminal bool, args ...string) int {
	c := &cli{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr,
		isTerminal: func(io.Writer) bool { return terminal }}
	return c.run(args)
}

func runTerm(t *testing.T, stdin io.Reader, terminal bool, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := runIn(ctx, stdin, &out, &errOut, terminal, args...)
	return out.String(), errOut.String(), code
}

// Stdin is read with --data - or --file -, and never otherwise.
func TestInputFromStdinOnlyWhenAsked(t *testing.T) {
	fake := startFakeControlPlane(t)
	file := filepath.Join(t.TempDir(), "input")
	if err := os.WriteFile(file, []byte("from a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		stdin     string // "" for a stdin that must stay unread
		args      []string
		wantPath  string
		wantInput string
	}{
		{"no input flag", "", []string{"invoke", "demo", "echo", "--pid", "p1"}, "/v1/apps/demo/invoke/echo?pid=p1", ""},
		{"data", "", []string{"invoke", "demo", "echo", "--data", "x"}, "/v1/apps/demo/invoke/echo", "x"},
		{"empty data", "", []string{"invoke", "demo", "echo", "--data", ""}, "/v1/apps/demo/invoke/echo", ""},
		{"file", "", []string{"invoke", "demo", "echo", "--file", file}, "/v1/apps/demo/invoke/echo", "from a file"},
		{"data from stdin", "piped\n", []string{"invoke", "demo", "echo", "--pid", "p1", "--data", "-"}, "/v1/apps/demo/invoke/echo?pid=p1", "piped\n"},
		{"file from stdin", "piped", []string{"invoke", "demo", "echo", "--file", "-"}, "/v1/apps/demo/invoke/echo", "piped"},
		{"send without input", "", []string{"send", "demo", "b", "k"}, "/v1/apps/demo/processes/b/messages/k", ""},
		{"send data", "", []string{"send", "demo", "b", "k", "--data", "1"}, "/v1/apps/demo/processes/b/messages/k", "1"},
		{"send from stdin", "2", []string{"send", "demo", "b", "k", "--data", "-"}, "/v1/apps/demo/processes/b/messages/k", "2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdin io.Reader = untouchedStdin{t}
			if tc.stdin != "" {
				stdin = strings.NewReader(tc.stdin)
			}
			_, errOut, code := runTerm(t, stdin, false, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if path, body := fake.last(); path != tc.wantPath || string(body) != tc.wantInput {
				t.Fatalf("control plane got %s with %q, want %s with %q", path, body, tc.wantPath, tc.wantInput)
			}
		})
	}

	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"invoke", "demo", "echo", "--data", "x", "--file", file}, exitUsage},
		{[]string{"invoke", "demo", "echo", "--data", "-", "--file", "-"}, exitUsage},
		{[]string{"invoke", "demo", "echo", "--file", ""}, exitUsage},
		{[]string{"invoke", "demo", "echo", "--file", filepath.Join(t.TempDir(), "absent")}, exitFailure},
	} {
		out, errOut, code := runTerm(t, untouchedStdin{t}, false, tc.args...)
		if code != tc.code || out != "" || strings.Count(errOut, "\n") != 1 {
			t.Errorf("praas %s: exit %d, stdout %q, stderr %q; want exit %d and one error line", strings.Join(tc.args, " "), code, out, errOut, tc.code)
		}
	}
}

// The result is written byte for byte; a newline follows it only at a
// terminal, and not with --raw.
func TestResultNewline(t *testing.T) {
	startFakeControlPlane(t)
	outFile := filepath.Join(t.TempDir(), "result")
	binary := "\x00\xffno newline"
	tests := []struct {
		name     string
		terminal bool
		args     []string
		want     string
	}{
		{"pipe", false, []string{"--data", "hello"}, "hello"},
		{"terminal", true, []string{"--data", "hello"}, "hello\n"},
		{"terminal, ends with a newline", true, []string{"--data", "hello\n"}, "hello\n"},
		{"terminal, empty result", true, nil, ""},
		{"terminal, raw", true, []string{"--data", "hello", "--raw"}, "hello"},
		{"pipe, raw", false, []string{"--data", binary, "--raw"}, binary},
		{"terminal, out", true, []string{"--data", binary, "--out", outFile}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"invoke", "demo", "echo", "--pid", "p1"}, tc.args...)
			out, errOut, code := runTerm(t, untouchedStdin{t}, tc.terminal, args...)
			if code != 0 || out != tc.want {
				t.Fatalf("exit %d, stdout %q (stderr %q); want %q", code, out, errOut, tc.want)
			}
		})
	}
	if got, err := os.ReadFile(outFile); err != nil || string(got) != binary {
		t.Fatalf("--out file holds %q (%v), want %q", got, err, binary)
	}
}

// `process logs --data` prints the raw output file DATA/logs/APP/PID.out,
// follows it, and says where it looked when there is none.
func TestProcessLogs(t *testing.T) {
	data := t.TempDir()
	logFile := filepath.Join(data, "logs", "demo", "p1.out")
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logFile, []byte("line 1\nline 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if out := mustPraas(t, "", "process", "logs", "demo", "p1", "--data", data); out != "line 1\nline 2\n" {
		t.Fatalf("logs = %q", out)
	}
	if out := mustPraas(t, "", "process", "logs", "demo", "p1", "--data", data, "--path"); out != logFile+"\n" {
		t.Fatalf("logs --path = %q, want %q", out, logFile+"\n")
	}
	// The default --data is ./.praas, as for praas up.
	wd, _ := os.Getwd()
	if out := mustPraas(t, "", "process", "logs", "demo", "p1", "--path"); out != filepath.Join(wd, ".praas", "logs", "demo", "p1.out")+"\n" {
		t.Fatalf("logs --path with the default --data = %q", out)
	}
	for _, args := range [][]string{
		{"process", "logs", "demo", "p2", "--data", data},
		{"process", "logs", "demo", "../p1", "--data", data},
		{"process", "logs", "..", "p1", "--data", data},
	} {
		out, errOut, code := runCLI(t, "", args...)
		if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 {
			t.Errorf("praas %s: exit %d, stdout %q, stderr %q; want exit 1 and one error line", strings.Join(args, " "), code, out, errOut)
		}
	}
	if _, errOut, _ := runCLI(t, "", "process", "logs", "demo", "p2", "--data", data); !strings.Contains(errOut, filepath.Join(data, "logs", "demo", "p2.out")) {
		t.Errorf("a missing log's error does not say where it looked: %q", errOut)
	}

	t.Run("follow", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out, errOut syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- runIn(ctx, untouchedStdin{t}, &out, &errOut, false, "process", "logs", "demo", "p1", "--data", data, "--follow")
		}()
		waitFor(t, 5*time.Second, "the existing log", func() bool { return out.String() == "line 1\nline 2\n" })
		f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("line 3\n")
		f.Close()
		waitFor(t, 5*time.Second, "the appended line", func() bool { return out.String() == "line 1\nline 2\nline 3\n" })
		// Truncated, then written again: followed from the start.
		if err := os.WriteFile(logFile, []byte("new\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the rewritten log", func() bool { return strings.HasSuffix(out.String(), "line 3\nnew\n") })
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("logs --follow exit %d: %s", code, errOut.String())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("logs --follow did not stop when interrupted")
		}
	})

	t.Run("follow waits for the file", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out, errOut syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- runIn(ctx, untouchedStdin{t}, &out, &errOut, false, "process", "logs", "demo", "later", "--data", data, "-f")
		}()
		time.Sleep(2 * logPoll) // let it look for the file at least once
		if err := os.WriteFile(filepath.Join(data, "logs", "demo", "later.out"), []byte("started\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the new log", func() bool { return out.String() == "started\n" })
		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
	})
}
