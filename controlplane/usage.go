package controlplane

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net/http"
	"sort"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// Usage for billing (docs/observability.md, "Usage and billing"). A
// process's record holds its usage since creation; the time buckets of the
// metadata store hold what each write of the record added, by when it was
// written, so that a window can be answered. Every write of a record that
// changes its usage goes through updateRecord or writeRecord, which add the
// difference between the record as read and as stored to the current
// bucket once the compare-and-set succeeded: the buckets of a process add
// up to its record (up to a crash between the two writes).

const (
	// DefaultUsageBucket is Config.UsageBucket's default.
	DefaultUsageBucket = time.Minute
	// DefaultUsageRetention is Config.UsageRetention's default: a month of
	// 31 days, so that a monthly bill can be drawn from the buckets.
	DefaultUsageRetention = 31 * 24 * time.Hour
	// maxSwapSlices bounds the bucket writes that account for one swap
	// period: a period of many buckets is cut into this many slices, each
	// written to the bucket it starts in.
	maxSwapSlices = 64
)

// updateRecord is store.UpdateProcess plus the usage bookkeeping: swap
// periods (trackSwap) and the buckets (addUsage).
func (s *Server) updateRecord(ctx context.Context, app, pid string, change func(*store.Process) error) (store.Process, error) {
	var before store.Process
	stored, err := store.UpdateProcess(ctx, s.cfg.Metadata, app, pid, func(p *store.Process) error {
		before = *p
		if err := change(p); err != nil {
			return err
		}
		trackSwap(p, time.Now())
		return nil
	})
	if err == nil {
		s.addUsage(ctx, before, stored)
	}
	return stored, err
}

// writeRecord writes rec, which the caller read as before and changed, with
// a compare-and-set, as Metadata.UpdateProcess, plus the usage bookkeeping.
func (s *Server) writeRecord(ctx context.Context, before, rec store.Process) (store.Process, error) {
	trackSwap(&rec, time.Now())
	stored, err := s.cfg.Metadata.UpdateProcess(ctx, rec)
	if err == nil {
		s.addUsage(ctx, before, stored)
	}
	return stored, err
}

// trackSwap opens a swap period when p becomes swapped and closes it,
// adding its snapshot's byte-seconds to p's usage, when p stops being so.
func trackSwap(p *store.Process, now time.Time) {
	swapped := p.Status == store.StatusSwapped
	switch {
	case swapped && p.SwappedAt.IsZero():
		p.SwappedAt = now
	case !swapped && !p.SwappedAt.IsZero():
		p.Usage.SwapByteSeconds += store.ByteSeconds(p.SnapshotBytes, now.Sub(p.SwappedAt))
		p.SwappedAt = time.Time{}
	}
}

// addUsage records in the buckets what the write of a record from before to
// after added: the reported counters in the current bucket, a swap period
// that ended across the buckets it lasted.
func (s *Server) addUsage(ctx context.Context, before, after store.Process) {
	now := time.Now()
	delta := after.Usage.Since(before.Usage)
	swap := delta.SwapByteSeconds
	delta.SwapByteSeconds = 0 // spread over the period below, not dropped at its end
	if delta != (store.Usage{}) {
		s.addBucket(ctx, after.App, after.PID, now, delta)
	}
	if swap > 0 && !before.SwappedAt.IsZero() {
		s.addSwapPeriod(ctx, after.App, after.PID, swap, before.SwappedAt, now)
	}
}

// addSwapPeriod spreads the byte-seconds of a swap period from from to to
// over its buckets, in proportion to time, within the retention.
func (s *Server) addSwapPeriod(ctx context.Context, app, pid string, total uint64, from, to time.Time) {
	period := to.Sub(from)
	if period <= 0 {
		s.addBucket(ctx, app, pid, to, store.Usage{SwapByteSeconds: total})
		return
	}
	// Kept from the first whole bucket of the retention, which a prune
	// running meanwhile does not take.
	if kept := s.bucketStart(to.Add(-s.cfg.UsageRetention)).Add(s.cfg.UsageBucket); from.Before(kept) {
		total = share(total, to.Sub(kept), period)
		from, period = kept, to.Sub(kept)
	}
	width := s.cfg.UsageBucket
	step := width * max(1, (period/width+maxSwapSlices-1)/maxSwapSlices)
	left := total
	for start := from; start.Before(to) && left > 0; {
		end := s.bucketStart(start).Add(step)
		bs := share(total, end.Sub(start), period)
		if !end.Before(to) {
			bs = left // the last slice takes the rounding: the slices add up to total
		}
		bs = min(bs, left)
		if bs > 0 {
			s.addBucket(ctx, app, pid, start, store.Usage{SwapByteSeconds: bs})
		}
		left -= bs
		start = end
	}
}

// share is total × part / whole, rounded down; part <= whole.
func share(total uint64, part, whole time.Duration) uint64 {
	if part >= whole {
		return total
	}
	hi, lo := bits.Mul64(total, uint64(part))
	q, _ := bits.Div64(hi, lo, uint64(whole))
	return q
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// bucketStart is the start of the usage bucket holding t.
func (s *Server) bucketStart(t time.Time) time.Time { return t.Truncate(s.cfg.UsageBucket).UTC() }

// addBucket adds delta to the bucket of app/pid holding at. A failure is
// logged, not returned: the record, which the caller wrote, has the usage,
// and the operation that wrote it must not fail for the buckets.
func (s *Server) addBucket(ctx context.Context, app, pid string, at time.Time, delta store.Usage) {
	ctx = context.WithoutCancel(ctx)
	start := s.bucketStart(at)
	if err := s.cfg.Metadata.AddUsage(ctx, app, pid, start, delta); err != nil {
		s.log.Warn("add usage", "app", app, "pid", pid, "bucket", start, "err", err)
	}
	s.pruneUsage(ctx, time.Now())
}

// pruneUsage deletes the buckets past the retention, once per bucket: the
// first write into a new bucket does it, in the background.
func (s *Server) pruneUsage(ctx context.Context, now time.Time) {
	current := s.bucketStart(now).UnixNano()
	last := s.prunedAt.Load()
	if current <= last || !s.prunedAt.CompareAndSwap(last, current) {
		return
	}
	s.goBackground(func(ctx context.Context) {
		if err := s.cfg.Metadata.PruneUsage(ctx, now.Add(-s.cfg.UsageRetention)); err != nil && ctx.Err() == nil {
			s.log.Warn("prune usage", "err", err)
		}
	})
}

// getUsage answers GET /v1/apps/{app}/usage[?since=&until=&pid=]: the
// totals since creation without since and until, a window's buckets with
// them.
func (s *Server) getUsage(w http.ResponseWriter, r *http.Request) {
	now := time.Now().UTC()
	q := r.URL.Query()
	pid := q.Get("pid")
	since, until, windowed, err := s.usageWindow(q.Get("since"), q.Get("until"), now)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	appName := r.PathValue("app")
	app, err := s.cfg.Metadata.GetApp(r.Context(), appName)
	appGone := errors.Is(err, errs.ErrNotFound)
	if err != nil && !(appGone && windowed) {
		writeError(w, s.log, err) // a deleted app's usage is kept, but only windows of it are asked
		return
	}
	var procs []store.Process
	if !appGone {
		if procs, err = s.cfg.Metadata.ListProcesses(r.Context(), appName); err != nil {
			writeError(w, s.log, err)
			return
		}
	}
	out := client.AppUsage{App: appName, BucketSeconds: int64(s.cfg.UsageBucket / time.Second), Windowed: windowed,
		Processes: []client.ProcessUsage{}}
	rows := map[string]*client.ProcessUsage{}
	row := func(pid, status string) *client.ProcessUsage {
		if rows[pid] == nil {
			rows[pid] = &client.ProcessUsage{PID: pid, Status: status}
		}
		return rows[pid]
	}
	for _, p := range procs {
		if pid != "" && p.PID != pid {
			continue
		}
		u := row(p.PID, p.Status)
		if p.Snapshot != "" {
			u.SwapBytesHeld = p.SnapshotBytes
		}
		if !windowed {
			usage := s.freshUsage(p)
			u.Invocations, u.ComputeNanos = usage.Invocations, usage.BusyNanos
			u.BytesIn, u.BytesOut = usage.BytesIn, usage.BytesOut
			u.StateByteSeconds, u.SwapByteSeconds = usage.StateByteSeconds, usage.SwapByteSeconds
		}
		if !p.SwappedAt.IsZero() {
			// The period under way is in no bucket and no total yet.
			from, to := later(p.SwappedAt, since), until
			if to.After(now) || !windowed {
				to = now
			}
			if to.After(from) {
				u.SwapByteSeconds += store.ByteSeconds(p.SnapshotBytes, to.Sub(from))
			}
		}
	}
	if windowed {
		buckets, err := s.cfg.Metadata.ListUsage(r.Context(), appName, pid, since, until)
		if err != nil {
			writeError(w, s.log, err)
			return
		}
		if appGone && len(buckets) == 0 {
			writeError(w, s.log, fmt.Errorf("app %q: %w", appName, errs.ErrNotFound))
			return
		}
		for _, b := range buckets {
			u := row(b.PID, "deleted")
			u.Invocations += b.Usage.Invocations
			u.ComputeNanos += b.Usage.BusyNanos
			u.BytesIn += b.Usage.BytesIn
			u.BytesOut += b.Usage.BytesOut
			u.StateByteSeconds += b.Usage.StateByteSeconds
			u.SwapByteSeconds += b.Usage.SwapByteSeconds
		}
		out.Since, out.Until = since, until
	} else {
		out.Since, out.Until = app.CreatedAt.UTC(), now
	}
	if pid != "" && len(rows) == 0 {
		writeError(w, s.log, fmt.Errorf("process %s/%s: %w", appName, pid, errs.ErrNotFound))
		return
	}
	for _, u := range rows {
		u.Derive()
		out.Totals.Add(u.UsageFigures)
		out.Processes = append(out.Processes, *u)
	}
	sort.Slice(out.Processes, func(i, j int) bool { return out.Processes[i].PID < out.Processes[j].PID })
	writeJSON(w, http.StatusOK, out)
}

// usageWindow parses since and until (RFC 3339; empty: no bound) into the
// window of whole buckets that covers them. Neither given: not windowed.
func (s *Server) usageWindow(sinceText, untilText string, now time.Time) (since, until time.Time, windowed bool, err error) {
	if sinceText == "" && untilText == "" {
		return time.Time{}, now, false, nil
	}
	parse := func(name, text string, otherwise time.Time) (time.Time, error) {
		if text == "" {
			return otherwise, nil
		}
		t, err := time.Parse(time.RFC3339Nano, text)
		if err != nil {
			return t, fmt.Errorf("%w: %s %q is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", errs.ErrInvalidArgument, name, text)
		}
		return t.UTC(), nil
	}
	if since, err = parse("since", sinceText, now.Add(-s.cfg.UsageRetention)); err != nil {
		return
	}
	if until, err = parse("until", untilText, now); err != nil {
		return
	}
	if !since.Before(until) {
		return since, until, true, fmt.Errorf("%w: since (%s) must be before until (%s)", errs.ErrInvalidArgument,
			since.Format(time.RFC3339Nano), until.Format(time.RFC3339Nano))
	}
	since = s.bucketStart(since)
	if end := s.bucketStart(until); end.Before(until) {
		until = end.Add(s.cfg.UsageBucket)
	}
	return since, until, true, nil
}

// freshUsage is p's usage, fresher from its live entry if this replica
// owns it: the record is written every few seconds only.
func (s *Server) freshUsage(p store.Process) store.Usage {
	l := s.lookupLive(p.App, p.PID)
	if l == nil || l.gen != p.Generation {
		return p.Usage
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return p.Usage.Max(l.usage)
}
