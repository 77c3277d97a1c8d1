package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/tlsca"
	"github.com/praas-dev/praas/store/memory"
)

// testTLSConfig is a TLSConfig as praas up makes it: an operator CA that
// signed the API's certificate, and a data-plane CA.
func testTLSConfig(t *testing.T) *TLSConfig {
	t.Helper()
	opCA, _, err := tlsca.New("operator CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := opCA.Issue("control plane", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	dataCA, _, err := tlsca.New("data-plane CA")
	if err != nil {
		t.Fatal(err)
	}
	return &TLSConfig{Certificate: cert, CAPEM: opCA.CertPEM(), DataCA: dataCA, CertTTL: time.Hour}
}

func newTLSServer(t *testing.T, tc *TLSConfig) (*Server, error) {
	return New(Config{Metadata: memory.New(), Backend: newFakeBackend(t, nil), SigningKey: testSigningKey, NoAuth: true, TLS: tc})
}

func TestTLSConfig(t *testing.T) {
	full := testTLSConfig(t)
	for name, broken := range map[string]func(*TLSConfig){
		"no certificate": func(c *TLSConfig) { c.Certificate = tls.Certificate{} },
		"no CA":          func(c *TLSConfig) { c.CAPEM = nil },
		"no data CA":     func(c *TLSConfig) { c.DataCA = nil },
	} {
		c := *full
		broken(&c)
		if _, err := newTLSServer(t, &c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

// GET /v1/ca answers the data-plane CA with TLS, 404 without.
func TestGetCA(t *testing.T) {
	plain, err := newTLSServer(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	plain.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/ca", nil))
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "not_found") {
		t.Fatalf("without TLS: %d %s", rec.Code, rec.Body)
	}

	tc := testTLSConfig(t)
	s, err := newTLSServer(t, tc)
	if err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/ca", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != string(tc.DataCA.CertPEM()) {
		t.Fatalf("with TLS: %d %q", rec.Code, rec.Body)
	}
}

// A process gets both CAs and a certificate of the data-plane CA for
// where it listens, which heartbeats renew past half its life.
func TestProcessCertificates(t *testing.T) {
	tc := testTLSConfig(t)
	s, err := newTLSServer(t, tc)
	if err != nil {
		t.Fatal(err)
	}
	spec := backend.Spec{App: "app", PID: "p1"}
	if err := s.processTLS(&spec); err != nil {
		t.Fatal(err)
	}
	env := make(map[string]string)
	for _, kv := range append(spec.Env, spec.Secrets...) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	if env[cpapi.EnvTLSCA] != string(tc.CAPEM) || env[cpapi.EnvTLSDataCA] != string(tc.DataCA.CertPEM()) {
		t.Fatalf("CAs in the environment: %q, %q", env[cpapi.EnvTLSCA], env[cpapi.EnvTLSDataCA])
	}
	for _, kv := range spec.Env {
		if strings.HasPrefix(kv, cpapi.EnvTLSKey+"=") {
			t.Fatal("the process's key is in Env, not Secrets")
		}
	}
	leaf := verifyLeaf(t, tc, env[cpapi.EnvTLSCert], env[cpapi.EnvTLSKey])
	if d := time.Until(leaf.NotAfter); d > time.Hour || d < 50*time.Minute {
		t.Fatalf("certificate valid for %s, want an hour", d)
	}

	var reply cpapi.HeartbeatReply
	s.renewProcessCert(cpapi.Heartbeat{App: "app", PID: "p1", CertNotAfter: leaf.NotAfter.Unix()}, &reply)
	if reply.TLSCert != "" {
		t.Fatal("renewed a fresh certificate")
	}
	s.renewProcessCert(cpapi.Heartbeat{App: "app", PID: "p1", CertNotAfter: time.Now().Add(20 * time.Minute).Unix()}, &reply)
	verifyLeaf(t, tc, reply.TLSCert, reply.TLSKey)
	reply = cpapi.HeartbeatReply{}
	s.renewProcessCert(cpapi.Heartbeat{App: "app", PID: "p1"}, &reply)
	if reply.TLSCert != "" {
		t.Fatal("renewed for a process without TLS")
	}
}

// verifyLeaf checks a process certificate: its key, and that the
// data-plane CA signed it for loopback.
func verifyLeaf(t *testing.T, tc *TLSConfig, certPEM, keyPEM string) *x509.Certificate {
	t.Helper()
	if _, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM)); err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(certPEM))
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(tc.DataCA.Certificate())
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	return leaf
}
