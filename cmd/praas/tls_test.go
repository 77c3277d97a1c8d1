package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/tlsca"
)

// writeServerCert makes a CA and a certificate it signs for 127.0.0.1,
// as an operator would, and writes them under dir: ca.pem, cert.pem and
// key.pem.
func writeServerCert(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	ca, _, err := tlsca.New("test operator CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("praas control plane", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for f, b := range map[string][]byte{caFile: ca.CertPEM(), certFile: cert, keyFile: key} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// With the TLS flags both planes are encrypted and authenticated: the CLI
// and the Go client reach the control plane with its CA, processes reach
// the control plane and each other, swaps go through, and clients that do
// not trust the CAs, or speak plain, get nowhere.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writeServerCert(t, dir)
	data := filepath.Join(dir, "data")
	cp := startControlPlane(t, data, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile)
	if !strings.HasPrefix(cp.endpoint, "https://") {
		t.Fatalf("endpoint %s, want https://", cp.endpoint)
	}
	t.Setenv(EnvCA, caFile)

	mustPraas(t, "", "app", "create", "sec")
	mustPraas(t, "", "process", "create", "sec", "--pid", "p1")
	mustPraas(t, "", "process", "create", "sec", "--pid", "p2")
	if got := mustPraas(t, "", "invoke", "sec", "echo", "--pid", "p1", "--data", "over https"); got != "over https" {
		t.Fatalf("invoke through the control plane = %q", got)
	}

	// The data-plane CA was made under --data, for the control plane only.
	if fi, err := os.Stat(filepath.Join(data, "tls-ca.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("data-plane CA file: %v, %v", fi, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	cpPool, err := tlsca.Pool(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(cp.endpoint, client.WithToken(os.Getenv(EnvToken)), client.WithRootCAs(cpPool))
	defer c.Close()
	dataCA, err := c.DataPlaneCA(ctx)
	if err != nil || !bytes.Contains(dataCA, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("GET /v1/ca: %q, %v", dataCA, err)
	}
	// The client learns the data-plane CA itself and talks to p1 directly.
	dc, err := c.DataConn(ctx, "sec", "p1")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := dc.Invoke(ctx, "echo", []byte("over tls")); err != nil || string(out) != "over tls" {
		t.Fatalf("data-plane invoke = %q, %v", out, err)
	}
	for i, want := range []string{"1", "2"} {
		out, err := c.Invoke(ctx, "sec", "p1", "counter", nil)
		if err != nil || string(out) != want {
			t.Fatalf("counter #%d = %q, %v", i, out, err)
		}
	}

	// A message between processes, over their TLS data planes.
	mustPraas(t, "", "invoke", "sec", "send", "--pid", "p1", "--data", "p2 greet hello p2")
	if got := mustPraas(t, "", "invoke", "sec", "recv", "--pid", "p2", "--data", "p1 greet 5000"); got != "hello p2" {
		t.Fatalf("p2 received %q", got)
	}

	// Swap out (the snapshot goes to the control plane over HTTPS) and in.
	mustPraas(t, "", "process", "swap", "sec", "p1")
	if p := listProcesses(t, "sec")["p1"]; p.Status != "swapped" {
		t.Fatalf("after swap p1 is %+v", p)
	}
	if out, err := c.Invoke(ctx, "sec", "p1", "counter", nil); err != nil || string(out) != "3" {
		t.Fatalf("counter after swap-in = %q, %v", out, err)
	}
	p1, err := c.GetProcess(ctx, "sec", "p1")
	if err != nil || p1.Status != "active" || p1.Address == "" {
		t.Fatalf("p1 after swap-in: %+v, %v", p1, err)
	}

	// Negative cases. The control plane, without its CA:
	if _, err := client.New(cp.endpoint, client.WithToken(os.Getenv(EnvToken))).ListApps(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client without the CA: %v, want a certificate error", err)
	}
	t.Setenv(EnvCA, "")
	if _, errOut, code := runCLI(t, "", "app", "list"); code != 1 || !strings.Contains(errOut, "certificate") {
		t.Fatalf("CLI without the CA: exit %d, %q", code, errOut)
	}
	t.Setenv(EnvCA, caFile)
	// ... in plain HTTP:
	host := strings.TrimPrefix(cp.endpoint, "https://")
	if resp, err := http.Get("http://" + host + "/v1/apps"); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("plain HTTP to the TLS port: %s", resp.Status)
		}
	}
	// A process's data plane, in plain TCP:
	if dc, err := client.Dial(ctx, p1.Address, p1.Token, client.DialOptions{}); err == nil {
		dc.Close()
		t.Fatal("plain data-plane connection accepted")
	}
	// ... with TLS but trusting another CA (the control plane's):
	_, err = client.Dial(ctx, p1.Address, p1.Token, client.DialOptions{TLS: &tls.Config{RootCAs: cpPool}})
	var unknown x509.UnknownAuthorityError
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("data plane with the wrong CA: %v, want %T", err, unknown)
	}
	// ... and a client told so:
	wrong := client.New(cp.endpoint, client.WithToken(os.Getenv(EnvToken)), client.WithRootCAs(cpPool),
		client.WithDataPlaneTLS(&tls.Config{RootCAs: x509.NewCertPool()}))
	defer wrong.Close()
	if _, err := wrong.DataConn(ctx, "sec", "p1"); err == nil {
		t.Fatal("data-plane connection without the data-plane CA")
	}
	// With the data-plane CA it works, for the address the process has.
	dcPool, _ := tlsca.Pool(dataCA)
	direct, err := client.Dial(ctx, p1.Address, p1.Token, client.DialOptions{TLS: &tls.Config{RootCAs: dcPool}})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if _, port, _ := net.SplitHostPort(p1.Address); port == "" {
		t.Fatalf("address %q", p1.Address)
	}
	if out, err := direct.Invoke(ctx, "counter", nil); err != nil || string(out) != "4" {
		t.Fatalf("direct TLS invoke = %q, %v", out, err)
	}
}

// The TLS flags are checked before anything starts.
func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	_, certFile, keyFile := writeServerCert(t, dir)
	for _, args := range [][]string{
		{"--tls-cert", certFile},
		{"--tls-ca-key", filepath.Join(dir, "ca-key.pem")},
		{"--tls-cert", certFile, "--tls-key", certFile},
		{"--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", keyFile},
		{"--tls-cert", certFile, "--tls-key", keyFile, "--url", "http://127.0.0.1:8420"},
	} {
		args = append([]string{"up", "--data", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0"}, args...)
		if _, errOut, code := runCLI(t, "", args...); code != 1 || !strings.Contains(errOut, "tls") {
			t.Errorf("praas %s: exit %d, %q; want a --tls error", strings.Join(args, " "), code, errOut)
		}
	}
}

// Heartbeat replies renew a process's data-plane certificate before it
// expires: new connections keep verifying long after the first one's end.
func TestTLSCertRenewal(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writeServerCert(t, dir)
	const ttl = 3 * time.Second
	cp := startControlPlane(t, filepath.Join(dir, "data"), "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile,
		"--tls-cert-ttl", ttl.String())
	t.Setenv(EnvCA, caFile)
	mustPraas(t, "", "app", "create", "renew")
	mustPraas(t, "", "process", "create", "renew", "--pid", "p1")
	started := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	caPEM, _ := os.ReadFile(caFile)
	cpPool, _ := tlsca.Pool(caPEM)
	c := client.New(cp.endpoint, client.WithToken(os.Getenv(EnvToken)), client.WithRootCAs(cpPool))
	dataCA, err := c.DataPlaneCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := tlsca.Pool(dataCA)
	p1, err := c.GetProcess(ctx, "renew", "p1")
	if err != nil {
		t.Fatal(err)
	}
	var last time.Time
	for time.Since(started) < 2*ttl {
		var notAfter time.Time
		cfg := &tls.Config{RootCAs: pool, VerifyConnection: func(cs tls.ConnectionState) error {
			notAfter = cs.PeerCertificates[0].NotAfter
			return nil
		}}
		dc, err := client.Dial(ctx, p1.Address, p1.Token, client.DialOptions{TLS: cfg})
		if err != nil {
			t.Fatalf("%s after the start: %v", time.Since(started).Round(time.Millisecond), err)
		}
		if _, err := dc.Invoke(ctx, "echo", nil); err != nil {
			t.Fatal(err)
		}
		dc.Close()
		last = notAfter
		time.Sleep(250 * time.Millisecond) // time must pass: it is what is tested
	}
	if !last.After(started.Add(ttl)) {
		t.Fatalf("the certificate served %s after the start ends at %s: not renewed", 2*ttl, last)
	}
}

// Replicas with TLS reach each other over HTTPS (a swap forwarded to the
// owner) and the processes the others own over their TLS data planes,
// with one data-plane CA file between them.
func TestTLSReplicas(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writeServerCert(t, dir)
	rs := newReplicaSet(t, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile,
		"--tls-ca-key", filepath.Join(dir, "data-plane-ca.pem"))
	r1, r2 := rs.start("r1"), rs.start("r2")
	caPEM, _ := os.ReadFile(caFile)
	pool, _ := tlsca.Pool(caPEM)
	c1 := client.New(r1.endpoint, client.WithToken(token()), client.WithRootCAs(pool))
	c2 := client.New(r2.endpoint, client.WithToken(token()), client.WithRootCAs(pool))
	defer c1.Close()
	defer c2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	app := uniqueName("tls")
	if _, err := c1.CreateApp(ctx, app, ""); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []string{"p1", "p2"} {
		if p, err := c1.CreateProcess(ctx, app, pid); err != nil || p.Owner != "r1" {
			t.Fatalf("create %s: %+v, %v", pid, p, err)
		}
	}
	// r2 invokes r1's processes on their data planes.
	expectVia(t, c2, "1", app, "p1", "counter", "")
	expectVia(t, c2, "", app, "p2", "send", "p1 k hi")
	expectVia(t, c2, "hi", app, "p1", "recv", "p2 k 2000")
	// A swap through r2 goes to r1, the owner, over HTTPS.
	if p, err := c2.SwapProcess(ctx, app, "p1"); err != nil || p.Status != "swapped" {
		t.Fatalf("swap through r2: %+v, %v", p, err)
	}
	expectVia(t, c2, "2", app, "p1", "counter", "")
	// Both replicas hand out the same data-plane CA; a client of r1 talks
	// to p1, which r2 started, directly.
	ca1, err1 := c1.DataPlaneCA(ctx)
	ca2, err2 := c2.DataPlaneCA(ctx)
	if err1 != nil || err2 != nil || !bytes.Equal(ca1, ca2) {
		t.Fatalf("data-plane CAs differ: %v, %v", err1, err2)
	}
	if p := getProcess(t, c1, app, "p1"); p.Owner != "r2" {
		t.Fatalf("p1 is owned by %q after the swap-in through r2", p.Owner)
	}
	dc, err := c1.DataConn(ctx, app, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := dc.Invoke(ctx, "counter", nil); err != nil || string(out) != "3" {
		t.Fatalf("direct invoke = %q, %v", out, err)
	}
}
