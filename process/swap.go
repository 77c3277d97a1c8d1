package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"time"

	"github.com/praas-dev/praas/internal/cpapi"
)

// capture takes a consistent-enough copy of the durable state: a shallow
// copy of the state map (values are never modified in place: SetState takes
// ownership, State's result is read-only), the unread mailbox and the
// trigger buffers.
func (rt *Runtime) capture() *snapshotData {
	rt.state.mu.RLock()
	st := maps.Clone(rt.state.m)
	rt.state.mu.RUnlock()
	m, _ := rt.members.get()
	return &snapshotData{
		App: rt.cfg.App, PID: rt.cfg.PID, Epoch: m.Epoch, Taken: time.Now(),
		State: st, Mailbox: rt.mailbox.snapshot(), Triggers: rt.triggers.snapshot(),
	}
}

// saveSnapshot streams a snapshot into the swap store, then tells the
// control plane if report is set (final: this is the swap-out, the process
// exits next). An orphan's final snapshot goes under the generation's orphan
// key, where a control plane looks for it.
func (rt *Runtime) saveSnapshot(ctx context.Context, final, report bool) error {
	start := time.Now()
	d := rt.capture()
	size := d.size()
	seq := rt.snapSeq.Add(1)
	if final && !report {
		seq = cpapi.OrphanSeq
	}
	key := cpapi.SnapshotKey(rt.cfg.App, rt.cfg.PID, rt.cfg.Generation, seq)
	stream := &snapshotStream{d: d}
	err := rt.cfg.Swap.Put(ctx, key, stream, size)
	stream.close()
	if err != nil {
		return fmt.Errorf("write snapshot %s: %w", key, err)
	}
	rt.log.Info("snapshot written", "key", key, "bytes", size, "final", final, "took", time.Since(start))
	if report && rt.cfg.ControlPlane != "" {
		rep := cpapi.Snapshot{App: rt.cfg.App, PID: rt.cfg.PID, Generation: rt.cfg.Generation, Key: key, Bytes: size, Final: final}
		if err := rt.reportSnapshot(ctx, rep); err != nil {
			if errors.Is(err, errRetired) {
				// A newer generation runs: this snapshot must never be
				// restored, and the control plane has dropped it.
				return fmt.Errorf("snapshot %s refused: %w", key, err)
			}
			return fmt.Errorf("report snapshot: %w", err)
		}
	}
	return nil
}

// restore loads the snapshot at key into the (still empty) process.
func (rt *Runtime) restore(ctx context.Context, key string) error {
	start := time.Now()
	r, err := rt.cfg.Swap.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read snapshot %s: %w", key, err)
	}
	defer r.Close()
	d, err := readSnapshot(r)
	if err != nil {
		return fmt.Errorf("read snapshot %s: %w", key, err)
	}
	if d.App != rt.cfg.App || d.PID != rt.cfg.PID {
		return fmt.Errorf("snapshot %s belongs to %s/%s: %w", key, d.App, d.PID, ErrCorruptSnapshot)
	}
	rt.state.m = d.State
	for _, m := range d.Mailbox {
		rt.mailbox.put(m)
	}
	rt.triggers.pending = d.Triggers
	rt.log.Info("snapshot restored", "key", key, "state_keys", len(d.State), "messages", len(d.Mailbox), "taken", d.Taken, "took", time.Since(start))
	return nil
}

// checkpointLoop writes a snapshot every interval while anything changed,
// bounding what a crash loses.
func (rt *Runtime) checkpointLoop(ctx context.Context) {
	t := time.NewTicker(rt.cfg.CheckpointInterval)
	defer t.Stop()
	saved := rt.mutations.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := rt.mutations.Load()
		if now == saved {
			continue
		}
		if err := rt.saveSnapshot(ctx, false, true); err != nil {
			if errors.Is(err, errRetired) {
				rt.log.Warn("checkpoints stop: a newer generation of this process runs", "err", err)
				return
			}
			if ctx.Err() == nil {
				rt.log.Warn("checkpoint failed", "err", err)
			}
			continue
		}
		saved = now
	}
}

// snapshotStream is a snapshot as a byte stream for Swap.Put. A store that
// copies with io.WriterTo (the file store) gets the encoder writing straight
// into its file; one that reads (S3) gets the bytes through a pipe.
type snapshotStream struct {
	d  *snapshotData
	pr *io.PipeReader
}

func (s *snapshotStream) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	err := writeSnapshot(cw, s.d)
	return cw.n, err
}

func (s *snapshotStream) Read(p []byte) (int, error) {
	if s.pr == nil {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeSnapshot(pw, s.d)) }()
		s.pr = pr
	}
	return s.pr.Read(p)
}

// close stops the encoder if the store gave up reading early.
func (s *snapshotStream) close() {
	if s.pr != nil {
		s.pr.CloseWithError(io.ErrClosedPipe)
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
