package controlplane

import (
	"crypto/ed25519"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/token"
)

// Tokens. The control plane alone holds the signing key (Config.SigningKey,
// shared by the replicas); processes get its public key and verify what is
// presented to them without asking. What it issues (internal/token):
//
//	for                      PID      Sub   Gen  Ops                    lifetime
//	a process, own           "*"      pid   gen  invoke|send|internal   processTokenTTL, renewed in heartbeat replies
//	a process, to its peers  "*"      pid   gen  invoke|send            the same
//	clients (Praas-Token)    pid      ""    0    invoke|send            clientTokenTTL
//	itself, data plane       pid      ""    0    invoke|send|relay      planeTokenTTL
//	itself, other replicas   pid      ""    0    replica                replicaTokenTTL
//
// What a process is shown cannot be replayed to gain anything: the control
// plane's relay token and clients' tokens name the one process they are
// presented to, and a process's credential for the internal API never
// goes on the data plane (peers see the peer token, without internal).
const (
	processTokenTTL = time.Hour
	clientTokenTTL  = time.Hour
	// planeTokenTTL is short: the token is shown only when a connection
	// opens, and the connection outlives it.
	planeTokenTTL   = 10 * time.Minute
	replicaTokenTTL = time.Minute
)

// maxCachedTokens bounds the token cache; beyond it stale entries go.
const maxCachedTokens = 1 << 14

// issuer signs and verifies the control plane's tokens and caches the ones
// it hands out often, renewing each once half its life has passed.
type issuer struct {
	signer   *token.Signer
	verifier *token.Verifier
	public   string // the verifying key, for processes' environment

	mu    sync.Mutex
	cache map[cacheKey]cachedToken

	// verified holds credentials presented on the internal API whose
	// signature verified, until they expire: every process presents the
	// same credential with each heartbeat and long poll, and the Ed25519
	// verification was most of what a heartbeat cost (a thousand processes
	// beat a thousand times a second).
	verifiedMu sync.Mutex
	verified   map[string]token.Claims
}

// maxVerified bounds issuer.verified; past it, expired entries are
// dropped, and if that is not enough, all of them.
const maxVerified = 1 << 16

// verify is Verify with a memory of credentials that verified: a token is
// looked up by its exact spelling, and honoured only until it expires.
func (i *issuer) verify(tok string, now time.Time) (token.Claims, error) {
	i.verifiedMu.Lock()
	c, ok := i.verified[tok]
	i.verifiedMu.Unlock()
	if ok && now.Before(c.Expires) {
		return c, nil
	}
	c, err := i.verifier.Verify(tok, now)
	if err != nil {
		return c, err
	}
	i.verifiedMu.Lock()
	defer i.verifiedMu.Unlock()
	if i.verified == nil {
		i.verified = make(map[string]token.Claims)
	}
	if len(i.verified) >= maxVerified {
		for k, v := range i.verified {
			if !now.Before(v.Expires) {
				delete(i.verified, k)
			}
		}
		if len(i.verified) >= maxVerified {
			clear(i.verified)
		}
	}
	i.verified[tok] = c
	return c, nil
}

type tokenKind uint8

const (
	kindClient tokenKind = iota
	kindPlane
)

type cacheKey struct {
	kind     tokenKind
	app, pid string
}

type cachedToken struct {
	tok   string
	renew time.Time // half its life
}

func newIssuer(key ed25519.PrivateKey) *issuer {
	s := token.NewSigner(key)
	return &issuer{signer: s, verifier: token.NewVerifier(s.Public()),
		public: token.EncodePublic(s.Public()), cache: make(map[cacheKey]cachedToken)}
}

// cached returns a token of kind for app/pid with ops, signing a new one if
// the cached one is past half its life.
func (i *issuer) cached(kind tokenKind, app, pid string, ops token.Ops, ttl time.Duration) string {
	now := time.Now()
	k := cacheKey{kind: kind, app: app, pid: pid}
	i.mu.Lock()
	c, ok := i.cache[k]
	i.mu.Unlock()
	if ok && now.Before(c.renew) {
		return c.tok
	}
	tok := i.signer.Sign(token.Claims{App: app, PID: pid, Ops: ops, Expires: now.Add(ttl)})
	i.mu.Lock()
	defer i.mu.Unlock()
	if len(i.cache) >= maxCachedTokens {
		for k, c := range i.cache {
			if !now.Before(c.renew) {
				delete(i.cache, k)
			}
		}
		if len(i.cache) >= maxCachedTokens {
			clear(i.cache)
		}
	}
	i.cache[k] = cachedToken{tok: tok, renew: now.Add(ttl / 2)}
	return tok
}

// clientToken is the data-plane token handed to clients for app/pid.
func (s *Server) clientToken(app, pid string) string {
	return s.tokens.cached(kindClient, app, pid, token.OpInvoke|token.OpSend, clientTokenTTL)
}

// planeToken is the control plane's own data-plane token for app/pid: it
// may relay messages for their original senders.
func (s *Server) planeToken(app, pid string) string {
	return s.tokens.cached(kindPlane, app, pid, token.OpInvoke|token.OpSend|token.OpRelay, planeTokenTTL)
}

// replicaToken authenticates a call to another replica about app/pid.
func (s *Server) replicaToken(app, pid string) string {
	return s.tokens.signer.Sign(token.Claims{App: app, PID: pid, Ops: token.OpReplica, Expires: time.Now().Add(replicaTokenTTL)})
}

// processTokens are generation gen of app/pid's own credential and the
// token it presents to its peers.
func (s *Server) processTokens(app, pid string, gen uint64) (own, peer string) {
	c := token.Claims{App: app, PID: token.AnyPID, Sub: pid, Gen: gen,
		Ops: token.OpInvoke | token.OpSend | token.OpInternal, Expires: time.Now().Add(processTokenTTL)}
	own = s.tokens.signer.Sign(c)
	c.Ops &^= token.OpInternal
	return own, s.tokens.signer.Sign(c)
}

// renewCredentials puts fresh tokens into reply once the credential the
// process presented (claims) is past half its life.
func (s *Server) renewCredentials(claims token.Claims, reply *cpapi.HeartbeatReply) {
	if time.Until(claims.Expires) > processTokenTTL/2 {
		return
	}
	reply.Token, reply.PeerToken = s.processTokens(claims.App, claims.Sub, claims.Gen)
}

// bearer verifies the request's Bearer token.
func (s *Server) bearer(r *http.Request) (token.Claims, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return token.Claims{}, fmt.Errorf("%w: the internal API needs Authorization: Bearer TOKEN", errs.ErrUnauthenticated)
	}
	return s.tokens.verify(tok, time.Now())
}

// authInternal checks that the request comes from generation gen of process
// app/pid: its credential, with OpInternal. No store read.
func (s *Server) authInternal(r *http.Request, app, pid string, gen uint64) (token.Claims, error) {
	c, err := s.bearer(r)
	if err != nil {
		return c, err
	}
	if !c.Ops.Has(token.OpInternal) || c.App != app || c.Sub != pid || c.Gen != gen {
		return c, fmt.Errorf("%w: a token of %s/%s generation %d with %s does not speak for %s/%s generation %d",
			errs.ErrPermissionDenied, c.App, c.Sub, c.Gen, c.Ops, app, pid, gen)
	}
	return c, nil
}

// authAppProcess checks that the request comes from some process of app
// (its credential, with OpInternal) and returns the claims: Sub names it.
func (s *Server) authAppProcess(r *http.Request, app string) (token.Claims, error) {
	c, err := s.bearer(r)
	if err != nil {
		return c, err
	}
	if !c.Ops.Has(token.OpInternal) || c.App != app || c.Sub == "" {
		return c, fmt.Errorf("%w: a token of %s/%s with %s is not a process credential of app %s",
			errs.ErrPermissionDenied, c.App, c.Sub, c.Ops, app)
	}
	return c, nil
}

// authReplica checks that the request comes from a replica (a replica
// token for app/pid).
func (s *Server) authReplica(r *http.Request, app, pid string) error {
	c, err := s.bearer(r)
	if err != nil {
		return err
	}
	if !c.Ops.Has(token.OpReplica) || !c.Covers(app, pid) {
		return fmt.Errorf("%w: a token for %s/%s with %s is not a replica's for %s/%s",
			errs.ErrPermissionDenied, c.App, c.PID, c.Ops, app, pid)
	}
	return nil
}
