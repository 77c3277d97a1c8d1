// Package tlsca is the certificate authority of the data plane: the control
// plane issues every process a short-lived server certificate from it at
// start, and data-plane clients trust its certificate. It also holds the
// helpers that turn PEM into TLS configurations for both planes.
package tlsca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA signs data-plane certificates.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// caLifetime is how long a CA made by LoadOrCreate is valid.
const caLifetime = 10 * 365 * 24 * time.Hour

// New makes a CA with a fresh ECDSA P-256 key and a self-signed
// certificate named cn. It returns the CA and the file LoadOrCreate reads
// (the key and the certificate, PEM).
func New(cn string) (*CA, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	ca, err := selfSigned(key, cn)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	file := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return ca, append(file, ca.certPEM...), nil
}

func selfSigned(key crypto.Signer, cn string) (*CA, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"praas"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Parse reads a CA from PEM: its private key (PKCS #8, EC or PKCS #1) and,
// usually, its certificate. Without a certificate one is made, self-signed,
// in memory: replicas sharing only the key make certificates that verify
// each other's leaves, but clients should fetch the CA from the replica
// they use.
func Parse(data []byte) (*CA, error) {
	var key crypto.Signer
	var cert *x509.Certificate
	var certPEM []byte
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
			k, err := parseKey(b)
			if err != nil {
				return nil, err
			}
			key = k
		case "CERTIFICATE":
			if cert != nil {
				continue // a chain: the first certificate is the CA's
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("CA certificate: %w", err)
			}
			cert, certPEM = c, pem.EncodeToMemory(b)
		}
	}
	if key == nil {
		return nil, errors.New("no private key in the CA file")
	}
	if cert == nil {
		return selfSigned(key, "praas data-plane CA")
	}
	if !cert.IsCA {
		return nil, errors.New("the certificate in the CA file is not a CA certificate")
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("the CA file's certificate is not of its private key")
	}
	return &CA{cert: cert, key: key, certPEM: certPEM}, nil
}

func parseKey(b *pem.Block) (crypto.Signer, error) {
	var k any
	var err error
	switch b.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key: a %T cannot sign", k)
	}
	switch s.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey:
	default:
		// Ed25519 CAs are valid X.509 but few TLS stacks accept them.
		return nil, fmt.Errorf("CA key: %T: use an ECDSA or RSA key", k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// LoadOrCreate reads the CA in path, or makes one there (mode 0600) if the
// file does not exist.
func LoadOrCreate(path string) (*CA, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		ca, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return ca, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ca, file, err := New("praas data-plane CA")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// O_EXCL: a replica that raced us made it first; use theirs.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return LoadOrCreate(path)
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(file); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return ca, nil
}

// CertPEM is the CA's certificate, which data-plane clients trust.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Issue makes a server certificate for hosts (IP addresses or DNS names)
// valid for ttl (never past the CA's own end), with a fresh ECDSA P-256
// key. It returns the certificate and the key, PEM.
func (ca *CA) Issue(cn string, hosts []string, ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"praas"}},
		NotBefore:    now.Add(-5 * time.Minute), // clock skew between hosts
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

// Pool returns a pool of the certificates in pem; it is an error if there
// are none.
func Pool(pemCerts []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCerts) {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}

// SystemPoolWith returns the system's roots with the certificates in pem
// added: for HTTP clients that reach both the control plane and, say, an
// S3 endpoint with a public certificate.
func SystemPoolWith(pemCerts []byte) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemCerts) {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}

// ClientConfig is a TLS client configuration trusting only the
// certificates in pem (TLS 1.3 at least, as every praas party speaks it).
func ClientConfig(pemCerts []byte) (*tls.Config, error) {
	pool, err := Pool(pemCerts)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, nil
}

// ServerConfig is a TLS server configuration with the certificate and key
// in PEM.
func ServerConfig(certPEM, keyPEM []byte) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, nil
}
