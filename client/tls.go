package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/praas-dev/praas/errs"
)

// TLS. A control plane started with TLS serves its API over HTTPS and has
// every process serve its data plane over TLS, with certificates of its
// data-plane CA. A Client reaches an https:// control plane with the roots
// of its HTTP client (WithRootCAs or WithHTTPClient); for the data plane it
// uses WithDataPlaneTLS if given, else it asks the control plane for the
// data-plane CA (GET /v1/ca) over that authenticated HTTPS connection the
// first time it dials a process. An http:// control plane, or one that
// answers 404 there, has a plain data plane.

// dataTLS is the client's data-plane TLS configuration, explicit or
// learned once from the control plane.
type dataTLS struct {
	mu    sync.Mutex
	known bool
	cfg   *tls.Config // nil: plain TCP
}

// WithDataPlaneTLS makes the client dial processes over TLS with cfg (its
// RootCAs holding the data-plane CA), or over plain TCP if cfg is nil,
// instead of asking the control plane.
func WithDataPlaneTLS(cfg *tls.Config) Option {
	return func(c *Client) {
		c.dataTLS.known = true
		c.dataTLS.cfg = cfg
	}
}

// WithRootCAs makes the client trust the certificates in pool, and only
// them, for an https:// control plane (it replaces the HTTP client).
func WithRootCAs(pool *x509.CertPool) Option {
	return func(c *Client) {
		c.http = &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			TLSClientConfig:     &tls.Config{RootCAs: pool},
			ForceAttemptHTTP2:   true,
		}}
	}
}

// DataPlaneCA returns the certificate of the CA that signs the processes'
// data-plane certificates, PEM. Its error has code errs.NotFound if the
// control plane runs without TLS (its data plane is plain TCP).
func (c *Client) DataPlaneCA(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint+"/v1/ca", nil)
	if err != nil {
		return nil, err
	}
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w: %w", c.endpoint, errs.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, decodeError(resp)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// dataPlaneTLS is the configuration to dial processes with (nil: plain).
func (c *Client) dataPlaneTLS(ctx context.Context) (*tls.Config, error) {
	d := &c.dataTLS
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.known {
		return d.cfg, nil
	}
	if !strings.HasPrefix(c.endpoint, "https://") {
		d.known = true
		return nil, nil
	}
	pem, err := c.DataPlaneCA(ctx)
	if errs.CodeOf(err) == errs.NotFound {
		d.known = true // TLS ends at the control plane
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("data-plane CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("data-plane CA: %w: no certificate in the control plane's answer", errs.ErrInternal)
	}
	d.known, d.cfg = true, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	return d.cfg, nil
}
