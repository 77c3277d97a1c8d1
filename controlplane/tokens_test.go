package controlplane

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/token"
)

// internalCall makes an internal-API request with tok as Bearer and
// returns the status and body.
func internalCall(t *testing.T, h *harness, method, path, tok string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, h.s.cfg.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A process gets its own credentials and the verifying key, never the app's
// secret, and its tokens say who it is.
func TestProcessCredentials(t *testing.T) {
	h := newHarness(t, nil)
	h.create("p")
	h.mustActivate("p")
	spec := h.be.lastStart()
	for _, kv := range append(append([]string{}, spec.Env...), spec.Secrets...) {
		if strings.HasPrefix(kv, "PRAAS_SECRET=") || strings.HasSuffix(kv, "="+h.app.Secret) {
			t.Fatalf("the app's secret reaches the process: %q", kv)
		}
	}
	if envOf(spec.Env, cpapi.EnvToken) != "" || envOf(spec.Env, cpapi.EnvPeerToken) != "" {
		t.Fatal("tokens in the plain environment, not in Secrets")
	}
	v, err := token.DecodeVerifier(envOf(spec.Env, cpapi.EnvPublicKey))
	if err != nil {
		t.Fatalf("%s: %v", cpapi.EnvPublicKey, err)
	}
	now := time.Now()
	for _, tc := range []struct {
		env string
		ops token.Ops
	}{
		{cpapi.EnvToken, token.OpInvoke | token.OpSend | token.OpInternal},
		{cpapi.EnvPeerToken, token.OpInvoke | token.OpSend},
	} {
		c, err := v.Verify(envOf(spec.Secrets, tc.env), now)
		if err != nil {
			t.Fatalf("%s: %v", tc.env, err)
		}
		if c.App != "app" || c.PID != token.AnyPID || c.Sub != "p" || c.Gen != 1 || c.Ops != tc.ops {
			t.Errorf("%s claims %+v", tc.env, c)
		}
		if left := c.Expires.Sub(now); left < processTokenTTL-time.Minute || left > processTokenTTL {
			t.Errorf("%s expires in %s, want %s", tc.env, left, processTokenTTL)
		}
	}
}

// The internal API takes a process's own credential, for its own app, pid
// and generation, and nothing else.
func TestInternalAPIAuth(t *testing.T) {
	h := newHarness(t, nil)
	h.create("p")
	h.mustActivate("p")
	beat := mustJSON(t, cpapi.Heartbeat{App: "app", PID: "p", Generation: 1})
	own, peer := h.s.processTokens("app", "p", 1)
	otherPID, _ := h.s.processTokens("app", "q", 1)
	otherGen, _ := h.s.processTokens("app", "p", 2)
	otherApp, _ := h.s.processTokens("app2", "p", 1)
	_, foreign, _ := ed25519.GenerateKey(nil)
	forged := token.NewSigner(foreign).Sign(token.Claims{App: "app", PID: token.AnyPID, Sub: "p", Gen: 1,
		Ops: token.OpInternal, Expires: time.Now().Add(time.Hour)})
	expired := h.s.tokens.signer.Sign(token.Claims{App: "app", PID: token.AnyPID, Sub: "p", Gen: 1,
		Ops: token.OpInternal, Expires: time.Now().Add(-time.Second)})
	tests := []struct {
		name, tok string
		want      int
	}{
		{"own credential", own, http.StatusOK},
		{"no token", "", http.StatusUnauthorized},
		{"garbage", "secret", http.StatusUnauthorized},
		{"signed by another key", forged, http.StatusUnauthorized},
		{"expired", expired, http.StatusUnauthorized},
		{"peer token", peer, http.StatusForbidden},
		{"client token", h.s.clientToken("app", "p"), http.StatusForbidden},
		{"control plane's data-plane token", h.s.planeToken("app", "p"), http.StatusForbidden},
		{"replica token", h.s.replicaToken("app", "p"), http.StatusForbidden},
		{"another pid's credential", otherPID, http.StatusForbidden},
		{"another generation's credential", otherGen, http.StatusForbidden},
		{"another app's credential", otherApp, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := internalCall(t, h, http.MethodPost, cpapi.PathHeartbeat, tc.tok, beat); code != tc.want {
				t.Fatalf("heartbeat: %d %s, want %d", code, body, tc.want)
			}
		})
	}

	members := cpapi.PathMembers + "?" + url.Values{"app": {"app"}, "pid": {"q"}, "epoch": {"0"}}.Encode()
	if code, body := internalCall(t, h, http.MethodGet, members, otherPID, nil); code != http.StatusOK {
		t.Fatalf("members with a process credential of the app: %d %s", code, body)
	}
	if code, _ := internalCall(t, h, http.MethodGet, members, h.s.clientToken("app", "q"), nil); code != http.StatusForbidden {
		t.Fatalf("members with a client token: %d, want 403", code)
	}

	invoke := cpapi.PathInvoke + "?" + url.Values{"app": {"app"}, "pid": {"p"}, "function": {"echo"}}.Encode()
	for _, tok := range []string{peer, h.s.clientToken("app", "p"), otherApp} {
		if code, _ := internalCall(t, h, http.MethodPost, invoke, tok, nil); code != http.StatusForbidden {
			t.Fatalf("invoke through the control plane without a process credential of the app: %d, want 403", code)
		}
	}

	flush := cpapi.PathFlush + "?" + url.Values{"app": {"app"}, "pid": {"p"}}.Encode()
	if code, _ := internalCall(t, h, http.MethodPost, flush, own, nil); code != http.StatusForbidden {
		t.Fatalf("flush with a process credential: %d, want 403", code)
	}
	if code, body := internalCall(t, h, http.MethodPost, flush, h.s.replicaToken("app", "p"), nil); code != http.StatusNoContent {
		t.Fatalf("flush with a replica token: %d %s", code, body)
	}
}

// A credential past half its life is renewed in the heartbeat reply; a
// fresh one is not.
func TestCredentialRenewal(t *testing.T) {
	h := newHarness(t, nil)
	h.create("p")
	h.mustActivate("p")
	beat := mustJSON(t, cpapi.Heartbeat{App: "app", PID: "p", Generation: 1})
	beatWith := func(tok string) cpapi.HeartbeatReply {
		t.Helper()
		code, body := internalCall(t, h, http.MethodPost, cpapi.PathHeartbeat, tok, beat)
		if code != http.StatusOK {
			t.Fatalf("heartbeat: %d %s", code, body)
		}
		var reply cpapi.HeartbeatReply
		if err := json.Unmarshal(body, &reply); err != nil {
			t.Fatal(err)
		}
		return reply
	}
	fresh, _ := h.s.processTokens("app", "p", 1)
	if r := beatWith(fresh); r.Token != "" || r.PeerToken != "" {
		t.Fatalf("a fresh credential was renewed: %+v", r)
	}
	old := h.s.tokens.signer.Sign(token.Claims{App: "app", PID: token.AnyPID, Sub: "p", Gen: 1,
		Ops: token.OpInvoke | token.OpSend | token.OpInternal, Expires: time.Now().Add(processTokenTTL/2 - time.Minute)})
	r := beatWith(old)
	now := time.Now()
	for _, tc := range []struct {
		tok string
		ops token.Ops
	}{{r.Token, token.OpInvoke | token.OpSend | token.OpInternal}, {r.PeerToken, token.OpInvoke | token.OpSend}} {
		c, err := h.s.tokens.verifier.Verify(tc.tok, now)
		if err != nil {
			t.Fatalf("renewed token: %v", err)
		}
		if c.App != "app" || c.PID != token.AnyPID || c.Sub != "p" || c.Gen != 1 || c.Ops != tc.ops || c.Expires.Sub(now) < processTokenTTL-time.Minute {
			t.Fatalf("renewed claims %+v", c)
		}
	}
	// The renewed credential works.
	if r := beatWith(r.Token); r.Token != "" {
		t.Fatal("the renewed credential was renewed again")
	}
}

// A message a process hands to the control plane is from the process its
// credential names, whatever it claims.
func TestInternalMessageSourceFromToken(t *testing.T) {
	h := newHarness(t, nil)
	h.create("dest")
	sender, _ := h.s.processTokens("app", "sender", 4)
	q := url.Values{"app": {"app"}, "src": {"forged"}, "dest": {"dest"}, "key": {"k"}}
	if code, body := internalCall(t, h, http.MethodPost, cpapi.PathMessages+"?"+q.Encode(), sender, []byte("hi")); code != http.StatusNoContent {
		t.Fatalf("message: %d %s", code, body)
	}
	msgs, err := h.meta.ListBackup(context.Background(), "app", "dest")
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Src != "sender" || string(msgs[0].Data) != "hi" {
		t.Fatalf("queued %+v, want one message from sender", msgs)
	}
	if code, _ := internalCall(t, h, http.MethodPost, cpapi.PathMessages+"?"+q.Encode(), h.s.clientToken("app", "dest"), []byte("x")); code != http.StatusForbidden {
		t.Fatalf("message with a client token: %d, want 403", code)
	}
}

// Tokens handed out often are reused until half their life has passed.
func TestTokenCache(t *testing.T) {
	h := newHarness(t, nil)
	a, b := h.s.clientToken("app", "p"), h.s.clientToken("app", "p")
	if a != b {
		t.Fatal("client token signed anew for every request")
	}
	if h.s.clientToken("app", "q") == a || h.s.planeToken("app", "p") == a {
		t.Fatal("one cached token for different targets or kinds")
	}
	c, err := h.s.tokens.verifier.Verify(h.s.planeToken("app", "p"), time.Now())
	if err != nil || c.PID != "p" || c.Sub != "" || !c.Ops.Has(token.OpRelay) {
		t.Fatalf("control plane's data-plane token: %+v %v", c, err)
	}
	c, err = h.s.tokens.verifier.Verify(a, time.Now())
	if err != nil || c.PID != "p" || c.Sub != "" || c.Ops != token.OpInvoke|token.OpSend {
		t.Fatalf("client token: %+v %v", c, err)
	}
}
