// Command hostile is a praas image for the hostile-tenant tests
// (cmd/praas/hostile_test.go): each of its functions tries one kind of
// attack from inside a process, with nothing but what any function there
// has (its environment, its file system view, the network), and returns
// what happened, as JSON, for the test to judge. The functions never decide
// whether an attack should work: the test does.
//
// Every function takes a JSON object; credentials are described by a Cred
// (see cred) and made up inside the process, so the process's own tokens
// never leave it.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/praas-dev/praas"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/token"
)

func main() {
	praas.Register("whoami", whoami)
	praas.Register("env", envScan)
	praas.Register("fs", fsProbe)
	praas.Register("http", httpRequest)
	praas.Register("dial", dial)
	praas.Register("recv", recv)
	praas.Register("tcp", tcp)
	praas.Serve()
}

// whoami returns the pid of the process that runs it.
func whoami(_ context.Context, p *praas.Process, _ []byte) ([]byte, error) {
	return []byte(p.PID()), nil
}

// envScan takes {"secrets": [...]} and returns {"names": [...], "leaked":
// [...]}: the names of the environment variables (sorted) and which of the
// given secret strings occur in any value.
func envScan(_ context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	var req struct{ Secrets []string }
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	res := struct {
		Names  []string `json:"names"`
		Leaked []string `json:"leaked"`
	}{}
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		res.Names = append(res.Names, name)
		for _, s := range req.Secrets {
			if s != "" && strings.Contains(value, s) && !slices.Contains(res.Leaked, s) {
				res.Leaked = append(res.Leaked, s)
			}
		}
	}
	slices.Sort(res.Names)
	return json.Marshal(res)
}

// fsProbe takes {"read": [paths], "write": [paths]}: it reads each read
// path (a directory is listed) and opens each write path for writing,
// creating it if absent (and removing what it created). It returns
// {"read": {PATH: OUTCOME}, "write": {PATH: OUTCOME}}, each outcome
// "denied", "absent", "ok: ..." or "error: ...".
func fsProbe(_ context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	var req struct{ Read, Write []string }
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	res := map[string]map[string]string{"read": {}, "write": {}}
	for _, path := range req.Read {
		fi, err := os.Stat(path)
		switch {
		case err != nil:
		case fi.IsDir():
			var entries []os.DirEntry
			if entries, err = os.ReadDir(path); err == nil {
				res["read"][path] = fmt.Sprintf("ok: %d entries", len(entries))
			}
		default:
			var b []byte
			if b, err = os.ReadFile(path); err == nil {
				res["read"][path] = fmt.Sprintf("ok: read %d bytes", len(b))
			}
		}
		if err != nil {
			res["read"][path] = classify(err)
		}
	}
	for _, path := range req.Write {
		_, statErr := os.Lstat(path)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			res["write"][path] = classify(err)
			continue
		}
		f.Close()
		if statErr != nil {
			os.Remove(path)
			res["write"][path] = "ok: created"
		} else {
			res["write"][path] = "ok: opened for writing"
		}
	}
	return json.Marshal(res)
}

func classify(err error) string {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return "denied"
	case errors.Is(err, fs.ErrNotExist):
		return "absent"
	}
	return "error: " + err.Error()
}

// Cred describes the credential an attack presents:
//
//	own       the process's own credential (PRAAS_PROCESS_TOKEN)
//	peer      its peer token (PRAAS_PEER_TOKEN)
//	none      no credential
//	garbage   a string that is no token
//	given     Token, as the test handed it over
//	minted    Claims signed with a fresh Ed25519 key, not the control plane's
//	tampered  the process's own credential (or its peer token if Base is
//	          "peer") with the fields Claims sets (app, pid, sub, gen, ops)
//	          changed and the signature kept
type Cred struct {
	Kind   string
	Token  string
	Base   string
	Claims struct {
		App, PID, Sub *string
		Gen           *uint64
		Ops           *uint8
	}
}

func (c Cred) token() (string, error) {
	switch c.Kind {
	case "own":
		return os.Getenv(cpapi.EnvToken), nil
	case "peer":
		return os.Getenv(cpapi.EnvPeerToken), nil
	case "none":
		return "", nil
	case "garbage":
		return "not-a-token", nil
	case "given":
		return c.Token, nil
	case "minted":
		_, key, err := ed25519.GenerateKey(nil)
		if err != nil {
			return "", err
		}
		var cl token.Claims
		c.apply(&cl)
		cl.Expires = time.Now().Add(time.Hour)
		return token.NewSigner(key).Sign(cl), nil
	case "tampered":
		base := os.Getenv(cpapi.EnvToken)
		if c.Base == "peer" {
			base = os.Getenv(cpapi.EnvPeerToken)
		}
		cl, sig, err := parseToken(base)
		if err != nil {
			return "", err
		}
		c.apply(&cl)
		return encodeToken(cl, sig), nil
	}
	return "", fmt.Errorf("%w: credential kind %q", errs.ErrInvalidArgument, c.Kind)
}

func (c Cred) apply(cl *token.Claims) {
	if c.Claims.App != nil {
		cl.App = *c.Claims.App
	}
	if c.Claims.PID != nil {
		cl.PID = *c.Claims.PID
	}
	if c.Claims.Sub != nil {
		cl.Sub = *c.Claims.Sub
	}
	if c.Claims.Gen != nil {
		cl.Gen = *c.Claims.Gen
	}
	if c.Claims.Ops != nil {
		cl.Ops = token.Ops(*c.Claims.Ops)
	}
}

// parseToken decodes a token without verifying it (see internal/token for
// the layout) and returns its claims and signature.
func parseToken(tok string) (token.Claims, []byte, error) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) < 18+3+ed25519.SignatureSize {
		return token.Claims{}, nil, fmt.Errorf("%w: cannot parse own token: %v", errs.ErrFailedPrecondition, err)
	}
	body, sig := raw[:len(raw)-ed25519.SignatureSize], raw[len(raw)-ed25519.SignatureSize:]
	c := token.Claims{
		Ops:     token.Ops(body[1]),
		Expires: time.UnixMilli(int64(binary.BigEndian.Uint64(body[2:10]))),
		Gen:     binary.BigEndian.Uint64(body[10:18]),
	}
	b := body[18:]
	for _, name := range []*string{&c.App, &c.PID, &c.Sub} {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return token.Claims{}, nil, fmt.Errorf("%w: own token truncated", errs.ErrFailedPrecondition)
		}
		*name = string(b[1 : 1+int(b[0])])
		b = b[1+int(b[0]):]
	}
	return c, sig, nil
}

// encodeToken lays claims out as a token and appends sig, which was made
// for other claims.
func encodeToken(c token.Claims, sig []byte) string {
	b := []byte{token.Version, byte(c.Ops)}
	b = binary.BigEndian.AppendUint64(b, uint64(c.Expires.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, c.Gen)
	for _, name := range []string{c.App, c.PID, c.Sub} {
		b = append(b, byte(len(name)))
		b = append(b, name...)
	}
	return base64.RawURLEncoding.EncodeToString(append(b, sig...))
}

// httpRequest takes {"method", "url", "body", "cred"}: a URL starting with
// "/" is on the control plane the process reports to. The credential goes
// in Authorization: Bearer. It returns {"status", "body"} (up to 4 KiB).
func httpRequest(ctx context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	var req struct {
		Method, URL, Body string
		Cred              Cred
	}
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	if strings.HasPrefix(req.URL, "/") {
		req.URL = os.Getenv(cpapi.EnvControlPlane) + req.URL
	}
	tok, err := req.Cred.token()
	if err != nil {
		return nil, err
	}
	r, err := http.NewRequestWithContext(ctx, req.Method, req.URL, strings.NewReader(req.Body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errs.ErrInvalidArgument, err)
	}
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return json.Marshal(map[string]any{"status": resp.StatusCode, "body": string(b)})
}

// dial takes {"addr", "cred", "source", "op", "function", "key", "data"}:
// it opens a data-plane connection to addr with the credential, announcing
// source as its pid, and, if the handshake passes, invokes function with
// data (op "invoke") or sends data under key with source as the message's
// source (op "send"). It returns {"stage": "dial"|"op"|"done", "code",
// "error", "output"}.
func dial(ctx context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	var req struct {
		Addr, Source, Op, Function, Key, Data string
		Cred                                  Cred
	}
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	tok, err := req.Cred.token()
	if err != nil {
		return nil, err
	}
	res := map[string]string{"stage": "dial"}
	fail := func(err error) ([]byte, error) {
		res["code"], res["error"] = errs.CodeOf(err).String(), err.Error()
		return json.Marshal(res)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dc, err := client.Dial(ctx, req.Addr, tok, client.DialOptions{Source: req.Source})
	if err != nil {
		return fail(err)
	}
	defer dc.Close()
	res["stage"] = "op"
	var out []byte
	switch req.Op {
	case "invoke":
		out, err = dc.Invoke(ctx, req.Function, []byte(req.Data))
	case "send":
		err = dc.Send(ctx, req.Source, req.Key, []byte(req.Data))
	default:
		err = fmt.Errorf("%w: op %q", errs.ErrInvalidArgument, req.Op)
	}
	if err != nil {
		return fail(err)
	}
	res["stage"], res["output"] = "done", string(out)
	return json.Marshal(res)
}

// tcp takes {"addr", "data"}: it connects to addr, writes data and returns
// {"error"} or {"reply"}: what came back within a second (up to 4 KiB).
func tcp(ctx context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	var req struct{ Addr, Data string }
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", req.Addr)
	if err != nil {
		return json.Marshal(map[string]string{"error": err.Error()})
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte(req.Data)); err != nil {
		return json.Marshal(map[string]string{"error": err.Error()})
	}
	b := make([]byte, 4<<10)
	n, err := io.ReadAtLeast(conn, b, 1)
	if n == 0 && err != nil {
		return json.Marshal(map[string]string{"error": err.Error()})
	}
	return json.Marshal(map[string]string{"reply": string(b[:n])})
}

// recv takes "SRC KEY TIMEOUT_MS" (SRC may be ANY) and returns "SRC DATA"
// of the oldest matching message: the source the runtime recorded.
func recv(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	f := strings.Fields(string(in))
	if len(f) != 3 {
		return nil, fmt.Errorf("%w: recv expects SRC KEY TIMEOUT_MS", errs.ErrInvalidArgument)
	}
	ms, err := strconv.Atoi(f[2])
	if err != nil {
		return nil, fmt.Errorf("%w: recv: bad timeout %q", errs.ErrInvalidArgument, f[2])
	}
	src := f[0]
	if src == "ANY" {
		src = praas.Any
	}
	m, err := p.Recv(ctx, src, f[1], time.Duration(ms)*time.Millisecond)
	if err != nil {
		return nil, err
	}
	return append([]byte(m.Src+" "), m.Data...), nil
}

func decode(in []byte, v any) error {
	if err := json.Unmarshal(in, v); err != nil {
		return fmt.Errorf("%w: %v", errs.ErrInvalidArgument, err)
	}
	return nil
}
