package process_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/token"
	"github.com/praas-dev/praas/process"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/wire"
)

// testSigner stands in for the control plane's signing key.
var (
	testSigner   = token.NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)))
	testVerifier = token.NewVerifier(testSigner.Public())
)

func sign(c token.Claims) string {
	if c.Expires.IsZero() {
		c.Expires = time.Now().Add(time.Hour)
	}
	return testSigner.Sign(c)
}

// clientToken is what the control plane gives a client of app/pid.
func clientToken(app, pid string) string {
	return sign(token.Claims{App: app, PID: pid, Ops: token.OpInvoke | token.OpSend})
}

// ownToken is a process's own credential.
func ownToken(app, pid string, gen uint64) string {
	return sign(token.Claims{App: app, PID: token.AnyPID, Sub: pid, Gen: gen,
		Ops: token.OpInvoke | token.OpSend | token.OpInternal})
}

// recvImage has "recv", which returns "SRC:DATA" of the next message with
// key k from any source.
func recvImage() *process.Image {
	im := testImage()
	im.Register("recv", func(ctx context.Context, p *process.Process, _ []byte) ([]byte, error) {
		m, err := p.Recv(ctx, process.Any, "k", 5*time.Second)
		return []byte(m.Src + ":" + string(m.Data)), err
	})
	return im
}

// The hello's token must be valid now, signed by the control plane, and
// for this process.
func TestHandshakeTokens(t *testing.T) {
	rt, _ := startRuntime(t, testImage())
	_, otherKey, _ := ed25519.GenerateKey(nil)
	tests := []struct {
		name, tok string
		ok        bool
	}{
		{"client token for this pid", clientToken("app", "p1"), true},
		{"any pid of the app", sign(token.Claims{App: "app", PID: token.AnyPID, Sub: "p2", Ops: token.OpInvoke}), true},
		{"another pid", clientToken("app", "p2"), false},
		{"another app", clientToken("other", "p1"), false},
		{"another app, any pid", sign(token.Claims{App: "other", PID: token.AnyPID, Sub: "p1", Ops: token.OpInvoke}), false},
		{"expired", sign(token.Claims{App: "app", PID: "p1", Ops: token.OpInvoke, Expires: time.Now().Add(-time.Second)}), false},
		{"signed by another key", token.NewSigner(otherKey).Sign(token.Claims{App: "app", PID: "p1", Ops: token.OpInvoke, Expires: time.Now().Add(time.Hour)}), false},
		{"garbage", "wrong", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dc, err := client.Dial(context.Background(), rt.Addr(), tc.tok, client.DialOptions{})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				dc.Close()
				return
			}
			if err == nil {
				dc.Close()
				t.Fatal("handshake accepted")
			}
			if !errors.Is(err, errs.ErrUnauthenticated) {
				t.Fatalf("handshake: %v, want unauthenticated", err)
			}
		})
	}
}

// A request the token does not allow is refused; the connection stays.
func TestTokenOps(t *testing.T) {
	rt, _ := startRuntime(t, recvImage())
	ctx := context.Background()

	invokeOnly := dial(t, rt, sign(token.Claims{App: "app", PID: "p1", Ops: token.OpInvoke}))
	if err := invokeOnly.Send(ctx, "", "k", []byte("x")); !errors.Is(err, errs.ErrPermissionDenied) {
		t.Fatalf("send without OpSend: %v, want permission denied", err)
	}
	if out, err := invokeOnly.Invoke(ctx, "echo", []byte("still")); err != nil || string(out) != "still" {
		t.Fatalf("invoke after a refused send: %q %v", out, err)
	}

	sendOnly := dial(t, rt, sign(token.Claims{App: "app", PID: "p1", Ops: token.OpSend}))
	if _, err := sendOnly.Invoke(ctx, "echo", []byte("x")); !errors.Is(err, errs.ErrPermissionDenied) {
		t.Fatalf("invoke without OpInvoke: %v, want permission denied", err)
	}
	if err := sendOnly.Send(ctx, "", "k", []byte("y")); err != nil {
		t.Fatalf("send after a refused invoke: %v", err)
	}
	if out, err := invokeOnly.Invoke(ctx, "recv", nil); err != nil || string(out) != ":y" {
		t.Fatalf("recv: %q %v", out, err)
	}
}

// A message is from whoever the token says sent it; the frame's source
// counts only for a token that may relay (the control plane's).
func TestMessageSourceFromToken(t *testing.T) {
	rt, _ := startRuntime(t, recvImage())
	ctx := context.Background()
	reader := dial(t, rt, clientToken("app", "p1"))
	tests := []struct {
		name, tok, claimed, want string
	}{
		{"outside client", clientToken("app", "p1"), "p7", ""},
		{"peer process", sign(token.Claims{App: "app", PID: token.AnyPID, Sub: "p2", Ops: token.OpInvoke | token.OpSend}), "p7", "p2"},
		// A process's own credential cannot forge a relay either.
		{"process credential", ownToken("app", "p3", 1), "p7", "p3"},
		{"control plane relaying", sign(token.Claims{App: "app", PID: "p1", Ops: token.OpInvoke | token.OpSend | token.OpRelay}), "p7", "p7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dc := dial(t, rt, tc.tok)
			if err := dc.Send(ctx, tc.claimed, "k", []byte(tc.name)); err != nil {
				t.Fatal(err)
			}
			out, err := reader.Invoke(ctx, "recv", nil)
			if err != nil || string(out) != tc.want+":"+tc.name {
				t.Fatalf("received %q %v, want source %q", out, err, tc.want)
			}
		})
	}
}

// A client of version 1 is told which versions the process speaks.
func TestOldProtocolVersionRefused(t *testing.T) {
	rt, _ := startRuntime(t, testImage())
	conn, err := net.Dial("tcp", rt.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var m wire.Meta
	m.U16(1).Str8("an old token").Str8("")
	if err := wire.NewWriter(conn).WriteFrame(wire.FrameHello, 0, m.B, nil); err != nil {
		t.Fatal(err)
	}
	f, err := wire.NewReader(conn, 0).Next()
	if err != nil || f.Type != wire.FrameError {
		t.Fatalf("reply: type %d, %v", f.Type, err)
	}
	if err := wire.DecodeError(f); !errors.Is(err, errs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("refusal %v, want failed precondition naming version 1", err)
	}
}

// tokenCP is a control plane that answers registration, heartbeats and
// membership, records the Bearer tokens the runtime sends, and hands out a
// renewed credential when told to.
type tokenCP struct {
	*httptest.Server
	mu      sync.Mutex
	bearers []string
	renew   []string // Token, PeerToken for the next heartbeat reply
	members cpapi.Membership
}

func newTokenCP(t *testing.T) *tokenCP {
	cp := &tokenCP{}
	cp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cp.mu.Lock()
		cp.bearers = append(cp.bearers, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		var reply cpapi.HeartbeatReply
		if r.URL.Path == cpapi.PathHeartbeat && cp.renew != nil {
			reply.Token, reply.PeerToken = cp.renew[0], cp.renew[1]
			cp.renew = nil
		}
		members := cp.members
		cp.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case cpapi.PathRegister, cpapi.PathHeartbeat:
			_ = json.NewEncoder(w).Encode(reply)
		case cpapi.PathMembers:
			_ = json.NewEncoder(w).Encode(members)
		default:
			// Snapshots have nowhere to go here: retire the runtime.
			w.WriteHeader(http.StatusGone)
		}
	}))
	t.Cleanup(cp.Close)
	return cp
}

// runWithCP runs a runtime that reports to a fake control plane. Its
// swap-out finds no snapshot store, so Run's error is not checked.
func runWithCP(t *testing.T, im *process.Image, cfg process.Config) *process.Runtime {
	t.Helper()
	cfg.App, cfg.Verifier, cfg.DrainTimeout = "app", testVerifier, 5*time.Second
	rt, err := process.New(cfg, im)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-rt.Ready():
	case err := <-done:
		t.Fatalf("runtime ended: %v", err)
	}
	return rt
}

func (cp *tokenCP) lastBearer() string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if len(cp.bearers) == 0 {
		return ""
	}
	return cp.bearers[len(cp.bearers)-1]
}

func (cp *tokenCP) setRenew(own, peer string) {
	cp.mu.Lock()
	cp.renew = []string{own, peer}
	cp.mu.Unlock()
}

// The runtime authenticates to the internal API with its own credential and
// switches to a renewed one from a heartbeat reply, unless that one is not
// its own.
func TestCredentialRenewedByHeartbeat(t *testing.T) {
	cp := newTokenCP(t)
	first := ownToken("app", "p1", 2)
	runWithCP(t, testImage(), process.Config{PID: "p1", ControlPlane: cp.URL, Generation: 2, Token: first,
		Heartbeat: 10 * time.Millisecond})
	waitUntil(t, "a report with the first credential", func() bool { return cp.lastBearer() == first })

	// Another process's credential is not taken.
	cp.setRenew(ownToken("app", "p2", 2), "")
	time.Sleep(50 * time.Millisecond)
	if got := cp.lastBearer(); got != first {
		t.Fatal("the runtime took another process's credential")
	}

	renewed := sign(token.Claims{App: "app", PID: token.AnyPID, Sub: "p1", Gen: 2,
		Ops: token.OpInvoke | token.OpSend | token.OpInternal, Expires: time.Now().Add(2 * time.Hour)})
	cp.setRenew(renewed, sign(token.Claims{App: "app", PID: token.AnyPID, Sub: "p1", Gen: 2, Ops: token.OpInvoke | token.OpSend}))
	waitUntil(t, "a report with the renewed credential", func() bool { return cp.lastBearer() == renewed })
}

// A process dials its peers with its peer token: the peer sees who sends.
func TestPeerSeesSender(t *testing.T) {
	peer, _ := startRuntime(t, recvImage(), func(c *process.Config) { c.PID = "p2" })
	cp := newTokenCP(t)
	cp.members = cpapi.Membership{Epoch: 1, Members: []cpapi.Member{{PID: "p2", Status: store.StatusActive, Address: peer.Addr()}}}
	im := testImage()
	im.Register("send", func(ctx context.Context, p *process.Process, in []byte) ([]byte, error) {
		return nil, p.Send(ctx, "p2", "k", in)
	})
	sender := runWithCP(t, im, process.Config{PID: "p1", ControlPlane: cp.URL, Generation: 1,
		Token:     ownToken("app", "p1", 1),
		PeerToken: sign(token.Claims{App: "app", PID: token.AnyPID, Sub: "p1", Gen: 1, Ops: token.OpInvoke | token.OpSend}),
	})
	ctx := context.Background()
	if _, err := dial(t, sender, clientToken("app", "p1")).Invoke(ctx, "send", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if out, err := dial(t, peer, clientToken("app", "p2")).Invoke(ctx, "recv", nil); err != nil || string(out) != "p1:hello" {
		t.Fatalf("peer received %q %v, want p1:hello", out, err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
