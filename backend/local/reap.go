package local

import (
	"context"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// awaitExit returns once the child cmd runs has exited, without holding an
// OS thread meanwhile: it waits on a pidfd in the runtime's poller, so that
// cmd.Wait, called next, reaps at once. (cmd.Wait alone blocks a thread in
// waitid for the child's whole life: a thousand processes cost the control
// plane a thousand threads.) Until cmd.Wait reaps it the pid stays the
// child's, so the pidfd cannot name another process. If no pidfd can be
// had, it returns at once and cmd.Wait waits as before.
func awaitExit(cmd *exec.Cmd) {
	fd, err := unix.PidfdOpen(cmd.Process.Pid, unix.O_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	_ = waitPidfd(context.Background(), f)
}
