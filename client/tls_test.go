package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/builtin"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/tlsca"
	"github.com/praas-dev/praas/process"
)

// testTLS makes a CA and, as the control plane does for a process, a
// certificate for loopback: the process's server configuration and the
// client configuration that trusts the CA.
func testTLS(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	ca, _, err := tlsca.New("test data-plane CA")
	if err != nil {
		tb.Fatal(err)
	}
	cert, key, err := ca.Issue("test process", []string{"127.0.0.1", "::1", "localhost"}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	if server, err = tlsca.ServerConfig(cert, key); err != nil {
		tb.Fatal(err)
	}
	if client, err = tlsca.ClientConfig(ca.CertPEM()); err != nil {
		tb.Fatal(err)
	}
	return server, client
}

// runTestProcess runs a standalone builtin process with tlsCfg (nil:
// plain) until the test ends.
func runTestProcess(t *testing.T, tlsCfg *tls.Config) (*process.Runtime, string) {
	t.Helper()
	verifier, tok := testTokens("a", "p")
	rt, err := process.New(process.Config{App: "a", PID: "p", Verifier: verifier, TLS: tlsCfg, DrainTimeout: time.Second}, builtin.Image())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-rt.Ready()
	return rt, tok
}

// A process serving TLS answers clients that trust its CA, and nobody else.
func TestDataPlaneTLS(t *testing.T) {
	serverCfg, clientCfg := testTLS(t)
	rt, tok := runTestProcess(t, serverCfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	dc, err := client.Dial(ctx, rt.Addr(), tok, client.DialOptions{TLS: clientCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if out, err := dc.Invoke(ctx, "echo", []byte("sealed")); err != nil || string(out) != "sealed" {
		t.Fatalf("invoke over TLS = %q, %v", out, err)
	}
	if dc.App != "a" || dc.PID != "p" {
		t.Fatalf("welcome from %s/%s", dc.App, dc.PID)
	}

	_, otherCA := testTLS(t)
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		want string
	}{
		{"plain", nil, ""},
		{"another CA", otherCA, "certificate"},
		{"no roots", &tls.Config{RootCAs: x509.NewCertPool()}, "certificate"},
		{"wrong name", &tls.Config{RootCAs: clientCfg.RootCAs, ServerName: "elsewhere.example"}, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dc, err := client.Dial(ctx, rt.Addr(), tok, client.DialOptions{TLS: tc.cfg})
			if err == nil {
				dc.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, client.ErrNotSent) || errs.CodeOf(err) != errs.Unavailable {
				t.Fatalf("err = %v, want an unavailable, not-sent error mentioning %q", err, tc.want)
			}
		})
	}

	// A TLS client of a plain process fails too, rather than talking plain.
	plain, tok2 := runTestProcess(t, nil)
	if dc, err := client.Dial(ctx, plain.Addr(), tok2, client.DialOptions{TLS: clientCfg}); err == nil {
		dc.Close()
		t.Fatal("TLS client connected to a plain data plane")
	}
}
