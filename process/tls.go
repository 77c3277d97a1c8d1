package process

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/tlsca"
)

// TLS. With a control plane started with TLS, the runtime serves its data
// plane over TLS with the certificate the control plane issued it
// (Config.TLS), dials peers trusting the data-plane CA (Config.PeerTLS) and
// reaches the control plane's https:// URLs trusting its CA
// (Config.ControlPlaneTLS). Without them every connection is plain, as
// fast as before.

// tlsFromEnv reads the TLS settings a backend passed (see cpapi.EnvTLSCA).
func tlsFromEnv(c *Config) error {
	if v := os.Getenv(cpapi.EnvTLSCA); v != "" {
		pool, err := tlsca.SystemPoolWith([]byte(v))
		if err != nil {
			return fmt.Errorf("%s: %w", cpapi.EnvTLSCA, err)
		}
		c.ControlPlaneTLS = &tls.Config{RootCAs: pool}
	}
	if v := os.Getenv(cpapi.EnvTLSDataCA); v != "" {
		cfg, err := tlsca.ClientConfig([]byte(v))
		if err != nil {
			return fmt.Errorf("%s: %w", cpapi.EnvTLSDataCA, err)
		}
		c.PeerTLS = cfg
	}
	cert, key := os.Getenv(cpapi.EnvTLSCert), os.Getenv(cpapi.EnvTLSKey)
	if (cert == "") != (key == "") {
		return fmt.Errorf("%s and %s go together", cpapi.EnvTLSCert, cpapi.EnvTLSKey)
	}
	if cert != "" {
		cfg, err := tlsca.ServerConfig([]byte(cert), []byte(key))
		if err != nil {
			return fmt.Errorf("%s, %s: %w", cpapi.EnvTLSCert, cpapi.EnvTLSKey, err)
		}
		c.TLS = cfg
	}
	return nil
}

// cpClients are the runtime's HTTP clients of the control plane (and, for
// snapshots, of the swap store).
type cpClients struct {
	report   *http.Client // reports: registration, heartbeats, snapshots
	poll     *http.Client // membership long polls
	invoke   *http.Client // invocations of peers through the control plane
	snapshot *http.Client // snapshot transfers
}

// newCPClients returns the shared plain clients, or clients of their own
// that trust the control plane's CA when cfg is set.
func newCPClients(cfg *tls.Config) cpClients {
	if cfg == nil {
		return cpClients{report: httpClient, poll: pollClient, invoke: invokeClient, snapshot: snapshotClient}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	with := func(timeout time.Duration) *http.Client { return &http.Client{Transport: tr, Timeout: timeout} }
	return cpClients{report: with(httpClient.Timeout), poll: with(pollClient.Timeout),
		invoke: with(invokeClient.Timeout), snapshot: with(snapshotClient.Timeout)}
}
