package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
)

// errRetired is returned by report when the control plane no longer wants
// this instance (the process was deleted or started elsewhere).
var errRetired = errors.New("retired by the control plane")

var httpClient = &http.Client{Timeout: 10 * time.Second}

// report registers with the control plane, then sends heartbeats with usage
// until ctx ends. When the control plane is unreachable it keeps trying, so
// a restarted control plane finds the process again.
func (rt *Runtime) report(ctx context.Context) error {
	reg := cpapi.Register{App: rt.cfg.App, PID: rt.cfg.PID, Instance: rt.cfg.Instance, Address: rt.addr}
	registered := false
	lastContact := time.Now()
	tick := time.NewTicker(rt.cfg.Heartbeat)
	defer tick.Stop()
	for {
		var err error
		if !registered {
			err = rt.post(ctx, cpapi.PathRegister, reg, nil)
			registered = err == nil
			if registered {
				rt.log.Debug("registered with the control plane")
			}
		} else {
			hb := cpapi.Heartbeat{App: rt.cfg.App, PID: rt.cfg.PID, Instance: rt.cfg.Instance,
				Usage: rt.usage(), IdleNanos: int64(rt.idleFor())}
			var reply cpapi.HeartbeatReply
			err = rt.post(ctx, cpapi.PathHeartbeat, hb, &reply)
			if errors.Is(err, errUnknownInstance) {
				registered = false // the control plane lost us: register again now
				continue
			}
		}
		if errors.Is(err, errRetired) {
			return err
		}
		if err == nil {
			lastContact = time.Now()
		} else if ctx.Err() == nil {
			rt.log.Debug("control plane unreachable", "err", err)
			if time.Since(lastContact) > rt.cfg.OrphanTimeout {
				return fmt.Errorf("%w for %s", errOrphaned, rt.cfg.OrphanTimeout)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

var errUnknownInstance = errors.New("unknown to the control plane")

// errOrphaned ends a runtime whose control plane stayed away: it swaps
// itself out, so a control plane that comes back restores it.
var errOrphaned = errors.New("control plane unreachable")

func (rt *Runtime) post(ctx context.Context, path string, body, reply any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return rt.do(ctx, path, "application/json", b, reply)
}

// postRaw posts raw bytes to the internal API.
func (rt *Runtime) postRaw(ctx context.Context, path string, data []byte) error {
	return rt.do(ctx, path, "application/octet-stream", data, nil)
}

func (rt *Runtime) do(ctx context.Context, path, contentType string, b []byte, reply any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(rt.cfg.ControlPlane, "/")+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+rt.cfg.Secret)
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil
	case http.StatusOK:
		if reply != nil {
			return json.NewDecoder(resp.Body).Decode(reply)
		}
		return nil
	case http.StatusGone:
		return errRetired
	}
	var body struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case json.Unmarshal(raw, &body) == nil && body.Error != "":
		return errs.New(errs.ParseCode(body.Code), body.Error)
	case resp.StatusCode == http.StatusNotFound:
		return errUnknownInstance // a bare 404: register again
	default:
		return fmt.Errorf("control plane %s: %s: %s", path, resp.Status, bytes.TrimSpace(raw))
	}
}
