package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/proclog"
)

// A runtime started by a backend captures its OS process's stdout and
// stderr (see proclog.Capture): every line, stamped, goes to the raw output
// the backend keeps (a file, the pod log) and into a bounded ring, from
// which the runtime ships it to the control plane that owns it. What the
// control plane has not taken stays in the ring; when the ring is full the
// oldest lines go, and the control plane is told how many.

// logShipEvery is the least time between two shipments while lines keep
// coming: lines written meanwhile go in one batch.
const logShipEvery = 250 * time.Millisecond

// logRetry is how long shipping waits after the control plane failed.
const logRetry = time.Second

// Output is the captured output of the OS process a runtime runs in.
type Output struct {
	capture *proclog.Capture
}

// CaptureOutput starts capturing this OS process's output for a runtime a
// backend started (cfg names a control plane): cfg.Logs gets the ring of
// captured lines, and cfg.Logger, if unset, writes to the captured stderr
// without a time of its own (lines are stamped). Without a control plane,
// or if capture fails (logged), it returns nil and the output stays as it
// is. Call it before starting children whose output belongs to the
// process; Close ends it.
func CaptureOutput(cfg *Config) *Output {
	if cfg.ControlPlane == "" {
		return nil
	}
	ring := proclog.NewRing(proclog.DefaultRingLines, proclog.DefaultRingBytes)
	c, err := proclog.StartCapture(ring)
	if err != nil {
		slog.Default().Warn("process output is not captured: the control plane does not get it", "err", err)
		return nil
	}
	cfg.Logs = ring
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{ReplaceAttr: dropTime}))
	}
	return &Output{capture: c}
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// logCloseWait bounds how long Close waits for children that still hold
// the process's stdout or stderr.
const logCloseWait = time.Second

// logFlushTimeout bounds the final shipment of lines at exit.
const logFlushTimeout = 5 * time.Second

// Close ends the capture (stdout and stderr go straight to the raw output
// again) and ships the lines rt has not shipped yet. rt may be nil (it
// failed to start). A nil Output does nothing.
func (o *Output) Close(ctx context.Context, rt *Runtime) {
	if o == nil {
		return
	}
	if o.capture != nil {
		o.capture.Close(logCloseWait)
	}
	if rt == nil || rt.cfg.Logs == nil || rt.cfg.ControlPlane == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), logFlushTimeout)
	defer cancel()
	if err := rt.sendLogs(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "praas: the last log lines did not reach the control plane: %v\n", err)
	}
}

// shipLogs sends new lines to the control plane until ctx ends, at most
// every logShipEvery.
func (rt *Runtime) shipLogs(ctx context.Context) {
	ring := rt.cfg.Logs
	for {
		changed := ring.Changed()
		if err := rt.sendLogs(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errRetired) {
				return // nobody takes them: the raw output keeps them
			}
			// Lines stay in the ring; no log line about it, which would
			// be one more line to ship.
			select {
			case <-ctx.Done():
				return
			case <-time.After(logRetry):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(logShipEvery):
		}
	}
}

// sendLogs sends every line not sent yet, in batches.
func (rt *Runtime) sendLogs(ctx context.Context) error {
	rt.logMu.Lock()
	defer rt.logMu.Unlock()
	for {
		lines, next, missed := rt.cfg.Logs.Read(rt.logSent, cpapi.MaxLogsBatch, cpapi.MaxLogsBatchBytes)
		if len(lines) == 0 && missed == 0 {
			return nil
		}
		if missed > 0 {
			at := time.Now()
			if len(lines) > 0 {
				at = lines[0].Time
			}
			lines = append([]proclog.Line{proclog.DroppedLine(at, missed)}, lines...)
		}
		msg := cpapi.Logs{App: rt.cfg.App, PID: rt.cfg.PID, Generation: rt.cfg.Generation, Lines: lines}
		err := rt.post(ctx, cpapi.PathLogs, msg, nil)
		var refused *cpError
		if errors.As(err, &refused) {
			switch errs.CodeOf(err) {
			case errs.InvalidArgument, errs.ResourceExhausted, errs.NotFound:
				// The control plane will not take these lines whatever we
				// do: skip them rather than stall the log behind them.
				err = nil
			}
		}
		if err != nil {
			return err
		}
		rt.logSent = next
	}
}
