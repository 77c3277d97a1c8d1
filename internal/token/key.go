package token

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadOrCreateKey reads the signing key at path, or makes a new one and
// writes it there (mode 0600, PEM) if there is no file yet. The write is
// atomic: a reader never sees half a key, and of two processes creating
// the key at once both end up with the one written first.
//
// The file is PEM ("PRIVATE KEY", PKCS #8, as openssl genpkey -algorithm
// ed25519 writes it) or raw: a 32-byte seed or a 64-byte private key.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return parseKey(path, b)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if err := writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreateKey(path) // someone else made it meanwhile: use theirs
		}
		return nil, fmt.Errorf("signing key: %w", err)
	}
	return key, nil
}

// writeNew writes data to path, which must not exist, through a temporary
// file in the same directory that is linked into place once complete.
func writeNew(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// A link, unlike a rename, fails if path appeared meanwhile.
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func parseKey(path string, b []byte) (ed25519.PrivateKey, error) {
	if trimmed := bytes.TrimSpace(b); bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		block, _ := pem.Decode(trimmed)
		if block == nil || block.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("signing key %s: want a PEM block of type PRIVATE KEY", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", path, err)
		}
		key, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("signing key %s: a %T, not an Ed25519 key", path, k)
		}
		return key, nil
	}
	switch len(b) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(b), nil
	case ed25519.PrivateKeySize:
		key := ed25519.NewKeyFromSeed(b[:ed25519.SeedSize])
		if !bytes.Equal(key, b) {
			return nil, fmt.Errorf("signing key %s: the public half does not match the seed", path)
		}
		return key, nil
	}
	return nil, fmt.Errorf("signing key %s: %d bytes; want PEM (PKCS #8), a 32-byte seed or a 64-byte key", path, len(b))
}
