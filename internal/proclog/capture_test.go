//go:build linux

package proclog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The capture tests run in a child process of the test binary: a capture
// takes over the process's stdout and stderr.
const captureChildEnv = "PROCLOG_CAPTURE_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(captureChildEnv) {
	case "":
		os.Exit(m.Run())
	case "write":
		captureChild(false)
	case "crash":
		captureChild(true)
	}
}

// captureChild captures its output, writes lines (some from a child
// process, one without newline), then prints the ring as JSON on the
// restored stdout after a separator; or crashes.
func captureChild(crash bool) {
	ring := NewRing(DefaultRingLines, DefaultRingBytes)
	c, err := StartCapture(ring)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		os.Exit(2)
	}
	fmt.Println("out 1")
	fmt.Fprintln(os.Stderr, "err 1")
	if crash {
		for ring.Next() < 2 { // lines still in a pipe at a crash are lost
			time.Sleep(time.Millisecond)
		}
		go func() { panic("deliberate crash") }()
		time.Sleep(time.Minute)
	}
	cmd := exec.Command("/bin/sh", "-c", "echo from child; echo child err >&2")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
	}
	fmt.Print("out 2 ")
	fmt.Print("unfinished")
	c.Close(5 * time.Second)
	fmt.Println("----")
	lines, _, _ := ring.Read(0, 0, 0)
	json.NewEncoder(os.Stdout).Encode(lines)
	os.Exit(0)
}

func runCaptureChild(t *testing.T, mode string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), captureChildEnv+"="+mode)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func TestCapture(t *testing.T) {
	out, errOut, err := runCaptureChild(t, "write")
	if err != nil {
		t.Fatalf("child: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	raw, ringJSON, ok := strings.Cut(out, "----\n")
	if !ok {
		t.Fatalf("no separator in the child's output:\n%s", out)
	}
	if errOut != "" {
		t.Errorf("the original stderr got %q; stamped lines go to stdout", errOut)
	}
	var ring []Line
	if err := json.Unmarshal([]byte(ringJSON), &ring); err != nil {
		t.Fatalf("ring: %v in %q", err, ringJSON)
	}
	want := map[string]string{"out 1": StreamStdout, "err 1": StreamStderr, "from child": StreamStdout,
		"child err": StreamStderr, "out 2 unfinished": StreamStdout}
	got := make(map[string]string)
	for _, l := range ring {
		got[l.Line] = l.Stream
		if time.Since(l.Time) > time.Minute || l.Time.After(time.Now()) {
			t.Errorf("line %q stamped %v", l.Line, l.Time)
		}
	}
	for line, stream := range want {
		if got[line] != stream {
			t.Errorf("ring: line %q on stream %q, want %q (ring %v)", line, got[line], stream, ring)
		}
	}
	// The raw sink has the same lines, stamped, in the text format.
	rawLines := strings.Split(strings.TrimSuffix(raw, "\n"), "\n")
	if len(rawLines) != len(ring) {
		t.Fatalf("raw output has %d lines, ring %d:\n%s", len(rawLines), len(ring), raw)
	}
	for _, s := range rawLines {
		l, err := ParseText(s)
		if err != nil || want[l.Line] != l.Stream {
			t.Errorf("raw line %q: %+v, %v", s, l, err)
		}
	}
}

func TestCaptureCrashReachesRawOutput(t *testing.T) {
	out, errOut, err := runCaptureChild(t, "crash")
	if err == nil {
		t.Fatalf("the crashing child exited 0:\n%s", out)
	}
	if !strings.Contains(errOut, "panic: deliberate crash") || !strings.Contains(errOut, "goroutine ") {
		t.Fatalf("the crash is not on the original stderr:\n%s", errOut)
	}
	if !strings.Contains(out, " stdout out 1\n") {
		t.Errorf("lines before the crash are not on the raw output:\n%s", out)
	}
}
