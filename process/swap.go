package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
)

// capture takes a copy of the durable state that is one cut through it:
// the state map, the unread mailbox, the trigger buffers and the highest
// backup-queue sequence consumed, as they were at a single instant. Every
// mutation of one of them is atomic under that structure's own lock (the
// sequence moves under both the trigger and the mailbox lock, with the
// message it consumes), so holding all three at once (in the lock order
// noted in state.go) sees each mutation either wholly or not at all, and a
// function's Recv followed by SetState is never half in the copy. The
// copies are shallow (values are never modified in place: SetState takes
// ownership, State's result is read-only) and quick; the mutations' hot
// paths take no lock beyond their own.
func (rt *Runtime) capture() *snapshotData {
	m, _ := rt.members.get()
	d := &snapshotData{App: rt.cfg.App, PID: rt.cfg.PID, Epoch: m.Epoch}
	rt.state.mu.RLock() // excludes writers only: State reads go on
	rt.triggers.mu.Lock()
	rt.mailbox.mu.Lock()
	d.Taken = time.Now()
	d.State = maps.Clone(rt.state.m)
	d.Triggers = rt.triggers.snapshotLocked()
	d.Mailbox = rt.mailbox.snapshotLocked()
	d.Queued = rt.mailbox.queued
	rt.mailbox.mu.Unlock()
	rt.triggers.mu.Unlock()
	rt.state.mu.RUnlock()
	return d
}

// swaps reports whether the runtime writes snapshots: to its own swap store
// (no control plane) or through the control plane.
func (rt *Runtime) swaps() bool { return rt.cfg.Swap != nil || rt.cfg.ControlPlane != "" }

// saveSnapshot streams a snapshot into the swap store, then tells the
// control plane if report is set (final: this is the swap-out, the process
// exits next). An orphan's final snapshot goes under the generation's orphan
// key, where a control plane looks for it.
func (rt *Runtime) saveSnapshot(ctx context.Context, final, report bool) error {
	start := time.Now()
	d := rt.capture()
	size := d.size()
	seq := rt.snapSeq.Add(1)
	orphan := final && !report
	if orphan {
		seq = cpapi.OrphanSeq
	}
	key := cpapi.SnapshotKey(rt.cfg.App, rt.cfg.PID, rt.cfg.Generation, seq)
	var err error
	switch {
	case rt.cfg.ControlPlane == "":
		stream := &snapshotStream{d: d}
		err = rt.cfg.Swap.Put(ctx, key, stream, size)
		stream.close()
	case orphan:
		a := rt.orphanPut.Load()
		if a == nil {
			// The swap store lives with the control plane and presigns no
			// URLs: nothing can be written without it.
			rt.log.Warn("no control plane and no pre-issued orphan URL: no final snapshot; changes since the last checkpoint are lost", "key", key)
			return nil
		}
		for range 3 { // no control plane to ask for a fresh grant: the URL is all there is
			if err = rt.putSnapshot(ctx, *a, key, d, size); err == nil || isPermanent(err) || ctx.Err() != nil {
				break
			}
		}
		err = unwrapPermanent(err)
	default:
		req := cpapi.SnapshotAccessRequest{App: rt.cfg.App, PID: rt.cfg.PID, Generation: rt.cfg.Generation,
			Op: cpapi.SnapshotPut, Seq: seq, Size: size}
		err = rt.withAccess(ctx, req, key, func(a cpapi.SnapshotAccess) error {
			return rt.putSnapshot(ctx, a, key, d, size)
		})
	}
	if err != nil {
		return fmt.Errorf("write snapshot %s: %w", key, err)
	}
	rt.log.Info("snapshot written", "key", key, "bytes", size, "final", final, "took", time.Since(start))
	if report && rt.cfg.ControlPlane != "" {
		// Read now, not at capture: a final snapshot follows the drain, so
		// this is the generation's total.
		u := rt.usage()
		rep := cpapi.Snapshot{App: rt.cfg.App, PID: rt.cfg.PID, Generation: rt.cfg.Generation, Key: key, Bytes: size, Final: final, Usage: &u, Queued: d.Queued,
			Metrics: rt.metricsReport()}
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
	var d *snapshotData
	read := func(r io.ReadCloser) error {
		defer r.Close()
		var err error
		size := int64(-1)
		if sb, ok := r.(sizedBody); ok {
			size = sb.size
		}
		cr := &countingReader{r: r}
		d, err = readSnapshotSized(cr, size)
		rt.restoredBytes = cr.n
		return err
	}
	var err error
	if rt.cfg.ControlPlane == "" {
		var r io.ReadCloser
		if r, err = rt.cfg.Swap.Get(ctx, key); err == nil {
			err = read(r)
		}
	} else {
		req := cpapi.SnapshotAccessRequest{App: rt.cfg.App, PID: rt.cfg.PID, Generation: rt.cfg.Generation,
			Op: cpapi.SnapshotGet, Key: key}
		err = rt.withAccess(ctx, req, key, func(a cpapi.SnapshotAccess) error {
			r, err := rt.transfer(ctx, a, nil, 0)
			if err != nil {
				return err
			}
			// Not retried: a snapshot that does not decode is refused whole,
			// and the control plane starts the process anew.
			return permanent(read(r))
		})
	}
	if err != nil {
		return fmt.Errorf("read snapshot %s: %w", key, err)
	}
	if d.App != rt.cfg.App || d.PID != rt.cfg.PID {
		return fmt.Errorf("snapshot %s belongs to %s/%s: %w", key, d.App, d.PID, ErrCorruptSnapshot)
	}
	rt.state.restore(d.State)
	for _, m := range d.Mailbox {
		rt.mailbox.put(m) // acknowledged before the snapshot: no limits
	}
	rt.triggers.pending = d.Triggers
	rt.mailbox.queued = d.Queued // queued messages up to it are in the snapshot: dropped if delivered again
	rt.log.Info("snapshot restored", "key", key, "state_keys", len(d.State), "messages", len(d.Mailbox), "queued", d.Queued, "taken", d.Taken, "took", time.Since(start))
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

// orphanWindow is how long from now this runtime may still write its
// orphan snapshot: its orphan timeout, a heartbeat and its request timeout,
// the drain, and a margin. The control plane's pre-issued orphan URL should
// stay valid that long.
func (rt *Runtime) orphanWindow() time.Duration {
	return rt.cfg.OrphanTimeout + rt.cfg.Heartbeat + rt.http.report.Timeout + rt.cfg.DrainTimeout + goAwayGrace + time.Minute
}

// snapshotClient moves snapshots between the runtime and the swap store (or
// the control plane's streaming route). It has no overall timeout: a
// snapshot may be large, and the caller's context bounds the transfer.
var snapshotClient = &http.Client{}

// withAccess asks the control plane for the access req describes (to key)
// and runs do with it. A replica that does not answer, a refusal the
// control plane calls temporary, or a transfer that broke off make it try
// again, with the next replica and a fresh grant, until ctx ends; a refusal
// or a permanent error of do ends it.
func (rt *Runtime) withAccess(ctx context.Context, req cpapi.SnapshotAccessRequest, key string, do func(cpapi.SnapshotAccess) error) error {
	backoff := 50 * time.Millisecond
	for {
		var a cpapi.SnapshotAccess
		err := rt.post(ctx, cpapi.PathSnapshotAccess, req, &a)
		var apiErr *cpError
		var netErr *url.Error
		switch {
		case err == nil:
			if err = do(a); err == nil || isPermanent(err) {
				return unwrapPermanent(err)
			}
		case errors.Is(err, errRetired):
			return err
		case errors.As(err, &apiErr):
			if errs.CodeOf(err) != errs.Unavailable {
				return err
			}
		case errors.As(err, &netErr):
			rt.cp.failover()
		}
		if ctx.Err() != nil {
			return err
		}
		rt.log.Debug("snapshot transfer: trying again", "op", req.Op, "key", key, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// putSnapshot streams d (size bytes) with the PUT that a grants for key.
func (rt *Runtime) putSnapshot(ctx context.Context, a cpapi.SnapshotAccess, key string, d *snapshotData, size int64) error {
	if a.Key != key || a.Method != http.MethodPut {
		return permanent(fmt.Errorf("the control plane granted %s of %q, not PUT of %q", a.Method, a.Key, key))
	}
	stream := &snapshotStream{d: d}
	body, err := rt.transfer(ctx, a, stream.reader(), size)
	stream.close()
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	return body.Close()
}

// transfer makes the request a grants and returns the answer's body. A PUT
// sends body, exactly size bytes, with Content-Length (presigned S3 URLs
// take no chunked uploads). Failures worth a new grant are returned as
// they are, the others as permanent.
func (rt *Runtime) transfer(ctx context.Context, a cpapi.SnapshotAccess, body io.Reader, size int64) (io.ReadCloser, error) {
	if a.Method != http.MethodPut && a.Method != http.MethodGet {
		return nil, permanent(fmt.Errorf("snapshot access with method %q", a.Method))
	}
	if a.Method == http.MethodGet || size == 0 {
		body = nil
	}
	req, err := http.NewRequestWithContext(ctx, a.Method, a.URL, body)
	if err != nil {
		return nil, permanent(err)
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range a.Headers {
		req.Header.Set(k, v)
	}
	if a.Auth {
		rt.authorize(req)
	}
	resp, err := rt.http.snapshot.Do(req)
	if err != nil {
		// The error names the URL, whose query may hold a signature.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = redactQuery(ue.URL)
		}
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return sizedBody{resp.Body, resp.ContentLength}, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	err = fmt.Errorf("%s %s: %s: %s", a.Method, redactQuery(a.URL), resp.Status, bytes.TrimSpace(raw))
	switch {
	case resp.StatusCode == http.StatusGone && a.Auth:
		return nil, permanent(errRetired)
	case resp.StatusCode == http.StatusNotFound:
		return nil, permanent(fmt.Errorf("%w: %w", errs.ErrNotFound, err))
	case resp.StatusCode >= 500:
		return nil, err
	}
	return nil, permanent(err)
}

// sizedBody is a response body with its length (-1 if not known), so the
// snapshot decoder can trust field lengths that fit in it.
type sizedBody struct {
	io.ReadCloser
	size int64
}

// redactQuery drops the query of a URL shown in an error or a log.
func redactQuery(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	return u.String()
}

// permanentError is a failure of a transfer that a new grant would not cure.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// unwrapPermanent returns the error a permanentError wraps.
func unwrapPermanent(err error) error {
	var p *permanentError
	if errors.As(err, &p) {
		return p.err
	}
	return err
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

func (s *snapshotStream) Read(p []byte) (int, error) { return s.reader().Read(p) }

// reader starts the encoder behind a pipe and returns the pipe's end. A
// caller that hands it to another goroutine (an HTTP transport, which may
// still read after the response came) may call close meanwhile.
func (s *snapshotStream) reader() io.Reader {
	if s.pr == nil {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeSnapshot(pw, s.d)) }()
		s.pr = pr
	}
	return s.pr
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

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
