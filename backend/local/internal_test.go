package local

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/praas-dev/praas/backend"
)

func TestParseIdent(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ident
		ok   bool
	}{
		{"4242@123456", ident{4242, 123456}, true},
		{"4242@0", ident{4242, 0}, true},
		{"", ident{}, false},
		{"4242", ident{}, false},
		{"1@5", ident{}, false}, // init is never ours
		{"0@5", ident{}, false},
		{"-3@5", ident{}, false},
		{"042@5", ident{}, false},
		{"42@+5", ident{}, false},
		{"42@5@6", ident{}, false},
		{"42@5x", ident{}, false},
		{"../../etc/passwd@1", ident{}, false},
	} {
		got, ok := parseIdent(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("parseIdent(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestProcStat(t *testing.T) {
	state, start, err := procStat(os.Getpid())
	if err != nil || start == 0 || (state != 'R' && state != 'S') {
		t.Fatalf("procStat(self) = %c, %d, %v", state, start, err)
	}
	if !running(ident{os.Getpid(), start}) || running(ident{os.Getpid(), start + 1}) {
		t.Errorf("running disagrees with procStat")
	}
}

// A record naming a live process that is not the one recorded (its pid
// was reused, or the record is from an earlier boot) is never listed nor
// signalled, and is removed.
func TestStrangerNeverSignalled(t *testing.T) {
	dir := t.TempDir()
	b, err := New(Config{RunDir: filepath.Join(dir, "run"), Isolation: IsolationNone})
	if err != nil {
		t.Fatal(err)
	}
	stranger := exec.Command("sleep", "60")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Process.Kill(); stranger.Wait() })
	pid := stranger.Process.Pid
	_, start, err := procStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	recs := []record{
		{App: "a", PID: "reused", OSPID: pid, StartTime: start - 1, BootID: b.bootID},
		{App: "a", PID: "earlier-boot", OSPID: pid, StartTime: start, BootID: "another boot"},
	}
	for _, r := range recs {
		if err := b.writeRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	hs, err := b.List(t.Context())
	if err != nil || len(hs) != 0 {
		t.Errorf("List = %+v, %v; want none", hs, err)
	}
	// The earlier boot's record had to go; write it again for the calls below.
	if err := b.writeRecord(recs[1]); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		h := backend.Handle{ID: r.ident().String(), App: r.App, PID: r.PID}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		if err := b.Kill(ctx, h); err != nil {
			t.Errorf("Kill %s: %v", h.ID, err)
		}
		if err := b.Stop(ctx, h); err != nil {
			t.Errorf("Stop %s: %v", h.ID, err)
		}
		if _, err := b.Wait(ctx, h); err != nil {
			t.Errorf("Wait %s: %v", h.ID, err)
		}
		cancel()
	}
	if state, _, err := procStat(pid); err != nil || state == 'Z' {
		t.Fatalf("the stranger was signalled: state %c, %v", state, err)
	}
	ents, err := os.ReadDir(b.cfg.RunDir)
	if err != nil || len(ents) != 1 || ents[0].Name() != recs[1].ident().String()+recordExt {
		// Only the earlier boot's record may stay: no call but List judges boots.
		t.Errorf("run dir after the calls: %v, %v", ents, err)
	}
}

// Waiting on a pidfd goes through the runtime's poller, holding no thread.
func TestWaitPidfd(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	_, start, err := procStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	f, ok, err := openPidfd(ident{cmd.Process.Pid, start})
	if !ok || err != nil {
		t.Fatalf("openPidfd: %v, %v", ok, err)
	}
	defer f.Close()
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		t.Errorf("pidfd not in the poller: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := waitPidfd(ctx, f); err != context.DeadlineExceeded {
		t.Fatalf("waitPidfd on a running process: %v", err)
	}
	if ended, err := signalPidfd(f, unix.SIGKILL); ended || err != nil {
		t.Fatalf("signalPidfd: %v, %v", ended, err)
	}
	if err := waitPidfd(t.Context(), f); err != nil {
		t.Fatalf("waitPidfd after SIGKILL: %v", err)
	}
	cmd.Wait()
	if ended, err := signalPidfd(f, unix.SIGKILL); !ended || err != nil {
		t.Errorf("signalPidfd after reaping: %v, %v; want ended", ended, err)
	}
}

func TestCatches(t *testing.T) {
	if !catches(os.Getpid(), unix.SIGTERM) {
		t.Errorf("a Go program does not catch SIGTERM?")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if catches(cmd.Process.Pid, unix.SIGTERM) {
		t.Errorf("sleep catches SIGTERM?")
	}
	if !catches(1<<30, unix.SIGTERM) {
		t.Errorf("catches of no process: false, want true (cannot tell)")
	}
}
