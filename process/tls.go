package process

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
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

// listenTLS serves TLS on ln with the configured certificate, which
// renewCert may replace: new connections get the current one.
func (rt *Runtime) listenTLS(ln net.Listener) net.Listener {
	cfg := rt.cfg.TLS.Clone()
	if len(cfg.Certificates) == 1 && cfg.GetCertificate == nil {
		cert := cfg.Certificates[0]
		if cert.Leaf == nil && len(cert.Certificate) > 0 {
			cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
		}
		rt.cert.Store(&cert)
		cfg.Certificates = nil
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return rt.cert.Load(), nil }
	}
	return tls.NewListener(ln, cfg)
}

// certNotAfter is when the data plane's certificate expires (unix seconds),
// 0 without one.
func (rt *Runtime) certNotAfter() int64 {
	c := rt.cert.Load()
	if c == nil || c.Leaf == nil {
		return 0
	}
	return c.Leaf.NotAfter.Unix()
}

// renewCert switches the data plane to the certificate of a heartbeat
// reply, if there is one and it is sound: its key matches, and it is of
// the data-plane CA the runtime trusts for its peers.
func (rt *Runtime) renewCert(certPEM, keyPEM string) {
	if certPEM == "" || rt.cert.Load() == nil {
		return
	}
	cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err == nil && cert.Leaf == nil {
		cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0])
	}
	if err == nil && rt.cfg.PeerTLS != nil && rt.cfg.PeerTLS.RootCAs != nil {
		_, err = cert.Leaf.Verify(x509.VerifyOptions{Roots: rt.cfg.PeerTLS.RootCAs,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	}
	if err != nil {
		rt.log.Warn("control plane sent an unusable data-plane certificate; keeping the old one", "err", err)
		return
	}
	rt.cert.Store(&cert)
	rt.log.Debug("data-plane certificate renewed", "not_after", cert.Leaf.NotAfter)
}
