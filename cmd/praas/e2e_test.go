package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/praas-dev/praas/controlplane"
)

// praasBin is the praas binary built once for the end-to-end tests: the
// control plane runs as a real OS process and starts real processes.
var praasBin string

func TestMain(m *testing.M) {
	// A process whose test control plane is gone exits soon, not after minutes.
	os.Setenv("PRAAS_ORPHAN_TIMEOUT", "20s")
	dir, err := os.MkdirTemp("", "praas-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	praasBin = filepath.Join(dir, "praas")
	// Admin keys that praas up makes go to a config file of the tests' own;
	// every control plane of the tests accepts one admin key, which the CLI
	// sends (TestFirstStartKey checks the made-up key path).
	os.Setenv(EnvConfig, filepath.Join(dir, "config.json"))
	_, adminKey, err := controlplane.NewKey("", "tests")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Setenv("PRAAS_ADMIN_KEY", adminKey)
	os.Setenv(EnvToken, adminKey)
	build := exec.Command("go", "build", "-o", praasBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build praas:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// controlPlane is a `praas up` running as an OS process.
type controlPlane struct {
	cmd      *exec.Cmd
	endpoint string
	stderr   *bytes.Buffer
	exited   chan error
}

// startControlPlane runs `praas up` on a random port with data in dataDir
// and points the CLI of this test at it.
// freeAddr returns a loopback address no one listens on now, for a control
// plane that a test restarts on the same address.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startControlPlane(t *testing.T, dataDir string, extra ...string) *controlPlane {
	t.Helper()
	args := append([]string{"up", "--data", dataDir, "--listen", "127.0.0.1:0", "--log-level", "debug"}, extra...)
	cmd := exec.Command(praasBin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	cmd.Stderr = &lockedWriter{w: cp.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cp.exited <- cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("praas up printed no address: %v\n%s", err, cp.stderr)
	}
	// "praas control plane listening on http://127.0.0.1:PORT (data in ...)"
	// (https:// with TLS)
	for _, f := range strings.Fields(line) {
		if strings.HasPrefix(f, "http://") || strings.HasPrefix(f, "https://") {
			cp.endpoint = f
		}
	}
	if cp.endpoint == "" {
		t.Fatalf("no endpoint in %q", line)
	}
	t.Setenv(EnvEndpoint, cp.endpoint)
	t.Cleanup(func() { cp.terminate(t) })
	return cp
}

// terminate sends SIGTERM and waits for a graceful exit.
func (cp *controlPlane) terminate(t *testing.T) {
	t.Helper()
	if cp.cmd.ProcessState != nil {
		return
	}
	_ = cp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-cp.exited:
		if err != nil {
			t.Errorf("control plane exit: %v\n%s", err, cp.stderr)
		}
	case <-time.After(60 * time.Second):
		cp.cmd.Process.Kill()
		t.Errorf("control plane did not stop after SIGTERM\n%s", cp.stderr)
	}
}

type lockedWriter struct {
	w io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) { return l.w.Write(p) }

// runCLI runs the CLI in-process and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

// mustPraas runs the CLI and fails the test unless it exits 0.
func mustPraas(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, stdin, args...)
	if code != 0 {
		t.Fatalf("praas %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

type processJSON struct {
	PID     string `json:"pid"`
	Status  string `json:"status"`
	Address string `json:"address"`
}

func listProcesses(t *testing.T, app string) map[string]processJSON {
	t.Helper()
	var procs []processJSON
	if err := json.Unmarshal([]byte(mustPraas(t, "", "process", "list", app, "--json")), &procs); err != nil {
		t.Fatal(err)
	}
	m := make(map[string]processJSON)
	for _, p := range procs {
		m[p.PID] = p
	}
	return m
}

// The walk-through of the README: app, process, invocations with state,
// errors, and a control-plane restart on the same data directory.
func TestQuickStart(t *testing.T) {
	data := t.TempDir()
	cp := startControlPlane(t, data)

	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")

	steps := []struct {
		stdin string
		args  []string
		want  string
	}{
		{"hello", []string{"invoke", "demo", "echo", "--pid", "p1", "--data", "-"}, "hello"},
		{"", []string{"invoke", "demo", "counter", "--pid", "p1"}, "1"},
		{"", []string{"invoke", "demo", "counter", "--pid", "p1"}, "2"},
		{"", []string{"invoke", "demo", "state-set", "--pid", "p1", "--data", "k=v"}, ""},
		{"", []string{"invoke", "demo", "state-get", "--pid", "p1", "--data", "k"}, "v"},
		{"", []string{"invoke", "demo", "echo", "--data", "x"}, "x"},
	}
	for _, s := range steps {
		if got := mustPraas(t, s.stdin, s.args...); got != s.want {
			t.Fatalf("praas %s = %q, want %q", strings.Join(s.args, " "), got, s.want)
		}
	}
	p1 := listProcesses(t, "demo")["p1"]
	if p1.Status != "active" || p1.Address == "" {
		t.Fatalf("p1 listed as %+v, want active with an address", p1)
	}
	table := mustPraas(t, "", "process", "list", "demo")
	if !strings.Contains(table, "p1") || !strings.Contains(table, "active") || !strings.Contains(table, p1.Address) {
		t.Fatalf("process list table:\n%s", table)
	}

	errorCases := []struct {
		args []string
		want string
		code int
	}{
		{[]string{"invoke", "demo", "nosuch", "--pid", "p1"}, `function "nosuch"`, exitNotFound},
		{[]string{"invoke", "nosuchapp", "echo"}, `app "nosuchapp"`, exitNotFound},
		{[]string{"invoke", "demo", "echo", "--pid", "nosuchpid"}, "nosuchpid", exitNotFound},
		{[]string{"invoke", "demo", "state-get", "--pid", "p1", "--data", "absent"}, "absent", exitNotFound},
		{[]string{"app", "create", "demo"}, "already exists", exitConflict},
		{[]string{"process", "create", "demo", "--pid", "p1"}, "already exists", exitConflict},
		{[]string{"app", "create", "bad name!"}, "app name", exitInvalid},
	}
	for _, ec := range errorCases {
		out, errOut, code := runCLI(t, "", ec.args...)
		if code != ec.code || out != "" || !strings.Contains(errOut, ec.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Fatalf("praas %s: exit %d stdout %q stderr %q; want exit %d and one line containing %q",
				strings.Join(ec.args, " "), code, out, errOut, ec.code, ec.want)
		}
	}

	// Bulk creation: w1 to w3, all active, and a fourth that exists fails
	// as a conflict after the others.
	var bulk []processJSON
	if err := json.Unmarshal([]byte(mustPraas(t, "", "process", "create", "demo", "--count", "3", "--pid", "w", "--json")), &bulk); err != nil || len(bulk) != 3 {
		t.Fatalf("process create --count 3 --json: %v, %+v", err, bulk)
	}
	for i, p := range bulk {
		if want := fmt.Sprintf("w%d", i+1); p.PID != want || p.Status != "active" || listProcesses(t, "demo")[want].Status != "active" {
			t.Fatalf("bulk-created process %d: %+v, want %s active", i, p, want)
		}
	}
	if _, errOut, code := runCLI(t, "", "process", "create", "demo", "--count", "3", "--pid", "w", "--parallel", "1"); code != exitConflict || !strings.Contains(errOut, "0 of 3 processes created") {
		t.Fatalf("bulk creation of existing pids: exit %d, %q", code, errOut)
	}

	// SIGTERM, then a new control plane on the same data directory.
	cp.terminate(t)
	if st := cp.cmd.ProcessState; st == nil || !st.Success() {
		t.Fatalf("control plane did not exit cleanly: %v", st)
	}
	startControlPlane(t, data)
	if apps := mustPraas(t, "", "app", "list"); !strings.Contains(apps, "demo") {
		t.Fatalf("after restart app list:\n%s", apps)
	}
	if _, ok := listProcesses(t, "demo")["p1"]; !ok {
		t.Fatal("after restart p1 is not listed")
	}
	// The stopped process comes back on the next invocation.
	if got := mustPraas(t, "again", "invoke", "demo", "echo", "--pid", "p1", "--data", "-"); got != "again" {
		t.Fatalf("echo after restart = %q", got)
	}
	if p := listProcesses(t, "demo")["p1"]; p.Status != "active" {
		t.Fatalf("p1 after invoke: %+v", p)
	}
}
