package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Status is the platform at a glance, as one control-plane replica sees it
// (GET /v1/status). An application's key sees the counts of its own
// application only.
type Status struct {
	Version string `json:"version"`
	// Replica is the replica that answered.
	Replica  string    `json:"replica"`
	Replicas []Replica `json:"replicas"`
	Apps     int       `json:"apps"`
	// Processes counts the processes by status.
	Processes      map[string]int `json:"processes"`
	TotalProcesses int            `json:"total_processes"`
	MetadataStore  StoreHealth    `json:"metadata_store"`
	SwapStore      StoreHealth    `json:"swap_store"`
}

// Healthy reports whether both stores answered.
func (s Status) Healthy() bool { return s.MetadataStore.Healthy && s.SwapStore.Healthy }

// Replica is a control-plane replica's record.
type Replica struct {
	ID  string `json:"id"`
	URL string `json:"url"`
	// Live is false once its lease expired: the others take its processes over.
	Live    bool      `json:"live"`
	Started time.Time `json:"started"`
	Expires time.Time `json:"expires"`
}

// StoreHealth is the outcome of one cheap read of a store.
type StoreHealth struct {
	// Configured is false for a control plane that runs without a swap store.
	Configured   bool   `json:"configured"`
	Healthy      bool   `json:"healthy"`
	LatencyNanos int64  `json:"latency_ns"`
	Error        string `json:"error,omitempty"`
}

// Status returns the platform's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Event is one thing that happened to an application or a process on a
// control-plane replica (see GET /v1/events).
type Event struct {
	Seq           uint64    `json:"seq"`
	Time          time.Time `json:"time"`
	Type          string    `json:"type"` // e.g. process.swapped_out
	App           string    `json:"app"`
	PID           string    `json:"pid,omitempty"`
	Replica       string    `json:"replica"`
	Generation    uint64    `json:"generation,omitempty"`
	Status        string    `json:"status,omitempty"`
	Bytes         int64     `json:"bytes,omitempty"`
	DurationNanos int64     `json:"duration_ns,omitempty"`
	Reason        string    `json:"reason,omitempty"`
}

// Events returns the recent events the replica keeps, oldest first: of app
// ("" for every app the key may see), after sequence number since.
func (c *Client) Events(ctx context.Context, app string, since uint64) ([]Event, error) {
	q := url.Values{}
	if app != "" {
		q.Set("app", app)
	}
	if since > 0 {
		q.Set("since", strconv.FormatUint(since, 10))
	}
	path := "/v1/events"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Events []Event `json:"events"`
	}
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out.Events, err
}
