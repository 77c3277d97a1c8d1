package controlplane

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/tlsca"
)

// TLSConfig turns TLS on for both planes: the REST and internal API are
// served over HTTPS, and every process serves its data plane over TLS with
// a certificate this control plane issues it at start from DataCA.
type TLSConfig struct {
	// Certificate is this replica's own, for its REST and internal API.
	Certificate tls.Certificate
	// CAPEM holds the certificate(s), PEM, of the CA that signed the
	// replicas' certificates: processes and other replicas trust them when
	// they call a replica.
	CAPEM []byte
	// DataCA issues the processes' data-plane certificates. Replicas
	// sharing a metadata store must share it: a process one replica
	// started is dialed by the others, and by clients that fetched the CA
	// from any of them (GET /v1/ca).
	DataCA *tlsca.CA
	// ProcessHosts are the IP addresses and DNS names a process's
	// certificate is valid for: where processes listen (default 127.0.0.1,
	// ::1 and localhost, the local backend's loopback).
	ProcessHosts []string
	// CertTTL is how long a process's certificate is valid (default 24h).
	// Heartbeat replies renew it once half of it has passed.
	CertTTL time.Duration
}

// DefaultProcessCertTTL is how long a process's data-plane certificate is
// valid unless TLSConfig.CertTTL says otherwise.
const DefaultProcessCertTTL = 24 * time.Hour

func (c *TLSConfig) setDefaults() {
	if len(c.ProcessHosts) == 0 {
		c.ProcessHosts = []string{"127.0.0.1", "::1", "localhost"}
	}
	if c.CertTTL <= 0 {
		c.CertTTL = DefaultProcessCertTTL
	}
}

func (c *TLSConfig) validate() error {
	if len(c.Certificate.Certificate) == 0 || c.Certificate.PrivateKey == nil {
		return errors.New("control plane: TLS needs the control plane's certificate and key")
	}
	if _, err := tlsca.Pool(c.CAPEM); err != nil {
		return fmt.Errorf("control plane: TLS CA: %w", err)
	}
	if c.DataCA == nil {
		return errors.New("control plane: TLS needs a data-plane CA")
	}
	return nil
}

// initTLS prepares the clients this replica calls other replicas and
// processes with: trusting the CAs of TLSConfig, or plain.
func (s *Server) initTLS() error {
	s.replicaHTTP = replicaClient
	t := s.cfg.TLS
	if t == nil {
		return nil
	}
	t.setDefaults()
	if err := t.validate(); err != nil {
		return err
	}
	pool, _ := tlsca.Pool(t.CAPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	s.replicaHTTP = &http.Client{Transport: tr, Timeout: replicaClient.Timeout}
	var err error
	s.dataTLS, err = tlsca.ClientConfig(t.DataCA.CertPEM())
	return err
}

// serverTLS is the configuration the API is served with.
func (s *Server) serverTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{s.cfg.TLS.Certificate},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}
}

// dialOptions are the options of this replica's data-plane connections.
func (s *Server) dialOptions() client.DialOptions {
	return client.DialOptions{TLS: s.dataTLS, TracerProvider: s.cfg.TracerProvider}
}

// processTLS adds to spec what the process needs for TLS: the CAs to trust
// and its own certificate for the data plane.
func (s *Server) processTLS(spec *backend.Spec) error {
	t := s.cfg.TLS
	if t == nil {
		return nil
	}
	cert, key, err := s.issueProcessCert(spec.App, spec.PID)
	if err != nil {
		return err
	}
	spec.Env = append(spec.Env, cpapi.EnvTLSCA+"="+string(t.CAPEM), cpapi.EnvTLSDataCA+"="+string(t.DataCA.CertPEM()))
	spec.Secrets = append(spec.Secrets, cpapi.EnvTLSCert+"="+string(cert), cpapi.EnvTLSKey+"="+string(key))
	return nil
}

// issueProcessCert makes the data-plane certificate of app/pid.
func (s *Server) issueProcessCert(app, pid string) (cert, key []byte, err error) {
	t := s.cfg.TLS
	cert, key, err = t.DataCA.Issue("praas process "+app+"/"+pid, t.ProcessHosts, t.CertTTL)
	if err != nil {
		return nil, nil, fmt.Errorf("issue the data-plane certificate of %s/%s: %w", app, pid, err)
	}
	return cert, key, nil
}

// renewProcessCert puts a fresh certificate into the reply to a heartbeat
// of a process whose certificate has lived half its life.
func (s *Server) renewProcessCert(hb cpapi.Heartbeat, reply *cpapi.HeartbeatReply) {
	t := s.cfg.TLS
	if t == nil || hb.CertNotAfter == 0 || time.Until(time.Unix(hb.CertNotAfter, 0)) > t.CertTTL/2 {
		return
	}
	cert, key, err := s.issueProcessCert(hb.App, hb.PID)
	if err != nil {
		s.log.Warn("renew data-plane certificate", "app", hb.App, "pid", hb.PID, "err", err)
		return
	}
	reply.TLSCert, reply.TLSKey = string(cert), string(key)
}

// getCA answers the data-plane CA's certificate (PEM), which clients trust
// to dial processes; 404 when the data plane is plain.
func (s *Server) getCA(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.TLS == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "this control plane runs without TLS: the data plane is plain TCP", "code": "not_found"})
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(s.cfg.TLS.DataCA.CertPEM())
}
