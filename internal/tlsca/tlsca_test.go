package tlsca

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "ca.pem")
	ca, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA file: %v, %v", fi, err)
	}
	again, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.CertPEM(), ca.CertPEM()) {
		t.Fatal("a second start made another CA")
	}
	// What one load issues verifies with the other's certificate.
	cert, _, err := again.Issue("p", []string{"127.0.0.1", "::1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	checkIssued(t, ca.CertPEM(), cert, "127.0.0.1", "::1", "localhost")
}

func checkIssued(t *testing.T, caPEM, certPEM []byte, hosts ...string) {
	t.Helper()
	pool, err := Pool(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: h}); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "elsewhere.example"}); err == nil {
		t.Error("valid for a host it was not issued for")
	}
}

func TestParse(t *testing.T) {
	_, file, err := New("test CA")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pem.Decode(file)
	keyOnly := pem.EncodeToMemory(key)
	_, otherFile, _ := New("other CA")
	_, otherCert := pem.Decode(otherFile)

	// Only the key: a self-signed certificate is made for it.
	ca, err := Parse(keyOnly)
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := ca.Issue("p", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	checkIssued(t, ca.CertPEM(), cert, "127.0.0.1")
	// The made-up certificate lives as long as a made-up CA.
	if got := ca.Certificate().NotAfter; got.Before(time.Now().Add(365 * 24 * time.Hour)) {
		t.Fatalf("CA valid until %s", got)
	}

	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"empty":            {nil, "no private key"},
		"certificate only": {otherCert, "no private key"},
		"another's cert":   {append(append([]byte{}, keyOnly...), otherCert...), "not of its private key"},
	} {
		if _, err := Parse(tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}
