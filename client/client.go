// Package client is the Go client of praas: control-plane calls over the REST
// API, and data-plane connections that it learns from the control plane and
// then uses directly. A Client is safe for concurrent use.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/tracing"
	"github.com/praas-dev/praas/store"
)

// DefaultEndpoint is where the control plane listens by default.
const DefaultEndpoint = "http://127.0.0.1:8420"

// Response headers of a control-plane invoke that tell where the process is.
const (
	HeaderPID     = "Praas-Pid"
	HeaderAddress = "Praas-Address"
	HeaderToken   = "Praas-Token"
)

// App is an application as the API shows it.
type App struct {
	Name      string    `json:"name"`
	Image     string    `json:"image"`
	Resources Resources `json:"resources"`
	Epoch     uint64    `json:"epoch"`
	CreatedAt time.Time `json:"created_at"`
}

// Resources bound what a process may use (MilliCPU, MemoryBytes); zero
// values mean the backend's default.
type Resources = store.Resources

// CreateOption configures CreateApp or CreateProcess.
type CreateOption func(map[string]any)

// WithResources gives an app's processes (CreateApp), or one process
// (CreateProcess, in place of its app's), these resources; the Kubernetes
// backend sets them as the pod's requests and limits.
func WithResources(r Resources) CreateOption {
	return func(body map[string]any) { body["resources"] = r }
}

// Usage is what a process reported about the work it did.
type Usage = store.Usage

// Process is a process as the API shows it.
type Process struct {
	App      string `json:"app"`
	PID      string `json:"pid"`
	Status   string `json:"status"`
	Address  string `json:"address,omitempty"`
	Token    string `json:"token,omitempty"`
	Handle   string `json:"handle,omitempty"`   // the backend's name for it (local: the OS pid)
	Snapshot string `json:"snapshot,omitempty"` // swap-store key of its last snapshot
	Usage    Usage  `json:"usage"`
	// SnapshotBytes is the size of the snapshot Snapshot names.
	SnapshotBytes int64 `json:"snapshot_bytes,omitempty"`
	// SwappedAt is when the process last became swapped; zero while it is not.
	SwappedAt  time.Time `json:"swapped_at,omitzero"`
	Resources  Resources `json:"resources"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	LastActive time.Time `json:"last_active"`
	// Revision grows by one on every write of the record.
	Revision uint64 `json:"revision"`
	// Generation counts the activations of the process: every start or
	// restore makes a new one, and reports of older ones are refused.
	Generation uint64 `json:"generation"`
	// Owner is the control-plane replica that runs the process (empty while
	// nobody does: swapped, failed).
	Owner string `json:"owner,omitempty"`
	// StateBytes (keys and values in its state), MailboxMessages (unread)
	// and MailboxBytes are the running process's, from its latest
	// heartbeat: set while it is active, by the replica that owns it.
	StateBytes      *int64 `json:"state_bytes,omitempty"`
	MailboxMessages *int64 `json:"mailbox_messages,omitempty"`
	MailboxBytes    *int64 `json:"mailbox_bytes,omitempty"`
}

// Client talks to one control plane.
type Client struct {
	endpoint string
	token    string // API key sent as a Bearer credential, if any
	http     *http.Client

	mu    sync.Mutex
	conns map[string]*DataConn // app/pid → data-plane connection

	dataTLS dataTLS // how data-plane connections are dialed; see tls.go

	waitWhenFull time.Duration // see WithWaitWhenFull

	// tp and tracer make the spans of invocations and sends (nil: off);
	// see WithTracerProvider.
	tp     trace.TracerProvider
	tracer *tracing.Tracer
}

// Option configures a Client.
type Option func(*Client)

// WithToken makes the client authenticate with an API key (the admin's or
// an application's), sent as "Authorization: Bearer TOKEN".
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithWaitWhenFull makes Invoke and SendMessage wait, for up to max in
// all, while the process refuses the call because it is at a limit
// (errs.ResourceExhausted: its mailbox is full, it has too many
// invocations in flight): they try again with a growing pause. Without it
// such a refusal is returned at once. Refused calls did not run, so this
// never runs a call twice.
func WithWaitWhenFull(max time.Duration) Option { return func(c *Client) { c.waitWhenFull = max } }

// WithHTTPClient makes the client use hc, e.g. one that trusts a private CA.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithTracerProvider makes the client trace its invocations and messages
// with tp (for instance otel.GetTracerProvider()): each gets a span, a
// child of the span in the call's context, and its trace context goes to
// the control plane (traceparent header) or the process (in the frame), so
// the spans praas makes continue the caller's trace. Without it the
// client makes no spans and sends no trace context.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *Client) { c.tp, c.tracer = tp, tracing.New(tp) }
}

// New returns a client of the control plane at endpoint (DefaultEndpoint if empty).
func New(endpoint string, opts ...Option) *Client {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	c := &Client{
		endpoint: strings.TrimRight(endpoint, "/"),
		http:     &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		conns:    make(map[string]*DataConn),
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// authorize adds the client's credential to req.
func (c *Client) authorize(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
}

// Close closes the data-plane connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, dc := range c.conns {
		dc.Close()
		delete(c.conns, k)
	}
	return nil
}

// APIError is an error answered by the control plane. It unwraps to the
// errs sentinel of its code, so errors.Is(err, errs.ErrNotFound) works.
type APIError struct {
	Status  int
	Code    errs.Code
	Message string
}

func (e *APIError) Error() string { return e.Message }

// Unwrap returns the sentinel of the code.
func (e *APIError) Unwrap() error { return errs.New(e.Code, e.Message) }

// Is makes a 413 match errs.ErrTooLarge: one payload over its size limit,
// unlike a quota (429), which frees up.
func (e *APIError) Is(target error) bool {
	return target == errs.ErrTooLarge && e.Status == http.StatusRequestEntityTooLarge
}

func decodeError(resp *http.Response) error {
	var body struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(raw, &body) != nil || body.Error == "" {
		body.Error = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(raw))
	}
	code := errs.ParseCode(body.Code)
	if code == errs.Unknown {
		code = errs.FromHTTPStatus(resp.StatusCode)
	}
	return &APIError{Status: resp.StatusCode, Code: code, Message: body.Error}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("control plane %s: %w: %w", c.endpoint, errs.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return nil
}

func esc(s string) string { return url.PathEscape(s) }

// CreateApp creates an application; image "" selects the builtin image.
func (c *Client) CreateApp(ctx context.Context, name, image string, opts ...CreateOption) (App, error) {
	body := map[string]any{"name": name, "image": image}
	for _, o := range opts {
		o(body)
	}
	var app App
	err := c.do(ctx, http.MethodPost, "/v1/apps", body, &app)
	return app, err
}

// ListApps lists applications.
func (c *Client) ListApps(ctx context.Context) ([]App, error) {
	var out struct {
		Apps []App `json:"apps"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/apps", nil, &out)
	return out.Apps, err
}

// GetApp returns one application.
func (c *Client) GetApp(ctx context.Context, name string) (App, error) {
	var app App
	err := c.do(ctx, http.MethodGet, "/v1/apps/"+esc(name), nil, &app)
	return app, err
}

// DeleteApp deletes an application and all its processes.
func (c *Client) DeleteApp(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/apps/"+esc(name), nil, nil)
}

// CreateProcess creates (or brings back) a process; pid "" lets the control
// plane choose. It returns once the process is active.
func (c *Client) CreateProcess(ctx context.Context, app, pid string, opts ...CreateOption) (Process, error) {
	body := map[string]any{"pid": pid}
	for _, o := range opts {
		o(body)
	}
	var p Process
	err := c.do(ctx, http.MethodPost, "/v1/apps/"+esc(app)+"/processes", body, &p)
	return p, err
}

// ListProcesses lists an application's processes with their status.
func (c *Client) ListProcesses(ctx context.Context, app string) ([]Process, error) {
	var out struct {
		Processes []Process `json:"processes"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/apps/"+esc(app)+"/processes", nil, &out)
	return out.Processes, err
}

// GetProcess returns one process, with its data-plane address and token while active.
func (c *Client) GetProcess(ctx context.Context, app, pid string) (Process, error) {
	var p Process
	err := c.do(ctx, http.MethodGet, "/v1/apps/"+esc(app)+"/processes/"+esc(pid), nil, &p)
	return p, err
}

// DeleteProcess stops a process and removes it and its state.
func (c *Client) DeleteProcess(ctx context.Context, app, pid string) error {
	return c.do(ctx, http.MethodDelete, "/v1/apps/"+esc(app)+"/processes/"+esc(pid), nil, nil)
}

// SwapProcess swaps a process out to storage.
func (c *Client) SwapProcess(ctx context.Context, app, pid string) (Process, error) {
	var p Process
	err := c.do(ctx, http.MethodPost, "/v1/apps/"+esc(app)+"/processes/"+esc(pid)+"/swap", nil, &p)
	return p, err
}

// SendMessage puts a message into a process's mailbox through the control
// plane. A message refused because the mailbox is full
// (errs.ResourceExhausted) is not in it; see WithWaitWhenFull.
func (c *Client) SendMessage(ctx context.Context, app, pid, key string, data []byte) error {
	return c.whileFull(ctx, func() error { return c.sendMessage(ctx, app, pid, key, data) })
}

func (c *Client) sendMessage(ctx context.Context, app, pid, key string, data []byte) (err error) {
	if c.tracer != nil {
		var span trace.Span
		ctx, span = c.tracer.StartSend(ctx, trace.SpanKindProducer, pid, key)
		defer func() { tracing.End(span, err) }()
	}
	path := "/v1/apps/" + esc(app) + "/processes/" + esc(pid) + "/messages/" + esc(key)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	c.authorize(req)
	if c.tracer != nil {
		tracing.Inject(ctx, req.Header)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("control plane %s: %w: %w", c.endpoint, errs.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	return nil
}

// InvokeResult is a control-plane invoke's output and where it ran.
type InvokeResult struct {
	Output  []byte
	PID     string
	Address string
	Token   string
}

// InvokeControlPlane invokes function in process pid of app through the
// control plane; pid "" lets it pick (or create) a process. Its arguments
// are in the order of Invoke's.
func (c *Client) InvokeControlPlane(ctx context.Context, app, pid, function string, input []byte) (res InvokeResult, err error) {
	if c.tracer != nil {
		var span trace.Span
		ctx, span = c.tracer.StartInvoke(ctx, trace.SpanKindClient, app, pid, function)
		defer func() { tracing.End(span, err) }()
	}
	path := "/v1/apps/" + esc(app) + "/invoke/" + esc(function)
	if pid != "" {
		path += "?pid=" + url.QueryEscape(pid)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint+path, bytes.NewReader(input))
	if err != nil {
		return InvokeResult{}, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	c.authorize(req)
	if c.tracer != nil {
		tracing.Inject(ctx, req.Header)
	}
	// A request written whole may have run: without an answer its outcome
	// is unknown. One not written whole did not run (the control plane
	// reads the whole body first).
	var wrote atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) { wrote.Store(i.Err == nil) },
	}))
	resp, err := c.http.Do(req)
	if err != nil {
		if wrote.Load() {
			return InvokeResult{}, fmt.Errorf("control plane %s: %w: no answer to the invocation: %w", c.endpoint, errs.ErrOutcomeUnknown, err)
		}
		return InvokeResult{}, fmt.Errorf("control plane %s: %w: %w: %w", c.endpoint, errs.ErrUnavailable, ErrNotSent, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return InvokeResult{}, decodeError(resp)
	}
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return InvokeResult{}, fmt.Errorf("%w: the invocation ran, its result was lost: %w", errs.ErrOutcomeUnknown, err)
	}
	return InvokeResult{Output: out, PID: resp.Header.Get(HeaderPID),
		Address: resp.Header.Get(HeaderAddress), Token: resp.Header.Get(HeaderToken)}, nil
}

// Key is an API key as the control plane shows it. Token is set only in the
// answer that made it: it is not stored and not shown again.
type Key struct {
	ID        string    `json:"id"`
	App       string    `json:"app,omitempty"`
	Name      string    `json:"name,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Token     string    `json:"token,omitempty"`
}

// keysPath is where the keys of app live ("" for the admin keys).
func keysPath(app string) string {
	if app == "" {
		return "/v1/keys"
	}
	return "/v1/apps/" + esc(app) + "/keys"
}

// CreateKey makes an API key for app ("" for an admin key).
func (c *Client) CreateKey(ctx context.Context, app, name string) (Key, error) {
	var k Key
	err := c.do(ctx, http.MethodPost, keysPath(app), map[string]string{"name": name}, &k)
	return k, err
}

// ListKeys lists the keys of app ("" for the admin keys), without tokens.
func (c *Client) ListKeys(ctx context.Context, app string) ([]Key, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	err := c.do(ctx, http.MethodGet, keysPath(app), nil, &out)
	return out.Keys, err
}

// RevokeKey deletes a key of app ("" for an admin key): it stops working.
func (c *Client) RevokeKey(ctx context.Context, app, id string) error {
	return c.do(ctx, http.MethodDelete, keysPath(app)+"/"+esc(id), nil, nil)
}

// RotateKey replaces a key with a new one of the same app and name.
func (c *Client) RotateKey(ctx context.Context, app, id string) (Key, error) {
	var k Key
	err := c.do(ctx, http.MethodPost, keysPath(app)+"/"+esc(id)+"/rotate", nil, &k)
	return k, err
}
