package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/proclog"
)

// LogLine is one line of a process's log: what it wrote to stdout or
// stderr (or the SDK's logger), with the time its runtime read it.
// Stream "praas" marks lines the platform added, such as a count of lines
// dropped.
type LogLine = proclog.Line

// LogsOptions selects the lines Logs returns.
type LogsOptions struct {
	// Since, if set, skips lines older than it.
	Since time.Time
	// SinceAgo, if positive, skips lines older than that long before the
	// control plane answers (Since wins if both are set).
	SinceAgo time.Duration
	// Tail, if positive, returns only the last Tail lines of the history.
	Tail int
	// Follow keeps the call open after the history, passing new lines as
	// the process writes them (across its swaps), until ctx ends or fn
	// returns an error.
	Follow bool
}

// Logs reads the log of process app/pid, calling fn with every line in
// order. It returns fn's error, if any; with Follow, nil once ctx ends.
func (c *Client) Logs(ctx context.Context, app, pid string, opts LogsOptions, fn func(LogLine) error) error {
	q := url.Values{}
	switch {
	case !opts.Since.IsZero():
		q.Set("since", opts.Since.Format(time.RFC3339Nano))
	case opts.SinceAgo > 0:
		q.Set("since", opts.SinceAgo.String())
	}
	if opts.Tail > 0 {
		q.Set("tail", strconv.Itoa(opts.Tail))
	}
	if opts.Follow {
		q.Set("follow", "true")
	}
	path := "/v1/apps/" + esc(app) + "/processes/" + esc(pid) + "/logs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		if opts.Follow && ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("control plane %s: %w: %w", c.endpoint, errs.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8*proclog.MaxLine)
	for sc.Scan() {
		var l LogLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("log of %s/%s: bad line %q: %w", app, pid, sc.Bytes(), err)
		}
		if err := fn(l); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && !(opts.Follow && ctx.Err() != nil) {
		return fmt.Errorf("log of %s/%s: %w", app, pid, err)
	}
	return nil
}
