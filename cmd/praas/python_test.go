package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/testenv"
)

// pythonModule is the test module of Python functions.
func pythonModule(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../process/workers/testdata/handlers.py")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPythonApp runs an app of Python functions through a real praas up,
// the CLI and the Go client, in every isolation mode this machine has:
// state across invocations, messages between Python and Go functions of
// two processes, a multi-source trigger, a swap out and in, and a worker
// killed with SIGKILL in the middle of an invocation.
func TestPythonApp(t *testing.T) {
	testenv.Python(t)
	for _, mode := range []string{"none", "user", "namespaces"} {
		t.Run(mode, func(t *testing.T) {
			if mode != "none" && (os.Geteuid() != 0 || (mode == "namespaces" && !hasBwrap())) {
				if testenv.InCI() {
					t.Fatal("isolation " + mode + " needs root (and bubblewrap for namespaces), and CI must run it")
				}
				t.Skip("SKIPPING Python in isolation " + mode + ": needs root (and bubblewrap for namespaces)")
			}
			testPythonApp(t, mode)
		})
	}
}

func testPythonApp(t *testing.T, mode string) {
	data := t.TempDir()
	startControlPlane(t, data, "--isolation", mode)
	mustPraas(t, "", "app", "create", "py", "--image", "python:"+pythonModule(t))
	mustPraas(t, "", "process", "create", "py", "--pid", "p1")
	mustPraas(t, "", "process", "create", "py", "--pid", "p2")
	inv := func(pid, fn, data string) string {
		t.Helper()
		return mustPraas(t, "", "invoke", "py", fn, "--pid", pid, "--data", data)
	}
	want := func(got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}

	// State across invocations, through the CLI and the Go client.
	want(inv("p1", "count", ""), "1")
	want(inv("p1", "count", ""), "2")
	ctx := context.Background()
	c := testClient()
	out, err := c.Invoke(ctx, "py", "p1", "count", nil)
	if err != nil {
		t.Fatal(err)
	}
	want(string(out), "3")
	want(inv("p1", "whoami", ""), "py/p1")

	// Python in p1 sends to p2, where the builtin Go recv reads it; Go in
	// p2 sends back, and Python in p1 reads it.
	want(inv("p1", "py-send", "p2 greet hello from python"), "")
	want(inv("p2", "recv", "p1 greet 5000"), "hello from python")
	want(inv("p2", "send", "p1 back hi from go"), "")
	want(inv("p1", "py-recv", "p2 back 5"), "p2:hi from go")
	// Remote invoke from Python: of a Python function in p2 and of a Go one.
	want(inv("p1", "py-invoke", "p2 whoami x"), "py/p2")
	want(inv("p1", "py-invoke", "p2 echo from p1"), "from p1")

	// A multi-source trigger in p1: three messages from Python in p2, and
	// three from outside the app (CLI).
	for _, v := range []string{"4", "5", "6"} {
		inv("p2", "py-send", "p1 total:r2 "+v)
	}
	for _, v := range []string{"1", "2", "3"} {
		mustPraas(t, "", "send", "py", "p1", "total:r1", "--data", v)
	}
	waitFor(t, 30*time.Second, "triggered total", func() bool {
		o1, _, c1 := runCLI(t, "", "invoke", "py", "state-read", "--pid", "p1", "--data", "total/r1")
		o2, _, c2 := runCLI(t, "", "invoke", "py", "state-read", "--pid", "p1", "--data", "total/r2")
		return c1 == 0 && c2 == 0 && o1 == "6 from ,," && o2 == "15 from p2,p2,p2"
	})

	// Swap out and in: the state lives in the runtime and survives.
	mustPraas(t, "", "process", "swap", "py", "p1")
	waitFor(t, 30*time.Second, "p1 swapped", func() bool { return processStatus(t, "py", "p1").Status == "swapped" })
	want(inv("p1", "count", ""), "4")
	want(inv("p1", "state-read", "total/r1"), "6 from ,,")

	// Workers print into the process log, never into the protocol; a
	// failed function's traceback goes there too.
	want(inv("p2", "shout", "loud"), "")
	if _, errOut, code := runCLI(t, "", "invoke", "py", "fail", "--pid", "p2"); code == 0 || !strings.Contains(errOut, "ValueError: it went wrong") {
		t.Errorf("fail: exit %d, %q; want an error naming the exception", code, errOut)
	}
	waitFor(t, 30*time.Second, "worker output in the process log", func() bool {
		log, _, code := runCLI(t, "", "process", "logs", "py", "p2", "--data", data)
		return code == 0 && strings.Contains(log, "to stdout: loud") && strings.Contains(log, "to stderr: loud") &&
			strings.Contains(log, `raise ValueError("it went wrong")`)
	})

	// A worker killed mid-invocation: that invocation fails, the state
	// is intact, the next invocation works.
	errc := make(chan error, 1)
	go func() {
		_, err := c.Invoke(ctx, "py", "p1", "hang", []byte("60"))
		errc <- err
	}()
	var rec string
	waitFor(t, 30*time.Second, "hang started", func() bool {
		o, _, code := runCLI(t, "", "invoke", "py", "state-read", "--pid", "p1", "--data", "hang-pid")
		rec = o
		return code == 0
	})
	killWorker(t, rec)
	select {
	case err := <-errc:
		if errs.CodeOf(err) != errs.FunctionFailed || !strings.Contains(err.Error(), "killed") {
			t.Errorf("invocation whose worker was killed: %v, want function failed", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the invocation whose worker was killed did not end")
	}
	want(inv("p1", "count", ""), "5")
	want(inv("p1", "state-read", "total/r2"), "15 from p2,p2,p2")
}

// killWorker sends SIGKILL to the worker hang recorded as "PID START": its
// pid in its own pid namespace and its start time. On the host it is the
// process whose NSpid ends in PID and which started then.
func killWorker(t *testing.T, rec string) {
	t.Helper()
	f := strings.Fields(rec)
	if len(f) != 2 {
		t.Fatalf("hang-pid = %q", rec)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		hostPID, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err1 := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		stat, err2 := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err1 != nil || err2 != nil {
			continue
		}
		nspid := ""
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				fs := strings.Fields(v)
				nspid = fs[len(fs)-1]
			}
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if nspid == f[0] && len(fields) > 19 && fields[19] == f[1] {
			if err := syscall.Kill(hostPID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no worker process %q found", rec)
}
