// Package token is how praas grants access: the control plane signs short
// claims (which app and process the bearer may reach, who the bearer is,
// what it may do, until when) with its Ed25519 key, and processes and other
// replicas verify them with the public key alone, without a round trip. A
// process holds only tokens the control plane gave it and cannot make new
// ones.
//
// A token is base64url (no padding) of a compact binary encoding:
//
//	version  u8   Version
//	ops      u8   the Ops bit set
//	expires  u64  unix milliseconds, big endian (two's complement)
//	gen      u64  big endian
//	app      str8 (u8 length, then bytes)
//	pid      str8
//	sub      str8
//	sig      64 bytes: Ed25519 over signContext ‖ everything before sig
//
// With names of up to 63 bytes (what the control plane allows) a token is
// 366 characters; none is longer than MaxLen.
package token

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/praas-dev/praas/errs"
)

// Version is the encoding version, the first byte of every token.
const Version = 1

// AnyPID as Claims.PID lets the bearer reach every process of the app.
const AnyPID = "*"

// MaxName bounds App, PID and Sub (they are str8).
const MaxName = 255

// MaxLen bounds the length of a token string; Verify refuses longer ones
// before decoding them.
const MaxLen = (fixedLen + 3*(1+MaxName) + ed25519.SignatureSize + 2) / 3 * 4

// fixedLen is version, ops, expires and gen.
const fixedLen = 1 + 1 + 8 + 8

// minLen is the shortest token: empty names.
const minLen = fixedLen + 3 + ed25519.SignatureSize

// signContext is signed before the token body, so that no signature the key
// makes for anything else can pass for a token.
const signContext = "praas token\x00"

// Ops is what a token allows, a bit set.
type Ops uint8

const (
	// OpInvoke may invoke functions of the target process.
	OpInvoke Ops = 1 << iota
	// OpSend may put messages into the target's mailbox.
	OpSend
	// OpRelay may set the source of a message to anything: the control
	// plane delivering queued messages for their original senders. Without
	// it a message's source is the token's Sub.
	OpRelay
	// OpInternal may call the control plane's internal API as process Sub,
	// generation Gen, of App.
	OpInternal
	// OpReplica may make replica-to-replica calls for App (e.g. ask the
	// owner of a process to deliver its backup queue).
	OpReplica
)

var opNames = []string{"invoke", "send", "relay", "internal", "replica"}

// Has reports whether every op in want is in o.
func (o Ops) Has(want Ops) bool { return o&want == want }

// String lists the ops, e.g. "invoke|send".
func (o Ops) String() string {
	var parts []string
	for i, name := range opNames {
		if o&(1<<i) != 0 {
			parts = append(parts, name)
		}
	}
	if rest := o &^ (1<<len(opNames) - 1); rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint8(rest)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}

// Claims are what a token says.
type Claims struct {
	// App is the application the token is for.
	App string
	// PID is the process the bearer may reach, or AnyPID for every process of App.
	PID string
	// Sub is who the bearer is: a pid of App, or "" for a client outside
	// the app or the control plane itself.
	Sub string
	// Gen is, in a process's own credential, the generation of that process.
	Gen uint64
	// Ops is what the bearer may do.
	Ops Ops
	// Expires is when the token stops being valid (kept to the millisecond).
	Expires time.Time
}

// Covers reports whether the claims reach process pid of app.
func (c Claims) Covers(app, pid string) bool {
	return c.App == app && (c.PID == pid || c.PID == AnyPID)
}

// ErrExpired is wrapped, with errs.ErrUnauthenticated, by the error of a
// token past its expiry.
var ErrExpired = errors.New("token expired")

// Signer makes tokens. It is safe for concurrent use.
type Signer struct {
	key ed25519.PrivateKey
}

// NewSigner signs with key, which must be a valid Ed25519 private key.
func NewSigner(key ed25519.PrivateKey) *Signer {
	if len(key) != ed25519.PrivateKeySize {
		panic(fmt.Sprintf("token: private key of %d bytes, want %d", len(key), ed25519.PrivateKeySize))
	}
	return &Signer{key: key}
}

// Public is the key that verifies this signer's tokens.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign returns the token for c. It panics if App, PID or Sub is longer
// than MaxName bytes: names are validated long before they get here.
func (s *Signer) Sign(c Claims) string {
	for _, name := range []string{c.App, c.PID, c.Sub} {
		if len(name) > MaxName {
			panic(fmt.Sprintf("token: name of %d bytes, at most %d fit", len(name), MaxName))
		}
	}
	msg := make([]byte, 0, len(signContext)+fixedLen+3+len(c.App)+len(c.PID)+len(c.Sub)+ed25519.SignatureSize)
	msg = append(msg, signContext...)
	msg = append(msg, Version, byte(c.Ops))
	msg = binary.BigEndian.AppendUint64(msg, uint64(c.Expires.UnixMilli()))
	msg = binary.BigEndian.AppendUint64(msg, c.Gen)
	for _, name := range []string{c.App, c.PID, c.Sub} {
		msg = append(msg, byte(len(name)))
		msg = append(msg, name...)
	}
	msg = append(msg, ed25519.Sign(s.key, msg)...)
	return base64.RawURLEncoding.EncodeToString(msg[len(signContext):])
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	keys []ed25519.PublicKey
}

// NewVerifier accepts tokens signed by any of keys (more than one while
// the signing key is rotated).
func NewVerifier(keys ...ed25519.PublicKey) *Verifier {
	return &Verifier{keys: keys}
}

// DecodeVerifier makes a verifier of a comma-separated list of public keys
// as EncodePublic writes them.
func DecodeVerifier(s string) (*Verifier, error) {
	var keys []ed25519.PublicKey
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, err := DecodePublic(part)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("token: no public key")
	}
	return NewVerifier(keys...), nil
}

// Verify checks tok's signature and expiry at now and returns its claims.
// Every error wraps errs.ErrUnauthenticated; an expired token's wraps
// ErrExpired too. Scopes (app, pid, ops) are the caller's to check.
func (v *Verifier) Verify(tok string, now time.Time) (Claims, error) {
	if len(tok) > MaxLen {
		return Claims{}, fmt.Errorf("%w: token of %d bytes, longer than any valid one", errs.ErrUnauthenticated, len(tok))
	}
	// Strict, and no line breaks (which the decoder skips): one token has
	// exactly one spelling.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || strings.ContainsAny(tok, "\r\n") {
		return Claims{}, fmt.Errorf("%w: token is not base64url", errs.ErrUnauthenticated)
	}
	if len(raw) < minLen {
		return Claims{}, fmt.Errorf("%w: token too short", errs.ErrUnauthenticated)
	}
	if raw[0] != Version {
		return Claims{}, fmt.Errorf("%w: token version %d, want %d", errs.ErrUnauthenticated, raw[0], Version)
	}
	body, sig := raw[:len(raw)-ed25519.SignatureSize], raw[len(raw)-ed25519.SignatureSize:]
	msg := make([]byte, 0, len(signContext)+len(body))
	msg = append(append(msg, signContext...), body...)
	ok := false
	for _, k := range v.keys {
		if ed25519.Verify(k, msg, sig) {
			ok = true
			break
		}
	}
	if !ok {
		return Claims{}, fmt.Errorf("%w: token signature does not verify", errs.ErrUnauthenticated)
	}
	c, err := decodeBody(body)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", errs.ErrUnauthenticated, err)
	}
	if !now.Before(c.Expires) {
		return Claims{}, fmt.Errorf("%w: %w at %s (%s ago)", errs.ErrUnauthenticated, ErrExpired,
			c.Expires.UTC().Format(time.RFC3339), now.Sub(c.Expires).Round(time.Millisecond))
	}
	return c, nil
}

// decodeBody parses a signed body (version byte included).
func decodeBody(b []byte) (Claims, error) {
	var c Claims
	c.Ops = Ops(b[1])
	c.Expires = time.UnixMilli(int64(binary.BigEndian.Uint64(b[2:10])))
	c.Gen = binary.BigEndian.Uint64(b[10:18])
	b = b[fixedLen:]
	for _, name := range []*string{&c.App, &c.PID, &c.Sub} {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return Claims{}, errors.New("token body truncated")
		}
		*name = string(b[1 : 1+int(b[0])])
		b = b[1+int(b[0]):]
	}
	if len(b) != 0 {
		return Claims{}, errors.New("token body has trailing bytes")
	}
	return c, nil
}

// EncodePublic writes a public key for the environment: base64url, no padding.
func EncodePublic(k ed25519.PublicKey) string { return base64.RawURLEncoding.EncodeToString(k) }

// DecodePublic reads a key EncodePublic wrote (standard base64 works too).
func DecodePublic(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	var b []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if b, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("token: public key is not base64: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("token: public key of %d bytes, want %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}
