package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/testenv"
	tokens "github.com/praas-dev/praas/internal/token"
)

// The hostile-tenant suite: app "tenant" runs the image in
// e2e/testdata/hostile, whose functions each try one attack on app
// "victim" (the builtin image) or on the control plane from inside a
// process, with what any function there has. The test tells the image what
// to try and asserts that every attempt fails the way it should. It runs a
// real `praas up` (REST keys, signed tokens, local-backend isolation) with
// the file swap store and with Redis metadata and the S3 swap store, in the
// user and the namespaces isolation modes. docs/security.md lists what it
// tries.
func TestHostileTenant(t *testing.T) {
	image := buildHostileImage(t)
	i := 0
	for _, store := range []string{"file", "s3"} {
		for _, mode := range []string{"namespaces", "user"} {
			first := 1900100000 + 100*i
			i++
			t.Run(store+"/"+mode, func(t *testing.T) {
				h := newHostile(t, image, store, mode, first)
				h.run(t)
			})
		}
	}
}

func buildHostileImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "hostile")
	build := exec.Command("go", "build", "-o", bin, "./e2e/testdata/hostile")
	build.Dir = "../.." // the module root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the hostile image: %v\n%s", err, out)
	}
	return bin
}

// hostile is one control plane with the attacker's and the victim's apps.
type hostile struct {
	mode    string // isolation
	store   string // "file" or "s3"
	data    string // the control plane's data directory
	cpPID   int
	c       *client.Client
	secrets []string // what must never be in a process's environment
	redis   *url.URL // the metadata store (s3 setups)
	appKey  string   // an API key of app tenant, as its owner holds it

	a, peer  client.Process // tenant's attacker and its peer
	tenantV  client.Process // tenant's process named like the victim's
	v        client.Process // the victim, active, restored from a snapshot
	vOSPID   int
	vSecret  string
	vRecord0 client.Process
}

func newHostile(t *testing.T, image, store, mode string, firstUID int) *hostile {
	t.Helper()
	if os.Geteuid() != 0 || (mode == "namespaces" && !hasBwrap()) {
		why := fmt.Sprintf("isolation %s needs root and bubblewrap", mode)
		if testenv.InCI() {
			t.Fatalf("%s: CI must run the hostile-tenant suite", why)
		}
		t.Skip("SKIPPING hostile-tenant suite: " + why)
	}
	h := &hostile{mode: mode, store: store, vSecret: "victim-secret-" + uniqueName("")}
	var err error
	args := []string{"--isolation", mode, "--isolation-uids", fmt.Sprintf("%d-%d", firstUID, firstUID+99)}
	if store == "s3" {
		redisURL, s3URL := testenv.Redis(t), testenv.S3(t)
		prefix := uniqueName("hostile")
		meta, swap := withQuery(redisURL, "prefix="+prefix+":"), withQuery(s3URL, "prefix="+prefix+"/")
		args = append(args, "--metadata", meta, "--swap", swap)
		h.secrets = append(h.secrets, meta, swap, redisURL, s3URL)
		if h.redis, err = url.Parse(redisURL); err != nil {
			t.Fatal(err)
		}
		if u, err := url.Parse(s3URL); err == nil && u.Query().Get("secret_key") != "" {
			h.secrets = append(h.secrets, u.Query().Get("secret_key"))
		}
	}
	// The data directory's parent lets everyone through, so that only the
	// data directory's own mode keeps processes out (t.TempDir's is private).
	parent, err := os.MkdirTemp("", "praas-hostile-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	h.data = filepath.Join(parent, "data")
	cp := startControlPlane(t, h.data, args...)
	h.cpPID = cp.cmd.Process.Pid
	admin := token()
	h.c = client.New(cp.endpoint, client.WithToken(admin))
	t.Cleanup(func() { h.c.Close() })

	ctx := testCtx(t)
	mustDo(t, "create app tenant", func() error { _, err := h.c.CreateApp(ctx, "tenant", image); return err })
	mustDo(t, "create app victim", func() error { _, err := h.c.CreateApp(ctx, "victim", ""); return err })
	for _, p := range [][2]string{{"tenant", "a"}, {"tenant", "peer"}, {"tenant", "v"}, {"victim", "v"}} {
		mustDo(t, "create process "+p[0]+"/"+p[1], func() error { _, err := h.c.CreateProcess(ctx, p[0], p[1]); return err })
	}
	key, err := h.c.CreateKey(ctx, "tenant", "owner")
	if err != nil {
		t.Fatal(err)
	}
	h.appKey = key.Token

	// The victim keeps a secret in its state, is swapped out and back in:
	// its record names the snapshot it was restored from.
	h.invoke(t, "victim", "v", "state-set", "secret="+h.vSecret)
	mustDo(t, "swap victim/v", func() error { _, err := h.c.SwapProcess(ctx, "victim", "v"); return err })
	if got := h.invoke(t, "victim", "v", "state-get", "secret"); got != h.vSecret {
		t.Fatalf("victim's secret after swap-in: %q", got)
	}
	for _, pid := range []string{"a", "peer"} {
		if got := h.invoke(t, "tenant", pid, "whoami", ""); got != pid {
			t.Fatalf("whoami on tenant/%s: %q", pid, got)
		}
	}
	h.a, h.peer = h.process(t, "tenant", "a"), h.process(t, "tenant", "peer")
	h.tenantV, h.v = h.process(t, "tenant", "v"), h.process(t, "victim", "v")
	h.vRecord0 = h.v
	if h.v.Snapshot == "" || h.v.Generation < 2 || h.v.Address == "" || h.peer.Address == "" || h.tenantV.Token == "" || h.v.Token == "" {
		t.Fatalf("victim %+v, peer %+v, tenant/v %+v: want a restored victim and addresses", h.v, h.peer, h.tenantV)
	}
	osPID, _, _ := strings.Cut(h.v.Handle, "@")
	if h.vOSPID, err = strconv.Atoi(osPID); err != nil || h.vOSPID <= 1 {
		t.Fatalf("victim's handle %q names no OS pid", h.v.Handle)
	}

	h.secrets = append(h.secrets, admin, h.appKey, h.vSecret)
	if pem, err := os.ReadFile(filepath.Join(h.data, "signing.key")); err == nil {
		lines := strings.Split(string(pem), "\n")
		if len(lines) > 1 && len(lines[1]) > 20 {
			h.secrets = append(h.secrets, lines[1])
		}
	} else {
		t.Fatal(err)
	}
	return h
}

func hasBwrap() bool {
	_, err := exec.LookPath("bwrap")
	return err == nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustDo(t *testing.T, what string, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (h *hostile) process(t *testing.T, app, pid string) client.Process {
	t.Helper()
	p, err := h.c.GetProcess(testCtx(t), app, pid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (h *hostile) call(t *testing.T, app, pid, function, input string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.c.Invoke(ctx, app, pid, function, []byte(input))
	return string(out), err
}

func (h *hostile) invoke(t *testing.T, app, pid, function, input string) string {
	t.Helper()
	out, err := h.call(t, app, pid, function, input)
	if err != nil {
		t.Fatalf("invoke %s on %s/%s: %v", function, app, pid, err)
	}
	return out
}

// attack runs function of the hostile image in tenant/a with in as JSON and
// decodes its JSON answer into out.
func (h *hostile) attack(t *testing.T, function string, in, out any) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	res := h.invoke(t, "tenant", "a", function, string(b))
	if err := json.Unmarshal([]byte(res), out); err != nil {
		t.Fatalf("%s answered %q: %v", function, res, err)
	}
}

// cred is the image's Cred: which credential an attack presents.
type cred struct {
	Kind   string  `json:"kind"`
	Token  string  `json:"token,omitempty"`
	Base   string  `json:"base,omitempty"`
	Claims *claims `json:"claims,omitempty"`
}

type claims struct {
	App *string `json:"app,omitempty"`
	PID *string `json:"pid,omitempty"`
	Sub *string `json:"sub,omitempty"`
	Gen *uint64 `json:"gen,omitempty"`
	Ops *uint8  `json:"ops,omitempty"`
}

func ptr[T any](v T) *T { return &v }

var (
	credOwn     = cred{Kind: "own"}
	credPeer    = cred{Kind: "peer"}
	credNone    = cred{Kind: "none"}
	credGarbage = cred{Kind: "garbage"}
)

func given(tok string) cred { return cred{Kind: "given", Token: tok} }

// minted is a token for app/pid/sub signed with a key of the attacker's.
func minted(app, pid, sub string, gen uint64, ops tokens.Ops) cred {
	return cred{Kind: "minted", Claims: &claims{App: &app, PID: &pid, Sub: &sub, Gen: &gen, Ops: ptr(uint8(ops))}}
}

// tampered is the process's own credential (base "own") or peer token
// ("peer") with the fields c sets changed.
func tampered(base string, c claims) cred { return cred{Kind: "tampered", Base: base, Claims: &c} }

const allOps = tokens.OpInvoke | tokens.OpSend | tokens.OpRelay | tokens.OpInternal | tokens.OpReplica

func (h *hostile) run(t *testing.T) {
	t.Run("environment", h.environment)
	t.Run("files", h.files)
	t.Run("internal API", h.internalAPI)
	t.Run("REST API", h.restAPI)
	t.Run("data plane", h.dataPlane)
	t.Run("message source", h.messageSource)
	if h.store == "s3" {
		t.Run("metadata store", h.metadataStore)
	}
	t.Run("victim unharmed", h.victimUnharmed)
}

// No swap-store, metadata-store or admin credentials, nor the signing key,
// reach a process's environment.
func (h *hostile) environment(t *testing.T) {
	var res struct{ Names, Leaked []string }
	h.attack(t, "env", map[string]any{"secrets": h.secrets}, &res)
	if !slices.Contains(res.Names, cpapi.EnvToken) {
		t.Fatalf("the process has no %s: %v", cpapi.EnvToken, res.Names)
	}
	for _, name := range res.Names {
		up := strings.ToUpper(name)
		if name == cpapi.EnvSwap || name == EnvToken || name == "PRAAS_ADMIN_KEY" || name == EnvConfig ||
			strings.HasPrefix(up, "AWS_") || strings.Contains(up, "SECRET") || strings.Contains(up, "ACCESS_KEY") ||
			strings.Contains(up, "PASSWORD") || strings.Contains(up, "REDIS") || strings.Contains(up, "S3") {
			t.Errorf("the process's environment has %s", name)
		}
	}
	for _, s := range res.Leaked {
		t.Errorf("a value in the process's environment holds the secret %.12q...", s)
	}
}

// The control plane's data directory (metadata, signing key, swap files,
// run records, logs) and other processes' /proc entries are out of reach:
// nothing can be read or written there.
func (h *hostile) files(t *testing.T) {
	d := h.data
	read := []string{
		d,
		filepath.Join(d, "signing.key"),
		filepath.Join(d, "replica-id"),
		filepath.Join(d, "run"),
		filepath.Join(d, "logs"),
		filepath.Join(d, "logs", "victim", "v.out"),
		filepath.Join(d, "logs", "victim", "v.log"),
		filepath.Join(d, "logs", "tenant", "a.log"),
		fmt.Sprintf("/proc/%d/environ", h.vOSPID),
		fmt.Sprintf("/proc/%d/root/", h.vOSPID),
		fmt.Sprintf("/proc/%d/cwd/", h.vOSPID),
		fmt.Sprintf("/proc/%d/environ", h.cpPID),
	}
	write := []string{
		filepath.Join(d, "signing.key"),
		filepath.Join(d, "planted"),
		filepath.Join(d, "run", "planted"),
	}
	if h.store == "file" {
		swap := filepath.Join(d, "swap")
		read = append(read, filepath.Join(d, "meta.db"), swap,
			filepath.Join(swap, "snapshots", "victim", "v"),
			filepath.Join(swap, filepath.FromSlash(h.v.Snapshot)))
		write = append(write,
			filepath.Join(swap, filepath.FromSlash(h.v.Snapshot)),
			filepath.Join(swap, filepath.FromSlash(cpapi.SnapshotKey("victim", "v", h.v.Generation, 999))),
			filepath.Join(swap, filepath.FromSlash(cpapi.SnapshotKey("tenant", "a", h.a.Generation, 999))))
	}
	var res struct{ Read, Write map[string]string }
	h.attack(t, "fs", map[string]any{"read": read, "write": write}, &res)
	t.Logf("in isolation %s: read %v; write %v", h.mode, res.Read, res.Write)
	for what, paths := range map[string][]string{"read": read, "write": write} {
		outcomes := map[string]map[string]string{"read": res.Read, "write": res.Write}[what]
		for _, path := range paths {
			if got := outcomes[path]; got != "denied" && got != "absent" {
				t.Errorf("%s %s from tenant/a: %q, want denied or absent", what, path, got)
			}
		}
	}
	// The victim's /proc entry is there but closed in user mode; in a pid
	// namespace it does not exist.
	want := map[string]string{"user": "denied", "namespaces": "absent"}[h.mode]
	if p := fmt.Sprintf("/proc/%d/environ", h.vOSPID); res.Read[p] != want {
		t.Errorf("%s in isolation %s: %q, want %q", p, h.mode, res.Read[p], want)
	}
	// What is its own it reaches: the probe works.
	ownRead, ownWrite := "/proc/self/environ", "/tmp/hostile-"+uniqueName("")
	h.attack(t, "fs", map[string]any{"read": []string{ownRead}, "write": []string{ownWrite}}, &res)
	if !strings.HasPrefix(res.Read[ownRead], "ok") || !strings.HasPrefix(res.Write[ownWrite], "ok") {
		t.Errorf("its own files from tenant/a: read %v, write %v, want ok", res.Read, res.Write)
	}
}

// httpAs makes an HTTP request from tenant/a: path on the control plane
// (or a full URL), body JSON-encoded unless it is a string.
func (h *hostile) httpAs(t *testing.T, method, path string, body any, c cred) (int, string) {
	t.Helper()
	var b string
	switch body := body.(type) {
	case nil:
	case string:
		b = body
	default:
		raw, _ := json.Marshal(body)
		b = string(raw)
	}
	var res struct {
		Status int
		Body   string
	}
	h.attack(t, "http", map[string]any{"method": method, "url": path, "body": b, "cred": c}, &res)
	return res.Status, res.Body
}

type httpAttack struct {
	name         string
	method, path string
	body         any
	cred         cred
	want         []int
}

func (h *hostile) try(t *testing.T, attacks []httpAttack) {
	t.Helper()
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			status, body := h.httpAs(t, at.method, at.path, at.body, at.cred)
			if !slices.Contains(at.want, status) {
				t.Errorf("%s %s with a %s credential: %d %.300s, want one of %v", at.method, at.path, at.cred.Kind, status, body, at.want)
			}
		})
	}
}

// The internal API speaks only for the caller's own process and
// generation: registration, heartbeats, snapshot reports, snapshot access
// and invocations as another app's process (or another generation of its
// own) are refused, with its own credential, none, a garbage one, a minted
// one or its own tampered with.
func (h *hostile) internalAPI(t *testing.T) {
	v, a := h.v, h.a
	reg := cpapi.Register{App: "victim", PID: "v", Generation: v.Generation, Address: "127.0.0.1:9"}
	hb := cpapi.Heartbeat{App: "victim", PID: "v", Generation: v.Generation}
	oldHB := cpapi.Heartbeat{App: "victim", PID: "v", Generation: v.Generation - 1}
	forged := cpapi.SnapshotKey("victim", "v", v.Generation, 999)
	report := cpapi.Snapshot{App: "victim", PID: "v", Generation: v.Generation, Key: forged, Bytes: 6}
	getV := cpapi.SnapshotAccessRequest{App: "victim", PID: "v", Generation: v.Generation, Op: cpapi.SnapshotGet}
	getVKey := cpapi.SnapshotAccessRequest{App: "victim", PID: "v", Generation: v.Generation, Op: cpapi.SnapshotGet, Key: v.Snapshot}
	putV := cpapi.SnapshotAccessRequest{App: "victim", PID: "v", Generation: v.Generation, Op: cpapi.SnapshotPut, Seq: 999, Size: 6}
	getOwnVKey := cpapi.SnapshotAccessRequest{App: "tenant", PID: "a", Generation: a.Generation, Op: cpapi.SnapshotGet, Key: v.Snapshot}
	getNextGen := cpapi.SnapshotAccessRequest{App: "tenant", PID: "a", Generation: a.Generation + 1, Op: cpapi.SnapshotGet}
	putNextGen := cpapi.SnapshotAccessRequest{App: "tenant", PID: "a", Generation: a.Generation + 1, Op: cpapi.SnapshotPut, Seq: 1, Size: 6}
	getTenantV := cpapi.SnapshotAccessRequest{App: "tenant", PID: "v", Generation: h.tenantV.Generation, Op: cpapi.SnapshotGet, Key: v.Snapshot}
	data := func(app, pid string, gen uint64, key string) string {
		q := url.Values{"app": {app}, "pid": {pid}, "generation": {strconv.FormatUint(gen, 10)}, "key": {key}}
		return cpapi.PathSnapshotData + "?" + q.Encode()
	}
	victimCred := minted("victim", tokens.AnyPID, "v", v.Generation, allOps)
	asVictim := tampered("own", claims{App: ptr("victim"), Sub: ptr("v"), Gen: ptr(v.Generation)})
	asPeer := tampered("own", claims{Sub: ptr("peer"), Gen: ptr(h.peer.Generation)})
	nextGen := tampered("own", claims{Gen: ptr(a.Generation + 1)})
	putOwn := func(seq uint64) cpapi.SnapshotAccessRequest {
		return cpapi.SnapshotAccessRequest{App: "tenant", PID: "a", Generation: a.Generation, Op: cpapi.SnapshotPut, Seq: seq, Size: 6}
	}
	peerHB := cpapi.Heartbeat{App: "tenant", PID: "peer", Generation: h.peer.Generation}
	unauth, denied, refused := []int{401}, []int{403}, []int{401, 403, 410}
	h.try(t, []httpAttack{
		{"register as victim without credential", "POST", cpapi.PathRegister, reg, credNone, unauth},
		{"register as victim with garbage", "POST", cpapi.PathRegister, reg, credGarbage, unauth},
		{"register as victim with own credential", "POST", cpapi.PathRegister, reg, credOwn, denied},
		{"register as victim with peer token", "POST", cpapi.PathRegister, reg, credPeer, denied},
		{"register as victim with minted token", "POST", cpapi.PathRegister, reg, victimCred, unauth},
		{"register as victim with tampered credential", "POST", cpapi.PathRegister, reg, asVictim, unauth},
		{"heartbeat as victim without credential", "POST", cpapi.PathHeartbeat, hb, credNone, unauth},
		{"heartbeat as victim with own credential", "POST", cpapi.PathHeartbeat, hb, credOwn, denied},
		{"heartbeat as victim with minted token", "POST", cpapi.PathHeartbeat, hb, victimCred, unauth},
		{"heartbeat as victim's old generation", "POST", cpapi.PathHeartbeat, oldHB, credOwn, refused},
		{"heartbeat as own peer with tampered sub", "POST", cpapi.PathHeartbeat, peerHB, asPeer, unauth},
		{"snapshot report as victim without credential", "POST", cpapi.PathSnapshot, report, credNone, unauth},
		{"snapshot report as victim with own credential", "POST", cpapi.PathSnapshot, report, credOwn, denied},
		{"snapshot report as victim with minted token", "POST", cpapi.PathSnapshot, report, victimCred, unauth},
		{"snapshot report as victim with tampered credential", "POST", cpapi.PathSnapshot, report, asVictim, unauth},
		{"get access to victim's snapshot", "POST", cpapi.PathSnapshotAccess, getV, credOwn, denied},
		{"get access to victim's snapshot by key", "POST", cpapi.PathSnapshotAccess, getVKey, credOwn, denied},
		{"put access to victim's key", "POST", cpapi.PathSnapshotAccess, putV, credOwn, denied},
		{"put access to victim's key without credential", "POST", cpapi.PathSnapshotAccess, putV, credNone, unauth},
		{"get access to victim's snapshot with minted token", "POST", cpapi.PathSnapshotAccess, getV, victimCred, unauth},
		{"get access to victim's snapshot with tampered credential", "POST", cpapi.PathSnapshotAccess, getV, asVictim, unauth},
		{"get access to victim's snapshot as own pid", "POST", cpapi.PathSnapshotAccess, getOwnVKey, credOwn, denied},
		{"get access to victim's snapshot as own app's pid v", "POST", cpapi.PathSnapshotAccess, getTenantV, credOwn, denied},
		{"get access as own next generation", "POST", cpapi.PathSnapshotAccess, getNextGen, credOwn, refused},
		{"put access as own next generation", "POST", cpapi.PathSnapshotAccess, putNextGen, credOwn, refused},
		{"put access as own next generation, tampered credential", "POST", cpapi.PathSnapshotAccess, putNextGen, nextGen, unauth},
		{"stream victim's snapshot as own pid", "GET", data("tenant", "a", a.Generation, v.Snapshot), nil, credOwn, denied},
		{"stream into victim's key as own pid", "PUT", data("tenant", "a", a.Generation, forged), "forged", credOwn, denied},
		{"stream victim's snapshot as victim", "GET", data("victim", "v", v.Generation, v.Snapshot), nil, credOwn, denied},
		{"stream into victim's key as victim", "PUT", data("victim", "v", v.Generation, forged), "forged", credOwn, denied},
		{"stream victim's snapshot without credential", "GET", data("victim", "v", v.Generation, v.Snapshot), nil, credNone, unauth},
		{"invoke victim through the internal API", "POST", cpapi.PathInvoke + "?app=victim&pid=v&function=state-get", "secret", credOwn, denied},
		{"invoke victim through the internal API with minted token", "POST", cpapi.PathInvoke + "?app=victim&pid=v&function=state-get", "secret", victimCred, unauth},
		{"queue a message for victim", "POST", cpapi.PathMessages + "?app=victim&dest=v&key=k", "x", credOwn, denied},
		{"watch victim's members", "GET", cpapi.PathMembers + "?app=victim&pid=v&epoch=0", nil, credOwn, denied},
		{"ask victim's owner to flush", "POST", cpapi.PathFlush + "?app=victim&pid=v", nil, credOwn, denied},
		// Controls: its own snapshot it may write, with its credential as
		// the control plane issued it and re-encoded by the image unchanged
		// (so a tampered token fails on its signature, not its encoding).
		{"control: put access to own key", "POST", cpapi.PathSnapshotAccess, putOwn(100), credOwn, []int{200}},
		{"control: put access to own key, re-encoded credential", "POST", cpapi.PathSnapshotAccess, putOwn(101), tampered("own", claims{}), []int{200}},
	})
}

// The REST API takes API keys only: a process credential is no key, and an
// app's key cannot create apps (whose image could be any host path).
func (h *hostile) restAPI(t *testing.T) {
	evil := map[string]string{"name": "evil", "image": "/bin/sh"}
	h.try(t, []httpAttack{
		{"list apps with own credential", "GET", "/v1/apps", nil, credOwn, []int{401}},
		{"read victim's record with own credential", "GET", "/v1/apps/victim/processes/v", nil, credOwn, []int{401}},
		{"read victim's record with peer token", "GET", "/v1/apps/victim/processes/v", nil, credPeer, []int{401}},
		{"invoke victim with own credential", "POST", "/v1/apps/victim/invoke/state-get?pid=v", "secret", credOwn, []int{401}},
		{"read victim's record with own app's key", "GET", "/v1/apps/victim/processes/v", nil, given(h.appKey), []int{403}},
		{"create an app with a host path, app key", "POST", "/v1/apps", evil, given(h.appKey), []int{403}},
		{"create an app with a host path, no key", "POST", "/v1/apps", evil, credNone, []int{401}},
		{"create an app with a host path, own credential", "POST", "/v1/apps", evil, credOwn, []int{401}},
		{"make an admin key with own app's key", "POST", "/v1/keys", nil, given(h.appKey), []int{403}},
		{"control: own app's key on own app", "GET", "/v1/apps/tenant/processes/a", nil, given(h.appKey), []int{200}},
	})
}

type dialResult struct {
	Stage, Code, Error, Output string
}

func (h *hostile) dial(t *testing.T, addr string, c cred, op map[string]string) dialResult {
	t.Helper()
	in := map[string]any{"addr": addr, "cred": c}
	for k, v := range op {
		in[k] = v
	}
	var res dialResult
	h.attack(t, "dial", in, &res)
	return res
}

// The victim's data plane admits none of what the attacker has: its own
// credential, its peer token, a client token of its own app's process of
// the same name, a token it signed itself, or its own tampered with.
func (h *hostile) dataPlane(t *testing.T) {
	steal := map[string]string{"op": "invoke", "function": "state-get", "data": "secret", "source": "v"}
	for _, tc := range []struct {
		name string
		cred cred
		msg  string
	}{
		{"own credential", credOwn, ""},
		{"peer token", credPeer, ""},
		{"no token", credNone, ""},
		{"client token of tenant/v", given(h.tenantV.Token), ""},
		{"minted token", minted("victim", tokens.AnyPID, "", 0, allOps), "signature"},
		{"minted token for pid v", minted("victim", "v", "v", h.v.Generation, allOps), "signature"},
		{"peer token with app changed", tampered("peer", claims{App: ptr("victim")}), "signature"},
		{"own credential with app and pid changed", tampered("own", claims{App: ptr("victim"), PID: ptr("v"), Sub: ptr("v")}), "signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.dial(t, h.v.Address, tc.cred, steal)
			if res.Stage != "dial" || res.Code != errs.Unauthenticated.String() || !strings.Contains(res.Error, tc.msg) {
				t.Errorf("dial victim with %s: %+v, want the handshake refused (unauthenticated%s)", tc.name, res, ifNotEmpty(", ", tc.msg))
			}
		})
	}
	// Control: with the victim's own client token the same call gets the
	// secret, so the refusals above are the tokens'.
	if res := h.dial(t, h.v.Address, given(h.v.Token), steal); res.Stage != "done" || res.Output != h.vSecret {
		t.Errorf("dial victim with its client token: %+v, want its secret", res)
	}
	// A token of its own app, tampered to add relay, does not reach even
	// its own peer.
	relay := uint8(tokens.OpInvoke | tokens.OpSend | tokens.OpRelay)
	res := h.dial(t, h.peer.Address, tampered("peer", claims{Ops: &relay}), map[string]string{"op": "send", "source": "v", "key": "relayed", "data": "x"})
	if res.Stage != "dial" || res.Code != errs.Unauthenticated.String() {
		t.Errorf("dial own peer with a peer token tampered to relay: %+v, want unauthenticated", res)
	}
}

func ifNotEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

// A message's source is the sender's token's, whatever the frame or the
// query says.
func (h *hostile) messageSource(t *testing.T) {
	for _, forged := range []string{"v", "peer", ""} {
		res := h.dial(t, h.peer.Address, credPeer, map[string]string{"op": "send", "source": forged, "key": "spoof", "data": "forged-" + forged})
		if res.Stage != "done" {
			t.Fatalf("send to own peer: %+v", res)
		}
		if got := h.invoke(t, "tenant", "peer", "recv", "ANY spoof 10000"); got != "a forged-"+forged {
			t.Errorf("message sent by a as %q received as %q, want source a", forged, got)
		}
	}
	if status, body := h.httpAs(t, "POST", cpapi.PathMessages+"?app=tenant&src=v&dest=peer&key=spoof", "queued", credOwn); status/100 != 2 {
		t.Fatalf("message through the internal API: %d %s", status, body)
	}
	if got := h.invoke(t, "tenant", "peer", "recv", "ANY spoof 10000"); got != "a queued" {
		t.Errorf("message queued by a with src=v received as %q, want source a", got)
	}
	// Keys of the control plane are not for processes.
	res := h.dial(t, h.peer.Address, credPeer, map[string]string{"op": "send", "source": "a", "key": "praas:owner", "data": "http://127.0.0.1:9"})
	if res.Stage != "op" || res.Code != errs.PermissionDenied.String() {
		t.Errorf("send with a praas: key: %+v, want permission_denied", res)
	}
}

// After all of it, the victim runs as before with its state, and no app
// was created.
func (h *hostile) victimUnharmed(t *testing.T) {
	if got := h.invoke(t, "victim", "v", "state-get", "secret"); got != h.vSecret {
		t.Errorf("victim's secret: %q", got)
	}
	v := h.process(t, "victim", "v")
	if v.Address != h.vRecord0.Address || v.Generation != h.vRecord0.Generation || v.Snapshot != h.vRecord0.Snapshot || v.Status != "active" {
		t.Errorf("victim's record changed: %+v, was %+v", v, h.vRecord0)
	}
	if _, err := h.c.GetApp(testCtx(t), "evil"); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("app evil: %v, want not found", err)
	}
	// The victim survives a swap with the state it had.
	mustDo(t, "swap victim/v", func() error { _, err := h.c.SwapProcess(testCtx(t), "victim", "v"); return err })
	if got := h.invoke(t, "victim", "v", "state-get", "secret"); got != h.vSecret {
		t.Errorf("victim's secret after another swap: %q", got)
	}
}

// The metadata store is on the network processes share: without a password
// any process can read and rewrite every record (apps, their images, API
// key hashes). With one, it answers a process nothing but NOAUTH.
func (h *hostile) metadataStore(t *testing.T) {
	var res struct{ Error, Reply string }
	h.attack(t, "tcp", map[string]string{"addr": h.redis.Host, "data": "PING\r\n"}, &res)
	refused := res.Error != "" || strings.Contains(res.Reply, "NOAUTH")
	if _, hasPassword := h.redis.User.Password(); h.redis.User == nil || !hasPassword {
		// The test servers run Redis without a password: say what a process
		// could do, without failing on a property of the test setup.
		if !refused {
			t.Logf("SECURITY: the metadata store %s has no password and processes reach it: %+v; deployments must set one (redis://:PASSWORD@host)", h.redis.Host, res)
		}
		return
	}
	if !refused {
		t.Errorf("PING to the metadata store from tenant/a: %+v, want NOAUTH", res)
	}
}
