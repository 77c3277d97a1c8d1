package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/memory"
)

// FuzzHandler sends one request of fuzzed method, path, query, body and
// credential to the REST and internal API of a control plane and checks
// the answer: no panic, no 5xx but 503 (a process that cannot be brought
// up: the fake backend starts none), and every error a JSON body with
// "error" and "code". The only body-less errors are the internal API's
// 410s, which retire a runtime.
//
// Each input runs against a control plane of its own, on an in-memory
// store holding app "app", its keys and three processes: p swapped with a
// snapshot, q active at an owner whose lease has expired, r active at a
// live peer (reached at an address nothing listens on). auth picks the
// credential: none, the admin key, the app's key, the own credential of p,
// q or r, a replica's or the control plane's token for q, or the raw
// header; its bit 7 marks the request forwarded by a peer.
func FuzzHandler(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.method, s.path, s.query, []byte(s.body), s.auth, s.header)
	}
	creds := newFuzzCreds(f)
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte, auth uint8, header string) {
		if time.Since(creds.made) > 30*time.Second {
			creds = newFuzzCreds(t) // the replica token lasts a minute
		}
		if strings.ContainsAny(method+path+query, " \r\n") || !strings.HasPrefix(path, "/") {
			return // not one request line: the server answers 400 before any handler
		}
		target := path
		if query != "" {
			target += "?" + query
		}
		var raw bytes.Buffer
		fmt.Fprintf(&raw, "%s %s HTTP/1.1\r\nHost: cp\r\nContent-Length: %d\r\n", method, target, len(body))
		if v, ok := creds.header(auth, header); ok {
			if strings.ContainsAny(v, "\r\n") {
				return
			}
			fmt.Fprintf(&raw, "Authorization: %s\r\n", v)
		}
		if auth&0x80 != 0 {
			raw.WriteString(headerForwarded + ": peer\r\n")
		}
		raw.WriteString("\r\n")
		raw.Write(body)
		req, err := http.ReadRequest(bufio.NewReader(&raw))
		if err != nil {
			return // the server answers 400 itself
		}
		s := newFuzzServer(t, creds)
		switch _, pattern := s.mux.Handler(req); {
		case pattern == "GET "+cpapi.PathMembers:
			return // a long poll: it waits for the epoch to change
		case (strings.HasSuffix(pattern, "/invoke/{function}") || pattern == "POST "+cpapi.PathInvoke) && req.URL.Query().Get("pid") == "r":
			return // r's data plane never answers: the call is retried as long as the caller waits
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rec := httptest.NewRecorder()
		start := time.Now()
		serveFuzz(s.Handler(), rec, req.WithContext(ctx))
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("%s %s took %s", method, target, took)
		}
		checkFuzzAnswer(t, req, rec)
	})
}

// serveFuzz serves one request; http.ErrAbortHandler, the server's way of
// cutting a response short, is no crash.
func serveFuzz(h http.Handler, w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			panic(v)
		}
	}()
	h.ServeHTTP(w, r)
}

func checkFuzzAnswer(t *testing.T, req *http.Request, rec *httptest.ResponseRecorder) {
	t.Helper()
	what := req.Method + " " + req.URL.String()
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("%s: %d %s", what, rec.Code, rec.Body)
	}
	if rec.Code < 400 {
		return
	}
	if rec.Code == http.StatusGone && rec.Body.Len() == 0 && strings.HasPrefix(req.URL.Path, "/internal/") {
		return
	}
	var e map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("%s: %d with a body that is not JSON (%v): %q", what, rec.Code, err, rec.Body)
	}
	if msg, _ := e["error"].(string); msg == "" {
		t.Fatalf("%s: %d without an error message: %s", what, rec.Code, rec.Body)
	}
	if code, _ := e["code"].(string); code == "" {
		t.Fatalf("%s: %d without a code: %s", what, rec.Code, rec.Body)
	}
}

// fuzzCreds are the credentials an input may present, made once in a
// while: keys for the store of every input's control plane, tokens signed
// with the key they all share.
type fuzzCreds struct {
	made                time.Time
	adminKey, appKey    store.Key
	admin, app          string
	procP, procQ, procR string
	replicaQ, planeQ    string
}

func newFuzzCreds(tb testing.TB) *fuzzCreds {
	c := &fuzzCreds{made: time.Now()}
	var err error
	if c.adminKey, c.admin, err = NewKey("", "admin"); err != nil {
		tb.Fatal(err)
	}
	if c.appKey, c.app, err = NewKey("app", "ci"); err != nil {
		tb.Fatal(err)
	}
	s := &Server{tokens: newIssuer(testSigningKey)}
	c.procP, _ = s.processTokens("app", "p", 1)
	c.procQ, _ = s.processTokens("app", "q", 1)
	c.procR, _ = s.processTokens("app", "r", 2)
	c.replicaQ = s.replicaToken("app", "q")
	c.planeQ = s.planeToken("app", "q")
	return c
}

// header is the Authorization header that auth selects, if any.
func (c *fuzzCreds) header(auth uint8, raw string) (string, bool) {
	switch (auth & 0x7f) % 9 {
	case 1:
		return "Bearer " + c.admin, true
	case 2:
		return "Bearer " + c.app, true
	case 3:
		return "Bearer " + c.procP, true
	case 4:
		return "Bearer " + c.procQ, true
	case 5:
		return "Bearer " + c.procR, true
	case 6:
		return "Bearer " + c.replicaQ, true
	case 7:
		return "Bearer " + c.planeQ, true
	case 8:
		return raw, true
	}
	return "", false
}

// newFuzzServer is a control plane that holds its lease, on a fresh store:
// nothing one input does is seen by the next. Its background work ends
// with the test.
func newFuzzServer(t *testing.T, c *fuzzCreds) *Server {
	ctx := context.Background()
	meta := memory.New()
	swap := newMemSwap()
	be := newFakeBackend(t, swap)
	be.noStart = true // a started process exits before it registers: 503, at once
	s, err := New(Config{Metadata: meta, Swap: swap, Backend: be, SigningKey: testSigningKey,
		Logger: slog.New(slog.DiscardHandler), URL: "http://127.0.0.1:1", ReplicaID: "me",
		LeaseTTL: time.Minute, HeartbeatTimeout: time.Minute, StartTimeout: time.Second, StopTimeout: time.Second,
		MaxPayload: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.bgCancel()
		s.bg.Wait()
		s.closePeers()
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	must(meta.CreateApp(ctx, store.App{Name: "app", Image: "builtin", Secret: "secret", CreatedAt: now}))
	must(meta.CreateKey(ctx, c.adminKey))
	must(meta.CreateKey(ctx, c.appKey))
	must(meta.PutReplica(ctx, store.Replica{ID: "peer", URL: "http://127.0.0.1:1", Expires: now.Add(time.Hour)}))
	must(meta.PutReplica(ctx, store.Replica{ID: "gone", URL: "http://127.0.0.1:1", Expires: now.Add(-time.Hour)}))
	snap := cpapi.SnapshotKey("app", "p", 1, 1)
	must(swap.Put(ctx, snap, strings.NewReader("snapshot"), 8))
	for _, p := range []store.Process{
		{App: "app", PID: "p", Status: store.StatusSwapped, Generation: 1, Snapshot: snap},
		{App: "app", PID: "q", Status: store.StatusActive, Generation: 1, Owner: "gone", Address: "127.0.0.1:1"},
		{App: "app", PID: "r", Status: store.StatusActive, Generation: 2, Owner: "peer", Address: "127.0.0.1:1"},
	} {
		p.CreatedAt, p.UpdatedAt = now, now
		_, err := meta.CreateProcess(ctx, p)
		must(err)
	}
	must(s.renewLease(ctx))
	must(s.refreshReplicas(ctx))
	return s
}

type fuzzSeed struct {
	method, path, query, body string
	auth                      uint8
	header                    string
}

// fuzzSeeds are well-formed and malformed requests of every JSON route
// and internal API body.
func fuzzSeeds() []fuzzSeed {
	const admin, appKey, procP, procQ, procR, replica, plane, raw = 1, 2, 3, 4, 5, 6, 7, 8
	body := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	snapQ := cpapi.SnapshotKey("app", "q", 1, 2)
	return []fuzzSeed{
		{"POST", "/v1/apps", "", `{"name":"app2","image":"builtin"}`, admin, ""},
		{"POST", "/v1/apps", "", `{"name":"app","image":"builtin"}`, admin, ""},
		{"POST", "/v1/apps", "", `{"name":"Bad Name","image":"x"}`, admin, ""},
		{"POST", "/v1/apps", "", `{"name":"a","image":"builtin","extra":1}`, appKey, ""},
		{"POST", "/v1/apps", "", `{"name":`, admin, ""},
		{"GET", "/v1/apps", "", "", appKey, ""},
		{"GET", "/v1/apps/app", "", "", 0, ""},
		{"DELETE", "/v1/apps/app", "", "", admin, ""},
		{"POST", "/v1/apps/app/processes", "", `{"pid":"p9"}`, appKey, ""},
		{"POST", "/v1/apps/app/processes", "", `{"pid":"p"}`, admin, ""},
		{"POST", "/v1/apps/app/processes", "", "", admin, ""},
		{"POST", "/v1/apps/app/processes", "", `{"pid":"../x"}`, admin, ""},
		{"POST", "/v1/apps/nope/processes", "", `{}`, admin, ""},
		{"GET", "/v1/apps/app/processes", "", "", appKey, ""},
		{"GET", "/v1/apps/app/processes/q", "", "", admin, ""},
		{"DELETE", "/v1/apps/app/processes/p", "", "", admin, ""},
		{"DELETE", "/v1/apps/app/processes/r", "", "", admin, ""},
		{"POST", "/v1/apps/app/processes/q/swap", "", "", admin, ""},
		{"POST", "/v1/apps/app/processes/r/swap", "", "", admin | 0x80, ""},
		{"POST", "/v1/apps/app/processes/p/messages/k", "", "hello", appKey, ""},
		{"POST", "/v1/apps/app/processes/r/messages/k", "", "hello", appKey, ""},
		{"POST", "/v1/apps/app/processes/p/messages/bad%20key", "", "hello", appKey, ""},
		{"POST", "/v1/apps/app/invoke/echo", "", "input", appKey, ""},
		{"POST", "/v1/apps/app/invoke/echo", "pid=q", "input", admin, ""},
		{"POST", "/v1/apps/app/invoke/echo", "pid=%zz", "", admin, ""},
		{"POST", "/v1/apps/app/invoke/bad%00fn", "", strings.Repeat("x", 5000), admin, ""},
		{"POST", "/v1/apps/app/keys", "", `{"name":"k"}`, appKey, ""},
		{"POST", "/v1/apps/app/keys", "", `{"name":"` + strings.Repeat("n", 200) + `"}`, admin, ""},
		{"GET", "/v1/apps/app/keys", "", "", admin, ""},
		{"DELETE", "/v1/apps/app/keys/nokey", "", "", admin, ""},
		{"POST", "/v1/apps/app/keys/nokey/rotate", "", "", admin, ""},
		{"POST", "/v1/keys", "", `{"name":"root"}`, admin, ""},
		{"POST", "/v1/keys", "", `{"name":"root"}`, appKey, ""},
		{"GET", "/v1/keys", "", "", raw, "Bearer praas_x_y"},
		{"DELETE", "/v1/keys/x", "", "", raw, "Basic Zm9vOmJhcg=="},
		{"GET", "/v1/nothing", "", "", admin, ""},
		{"GET", "/healthz", "", "", 0, ""},
		{"POST", cpapi.PathRegister, "", body(cpapi.Register{App: "app", PID: "q", Generation: 1, Address: "127.0.0.1:2"}), procQ, ""},
		{"POST", cpapi.PathRegister, "", body(cpapi.Register{App: "app", PID: "p", Generation: 1}), procP, ""},
		{"POST", cpapi.PathRegister, "", body(cpapi.Register{App: "app", PID: "r", Generation: 2}), procR, ""},
		{"POST", cpapi.PathRegister, "", `{"app":"app","pid":"q","generation":-1}`, procQ, ""},
		{"POST", cpapi.PathHeartbeat, "", body(cpapi.Heartbeat{App: "app", PID: "q", Generation: 1, Usage: store.Usage{Invocations: 3}, IdleNanos: 1, OrphanNanos: -5}), procQ, ""},
		{"POST", cpapi.PathHeartbeat, "", body(cpapi.Heartbeat{App: "app", PID: "q", Generation: 1}), procP, ""},
		{"POST", cpapi.PathHeartbeat, "", `{"app":"app","pid":"q","generation":1,"usage":{"invocations":"x"}}`, procQ, ""},
		{"POST", cpapi.PathSnapshot, "", body(cpapi.Snapshot{App: "app", PID: "q", Generation: 1, Key: snapQ, Bytes: 10, Final: true}), procQ, ""},
		{"POST", cpapi.PathSnapshot, "", body(cpapi.Snapshot{App: "app", PID: "q", Generation: 1, Key: "snapshots/app/q/x"}), procQ, ""},
		{"POST", cpapi.PathSnapshot, "", body(cpapi.Snapshot{App: "app", PID: "p", Generation: 1, Key: cpapi.SnapshotKey("app", "p", 1, 1)}), procP, ""},
		{"POST", cpapi.PathSnapshotAccess, "", body(cpapi.SnapshotAccessRequest{App: "app", PID: "q", Generation: 1, Op: cpapi.SnapshotPut, Seq: 2, Size: 10}), procQ, ""},
		{"POST", cpapi.PathSnapshotAccess, "", body(cpapi.SnapshotAccessRequest{App: "app", PID: "r", Generation: 2, Op: cpapi.SnapshotGet}), procR, ""},
		{"POST", cpapi.PathSnapshotAccess, "", body(cpapi.SnapshotAccessRequest{App: "app", PID: "q", Generation: 1, Op: "delete"}), procQ, ""},
		{"PUT", cpapi.PathSnapshotData, "app=app&pid=q&generation=1&key=" + snapQ, "data", procQ, ""},
		{"GET", cpapi.PathSnapshotData, "app=app&pid=p&generation=1&key=x", "", procP, ""},
		{"POST", cpapi.PathMessages, "app=app&dest=p&key=k", "data", procQ, ""},
		{"POST", cpapi.PathMessages, "app=app&dest=nobody&key=k", "data", procR, ""},
		{"POST", cpapi.PathInvoke, "app=app&pid=q&function=echo", "input", procP, ""},
		{"POST", cpapi.PathInvoke, "app=app&function=echo", "input", procQ, ""},
		{"POST", cpapi.PathInvoke, "app=other&pid=p&function=a%20b", "", procQ, ""},
		{"POST", cpapi.PathFlush, "app=app&pid=q", "", replica, ""},
		{"POST", cpapi.PathFlush, "app=app&pid=q", "", plane, ""},
	}
}
