//go:build linux

package proclog

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Capture points this OS process's stdout and stderr (file descriptors 1
// and 2, which children inherit too) at pipes and reads them: every line
// is stamped, written in the text format to the original stdout (the raw
// sink: the backend's output file, or the container log), and appended to
// Ring. A fatal error of the Go runtime is also written to the original
// stderr as it happens (debug.SetCrashOutput), since the reader dies with
// the process.
type Capture struct {
	// Ring receives every line.
	Ring *Ring

	raw, crash *os.File // the original stdout and stderr
	// mu makes stamping, the raw write and the ring append of a batch one
	// step, so the lines of both streams are in the ring in time order.
	mu        sync.Mutex
	readers   []*os.File
	done      sync.WaitGroup
	closeOnce sync.Once
}

// StartCapture starts capturing into ring. Only one capture may run in an
// OS process; Close ends it.
func StartCapture(ring *Ring) (*Capture, error) {
	c := &Capture{Ring: ring}
	var err error
	if c.raw, err = dupCloexec(1, "stdout"); err != nil {
		return nil, err
	}
	if c.crash, err = dupCloexec(2, "stderr"); err != nil {
		c.raw.Close()
		return nil, err
	}
	for _, s := range []struct {
		fd     int
		stream string
	}{{1, StreamStdout}, {2, StreamStderr}} {
		r, err := c.redirect(s.fd)
		if err != nil {
			c.Close(0)
			return nil, fmt.Errorf("capture %s: %w", s.stream, err)
		}
		c.readers = append(c.readers, r)
		c.done.Add(1)
		go c.read(r, s.stream)
	}
	if err := debug.SetCrashOutput(c.crash, debug.CrashOptions{}); err != nil {
		c.Close(0)
		return nil, fmt.Errorf("capture: crash output: %w", err)
	}
	return c, nil
}

func dupCloexec(fd int, name string) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("capture: dup %s: %w", name, err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// redirect makes fd the write end of a new pipe and returns its read end.
func (c *Capture) redirect(fd int) (*os.File, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	// Only the read end is non-blocking (Go's poller reads it, and Close
	// interrupts a read); writers, children among them, block as usual.
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, err
	}
	err := unix.Dup3(p[1], fd, 0) // without O_CLOEXEC: children inherit it
	unix.Close(p[1])
	if err != nil {
		unix.Close(p[0])
		return nil, err
	}
	return os.NewFile(uintptr(p[0]), "capture"), nil
}

// readBuf is how much of a pipe one read takes.
const readBuf = 32 << 10

func (c *Capture) read(r *os.File, stream string) {
	defer c.done.Done()
	var batch []Line
	sp := &Splitter{Stream: stream, Emit: func(l Line) { batch = append(batch, l) }}
	buf := make([]byte, readBuf)
	var text []byte
	for {
		n, err := r.Read(buf)
		c.mu.Lock()
		sp.Write(buf[:n])
		if err != nil {
			sp.Flush()
		}
		if len(batch) > 0 {
			text = text[:0]
			for _, l := range batch {
				text = AppendText(text, l)
			}
			c.raw.Write(text) // nowhere to report a failure to
			c.Ring.Append(batch...)
			clear(batch)
			batch = batch[:0]
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Close points stdout and stderr back at the originals, reads what the
// pipes still hold (waiting at most wait for writers that still hold them,
// such as children), and ends the capture.
func (c *Capture) Close(wait time.Duration) {
	c.closeOnce.Do(func() {
		_ = debug.SetCrashOutput(nil, debug.CrashOptions{})
		// Replacing fds 1 and 2 closes our write ends of the pipes.
		if c.raw != nil {
			_ = unix.Dup3(int(c.raw.Fd()), 1, 0)
		}
		if c.crash != nil {
			_ = unix.Dup3(int(c.crash.Fd()), 2, 0)
		}
		done := make(chan struct{})
		go func() { c.done.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(wait):
			for _, r := range c.readers {
				r.Close()
			}
			<-done
		}
		for _, r := range c.readers {
			r.Close()
		}
		if c.raw != nil {
			c.raw.Close()
		}
		if c.crash != nil {
			c.crash.Close()
		}
	})
}
