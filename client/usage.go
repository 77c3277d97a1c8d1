package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// UsageFigures are billed usage in the API's units (see
// docs/observability.md, "Usage and billing"). The integer fields beside
// the float ones (ComputeNanos, StateByteSeconds, SwapByteSeconds) are the
// exact counts the floats are computed from.
type UsageFigures struct {
	Invocations      uint64  `json:"invocations"`
	ComputeSeconds   float64 `json:"compute_seconds"`
	StateGiBSeconds  float64 `json:"state_gib_seconds"`
	BytesIn          uint64  `json:"bytes_in"`
	BytesOut         uint64  `json:"bytes_out"`
	SwapBytesHeld    int64   `json:"swap_bytes_held"`
	SwapGiBSeconds   float64 `json:"swap_gib_seconds"`
	ComputeNanos     uint64  `json:"compute_ns"`
	StateByteSeconds uint64  `json:"state_byte_seconds"`
	SwapByteSeconds  uint64  `json:"swap_byte_seconds"`
}

// gib is the bytes of a GiB.
const gib = 1 << 30

// Add adds v to u, counts and held bytes alike, and recomputes the floats.
func (u *UsageFigures) Add(v UsageFigures) {
	u.Invocations += v.Invocations
	u.BytesIn += v.BytesIn
	u.BytesOut += v.BytesOut
	u.SwapBytesHeld += v.SwapBytesHeld
	u.ComputeNanos += v.ComputeNanos
	u.StateByteSeconds += v.StateByteSeconds
	u.SwapByteSeconds += v.SwapByteSeconds
	u.Derive()
}

// Derive computes the float fields from the exact ones.
func (u *UsageFigures) Derive() {
	u.ComputeSeconds = float64(u.ComputeNanos) / float64(time.Second)
	u.StateGiBSeconds = float64(u.StateByteSeconds) / gib
	u.SwapGiBSeconds = float64(u.SwapByteSeconds) / gib
}

// ProcessUsage is one process's row in an AppUsage.
type ProcessUsage struct {
	PID string `json:"pid"`
	// Status is the process's status now; "deleted" for a process that no
	// longer exists but used something in the window.
	Status string `json:"status"`
	UsageFigures
}

// AppUsage is an application's usage over a window: the answer of
// GET /v1/apps/{app}/usage.
type AppUsage struct {
	App string `json:"app"`
	// Since and Until bound the window the figures cover: the one asked
	// for, widened to whole buckets. Without a window, Since is the app's
	// creation and Until the time of the answer.
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// BucketSeconds is the granularity of windows.
	BucketSeconds int64 `json:"bucket_seconds"`
	// Windowed is false for totals since creation (no since or until asked).
	Windowed  bool           `json:"windowed"`
	Totals    UsageFigures   `json:"totals"`
	Processes []ProcessUsage `json:"processes"`
}

// UsageOptions choose the window and the process of a Usage query. Both
// times zero asks for the totals since each process's creation; either
// set asks for a window (a zero Since starts at the oldest usage kept, a
// zero Until is now).
type UsageOptions struct {
	Since, Until time.Time
	PID          string // only this process
}

// Usage returns what an application's processes used, in total or over a
// window.
func (c *Client) Usage(ctx context.Context, app string, opts UsageOptions) (AppUsage, error) {
	q := url.Values{}
	if !opts.Since.IsZero() {
		q.Set("since", opts.Since.UTC().Format(time.RFC3339Nano))
	}
	if !opts.Until.IsZero() {
		q.Set("until", opts.Until.UTC().Format(time.RFC3339Nano))
	}
	if opts.PID != "" {
		q.Set("pid", opts.PID)
	}
	path := "/v1/apps/" + esc(app) + "/usage"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out AppUsage
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}
