package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
)

// A flood of messages nobody receives is refused at the mailbox limit
// with resource_exhausted; every message acknowledged is kept (through a
// swap); and the memory of the process and of the control plane stays
// within a stated bound, far below what the flood would take unrefused.
func TestFloodStaysBounded(t *testing.T) {
	const (
		mailboxBytes = 32 << 20
		messages     = 300 // of 1 MiB: 300 MiB if nothing were refused
		// Bounds of resident memory: the mailbox limit, the garbage
		// collector's headroom (GOGC=100 doubles the live heap) and a
		// runtime's baseline.
		processBound      = 2*mailboxBytes + 96<<20
		controlPlaneBound = 192 << 20
	)
	cp := startControlPlane(t, t.TempDir(), "--max-mailbox-bytes", strconv.Itoa(mailboxBytes))
	mustPraas(t, "", "app", "create", "flood")
	mustPraas(t, "", "process", "create", "flood", "--pid", "p1")
	c := client.New(cp.endpoint, client.WithToken(token()))
	defer c.Close()
	ctx := context.Background()

	var accepted, refused atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > messages {
					return
				}
				data := bytes.Repeat([]byte{byte(i)}, 1<<20)
				err := c.SendMessage(ctx, "flood", "p1", "k", data)
				switch {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, errs.ErrResourceExhausted):
					refused.Add(1)
				default:
					t.Errorf("message %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	procRSS := rssOf(t, processOSPID(t, "flood", "p1"))
	cpRSS := rssOf(t, cp.cmd.Process.Pid)
	t.Logf("%d messages of 1 MiB taken, %d refused; resident memory: process %d MiB (bound %d), control plane %d MiB (bound %d)",
		accepted.Load(), refused.Load(), procRSS>>20, processBound>>20, cpRSS>>20, controlPlaneBound>>20)
	if got := accepted.Load(); got > mailboxBytes>>20 || got == 0 || refused.Load() == 0 {
		t.Fatalf("%d messages taken, %d refused; want at most %d taken, the rest refused", got, refused.Load(), mailboxBytes>>20)
	}
	if procRSS > processBound {
		t.Errorf("process resident memory %d MiB, bound %d MiB", procRSS>>20, processBound>>20)
	}
	if cpRSS > controlPlaneBound {
		t.Errorf("control plane resident memory %d MiB, bound %d MiB", cpRSS>>20, controlPlaneBound>>20)
	}
	// Every acknowledged message is there after a swap, each once.
	mustPraas(t, "", "process", "swap", "flood", "p1")
	for range accepted.Load() {
		out := mustPraas(t, "", "invoke", "flood", "recv", "--pid", "p1", "--data", "@any k 5000", "--raw")
		if len(out) != 1<<20 {
			t.Fatalf("received %d bytes, want 1 MiB", len(out))
		}
	}
	if _, errOut, code := runCLI(t, "", "invoke", "flood", "recv", "--pid", "p1", "--data", "@any k 100"); code == 0 {
		t.Fatalf("a message more than were acknowledged: %s", errOut)
	}
}

// processOSPID finds the OS process running app/pid by its environment
// (the runtime's own, inside a sandbox too).
func processOSPID(t *testing.T, app, pid string) int {
	t.Helper()
	want := []string{"PRAAS_APP=" + app, "PRAAS_PID=" + pid}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		env, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil {
			continue
		}
		vars := strings.Split(string(env), "\x00")
		found := 0
		for _, w := range want {
			for _, v := range vars {
				if v == w {
					found++
					break
				}
			}
		}
		if found == len(want) {
			n, _ := strconv.Atoi(filepath.Base(d))
			if exe, _ := os.Readlink(filepath.Join(d, "exe")); !strings.HasSuffix(exe, "bwrap") {
				return n
			}
		}
	}
	t.Fatalf("no OS process runs %s/%s", app, pid)
	return 0
}

// rssOf is the resident memory of an OS process, in bytes.
func rssOf(t *testing.T, osPID int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", osPID))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", osPID)
	return 0
}
