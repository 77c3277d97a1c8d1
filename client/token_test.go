package client_test

import (
	"crypto/ed25519"
	"time"

	"github.com/praas-dev/praas/internal/token"
)

// testKey stands in for the control plane's signing key.
var testKey = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))

// testTokens returns the verifier a process runtime gets and a client
// token for app/pid.
func testTokens(app, pid string) (*token.Verifier, string) {
	s := token.NewSigner(testKey)
	return token.NewVerifier(s.Public()), s.Sign(token.Claims{App: app, PID: pid,
		Ops: token.OpInvoke | token.OpSend, Expires: time.Now().Add(time.Hour)})
}
