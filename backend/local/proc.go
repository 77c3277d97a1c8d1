package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ident names one OS process for its whole life: the kernel reuses pids,
// but a reused pid comes with a later start time.
type ident struct {
	pid   int
	start uint64 // field 22 of /proc/PID/stat: clock ticks since boot
}

func (id ident) String() string { return fmt.Sprintf("%d@%d", id.pid, id.start) }

// parseIdent parses a Handle.ID. Anything malformed names no process.
func parseIdent(s string) (ident, bool) {
	p, st, ok := bytes.Cut([]byte(s), []byte("@"))
	if !ok {
		return ident{}, false
	}
	pid, err := strconv.Atoi(string(p))
	if err != nil || pid <= 1 {
		return ident{}, false
	}
	start, err := strconv.ParseUint(string(st), 10, 64)
	if err != nil {
		return ident{}, false
	}
	id := ident{pid, start}
	if id.String() != s {
		return ident{}, false // canonical form only: "007@1" is not 7@1
	}
	return id, true
}

// stat is what the backend reads of /proc/PID/stat.
type stat struct {
	state byte
	ppid  int
	start uint64
}

// readStat reads /proc/PID/stat. One read gives a consistent view: the
// parent and start time of one process.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself, so count fields from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3
	if len(f) < 20 || len(f[0]) != 1 {
		return stat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return stat{}, fmt.Errorf("/proc/%d/stat: parent: %w", pid, err)
	}
	start, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return stat{f[0][0], ppid, start}, nil
}

// procStat returns the state letter and start time of pid from /proc.
func procStat(pid int) (state byte, start uint64, err error) {
	st, err := readStat(pid)
	return st.state, st.start, err
}

// running reports whether id names a live process. Zombies have ended:
// they only wait for their parent to collect the exit status.
func running(id ident) bool {
	state, start, err := procStat(id.pid)
	return err == nil && start == id.start && state != 'Z' && state != 'X'
}

// openPidfd returns a pidfd for id, or ok=false if id has ended. Because the
// pidfd is opened before the start time is checked, a match proves that the
// pidfd refers to id and not to a later process that reused the pid.
func openPidfd(id ident) (f *os.File, ok bool, err error) {
	fd, err := unix.PidfdOpen(id.pid, unix.O_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("pidfd_open %d: %w", id.pid, err)
	}
	// A non-blocking descriptor joins the runtime's poller, so waiting on
	// it holds no thread and honours read deadlines.
	f = os.NewFile(uintptr(fd), "pidfd:"+id.String())
	if !running(id) {
		f.Close()
		return nil, false, nil
	}
	return f, true, nil
}

// signalPidfd sends sig; ended is true if the process is already gone.
func signalPidfd(f *os.File, sig unix.Signal) (ended bool, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		return false, err
	}
	if errors.Is(serr, unix.ESRCH) {
		return true, nil
	}
	return false, serr
}

// waitPidfd returns once the process has exited (a pidfd turns readable
// then) or ctx has ended.
func waitPidfd(ctx context.Context, f *os.File) error {
	exited := func(fd uintptr) bool {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		return err == nil && n > 0
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	if f.SetReadDeadline(time.Time{}) != nil {
		// Not in the poller (should not happen on Linux ≥ 5.3): poll.
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			done := false
			if err := rc.Control(func(fd uintptr) { done = exited(fd) }); err != nil {
				return err
			}
			if done {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
	}
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Read(exited) // calls exited again each time the fd turns readable
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
