package controlplane

import (
	"crypto/ed25519"
	"crypto/rand"
	"strconv"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/token"
)

// The memory of verified credentials answers only for the exact token that
// verified, and only until it expires; anything else is verified afresh.
func TestVerifiedCredentialsRemembered(t *testing.T) {
	iss := newIssuer(testSigningKey)
	now := time.Now()
	c := token.Claims{App: "app", PID: "p", Sub: "p", Gen: 3, Ops: token.OpInternal, Expires: now.Add(time.Minute).Truncate(time.Millisecond)}
	tok := iss.signer.Sign(c)

	for range 2 { // verified, then remembered
		got, err := iss.verify(tok, now)
		if err != nil || got != c {
			t.Fatalf("verify = %+v, %v; want %+v", got, err, c)
		}
	}
	if len(iss.verified) != 1 {
		t.Fatalf("%d credentials remembered, want 1", len(iss.verified))
	}
	// Past its expiry a remembered token is refused.
	if _, err := iss.verify(tok, c.Expires.Add(time.Millisecond)); errs.CodeOf(err) != errs.Unauthenticated {
		t.Fatalf("expired remembered token: %v, want unauthenticated", err)
	}
	// A token of another key, or altered, is not taken for the remembered one.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	forged := token.NewSigner(other).Sign(c)
	mid := len(tok) / 2
	flipped := byte('A')
	if tok[mid] == 'A' {
		flipped = 'B'
	}
	altered := tok[:mid] + string(flipped) + tok[mid+1:]
	for name, bad := range map[string]string{"other key": forged, "altered": altered} {
		if _, err := iss.verify(bad, now); errs.CodeOf(err) != errs.Unauthenticated {
			t.Errorf("%s: %v, want unauthenticated", name, err)
		}
	}
	// The memory is bounded: full, it drops what expired, else everything.
	iss.verified = make(map[string]token.Claims)
	for i := range maxVerified {
		iss.verified[strconv.Itoa(i)] = token.Claims{Expires: now.Add(time.Duration(i%2) * time.Hour)}
	}
	if _, err := iss.verify(tok, now); err != nil {
		t.Fatal(err)
	}
	if n := len(iss.verified); n != maxVerified/2+1 {
		t.Fatalf("%d credentials remembered after dropping the expired, want %d", n, maxVerified/2+1)
	}
}
