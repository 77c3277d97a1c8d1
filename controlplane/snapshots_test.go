package controlplane

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
)

// credential is the fake process's own credential for the internal API.
func (p *fakeProc) credential() string { return p.env[cpapi.EnvToken] }

// putSnapshot writes data as snapshot seq of generation gen, as the runtime
// does: access from the control plane, then one PUT through it.
func (p *fakeProc) putSnapshot(app, pid string, gen, seq uint64, data string) error {
	code, a, err := askAccess(p.env[cpapi.EnvControlPlane], p.credential(), cpapi.SnapshotAccessRequest{
		App: app, PID: pid, Generation: gen, Op: cpapi.SnapshotPut, Seq: seq, Size: int64(len(data))})
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("snapshot access: %d", code)
	}
	code, body, err := transfer(a, p.credential(), []byte(data))
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return fmt.Errorf("%s snapshot: %d %s", a.Method, code, body)
	}
	return nil
}

// askAccess posts a snapshot-access request with cred.
func askAccess(base, cred string, req cpapi.SnapshotAccessRequest) (int, cpapi.SnapshotAccess, error) {
	var a cpapi.SnapshotAccess
	data, _ := json.Marshal(req)
	r, _ := http.NewRequest(http.MethodPost, base+cpapi.PathSnapshotAccess, bytes.NewReader(data))
	if cred != "" {
		r.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return 0, a, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		err = json.NewDecoder(resp.Body).Decode(&a)
	}
	return resp.StatusCode, a, err
}

// transfer makes the request a grants: a PUT of body, or a GET. It sends
// cred only where the grant says the URL wants it.
func transfer(a cpapi.SnapshotAccess, cred string, body []byte) (int, []byte, error) {
	var r io.Reader
	if a.Method == http.MethodPut {
		r = bytes.NewReader(body)
	}
	return rawRequest(a.Method, a.URL, map[bool]string{true: cred}[a.Auth], r)
}

func rawRequest(method, u, cred string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return 0, nil, err
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// presignSwap is memSwap with presigned URLs, served by a fake store that
// checks an HMAC over method, key and expiry, as S3 does with its signature.
type presignSwap struct {
	*memSwap
	srv *httptest.Server
	key []byte
}

var _ store.Presigner = (*presignSwap)(nil)

func newPresignSwap(t *testing.T, m *memSwap) *presignSwap {
	p := &presignSwap{memSwap: m, key: []byte("store secret")}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *presignSwap) sign(method, key string, expires int64) string {
	mac := hmac.New(sha256.New, p.key)
	fmt.Fprintf(mac, "%s\n%s\n%d", method, key, expires)
	return hex.EncodeToString(mac.Sum(nil))
}

func (p *presignSwap) presign(method, key string, ttl time.Duration) (*url.URL, error) {
	if key == "" || strings.Contains(key, "..") {
		return nil, fmt.Errorf("bad key %q: %w", key, errs.ErrInvalidArgument)
	}
	exp := time.Now().Add(ttl).Unix()
	u, _ := url.Parse(p.srv.URL + "/" + key)
	u.RawQuery = url.Values{"expires": {strconv.FormatInt(exp, 10)}, "sig": {p.sign(method, key, exp)}}.Encode()
	return u, nil
}

func (p *presignSwap) PresignPut(_ context.Context, key string, ttl time.Duration) (*url.URL, error) {
	return p.presign(http.MethodPut, key, ttl)
}

func (p *presignSwap) PresignGet(_ context.Context, key string, ttl time.Duration) (*url.URL, error) {
	return p.presign(http.MethodGet, key, ttl)
}

func (p *presignSwap) serve(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/")
	exp, _ := strconv.ParseInt(r.URL.Query().Get("expires"), 10, 64)
	if !hmac.Equal([]byte(r.URL.Query().Get("sig")), []byte(p.sign(r.Method, key, exp))) || time.Now().Unix() > exp ||
		r.Header.Get("Authorization") != "" {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	switch r.Method {
	case http.MethodPut:
		if r.ContentLength < 0 {
			w.WriteHeader(http.StatusLengthRequired)
			return
		}
		if err := p.Put(r.Context(), key, r.Body, r.ContentLength); err != nil {
			w.WriteHeader(http.StatusInternalServerError)
		}
	case http.MethodGet:
		rc, err := p.Get(r.Context(), key)
		if err != nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		defer rc.Close()
		io.Copy(w, rc)
	}
}

func (m *memSwap) content(key string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return string(m.objs[key])
}

// TestSnapshotAccess: a process gets put access for keys of its own
// generation and get access for the snapshot its record names, and nothing
// else: not another pid's, not another app's, not an older generation's,
// not an arbitrary key, on the access route and on the streaming route.
func TestSnapshotAccess(t *testing.T) {
	ctx := context.Background()
	for _, presign := range []bool{false, true} {
		name := map[bool]string{false: "streamed", true: "presigned"}[presign]
		t.Run(name, func(t *testing.T) {
			var ps *presignSwap
			h := newHarness(t, nil, func(c *Config) {
				if presign {
					ps = newPresignSwap(t, c.Swap.(*memSwap))
					c.Swap = ps
				}
			})
			other := store.App{Name: "other", Image: "builtin", Secret: "other secret", CreatedAt: time.Now()}
			if err := h.meta.CreateApp(ctx, other); err != nil {
				t.Fatal(err)
			}
			if _, err := h.meta.CreateProcess(ctx, store.Process{App: "other", PID: "p1", Status: store.StatusAllocating}); err != nil {
				t.Fatal(err)
			}
			if _, err := h.s.activeProcess(ctx, other, "p1"); err != nil {
				t.Fatal(err)
			}
			// p1: generation 1 swapped out (its snapshot 1-1 recorded), now
			// generation 2. p2: generation 1, running.
			h.create("p1")
			h.create("p2")
			old := h.mustActivate("p1")
			oldCred := h.be.proc(old.backendHandle()).credential()
			if err := h.s.swapOut(ctx, old); err != nil {
				t.Fatal(err)
			}
			cur := h.mustActivate("p1")
			cred := h.be.proc(cur.backendHandle()).credential()
			h.mustActivate("p2")
			recorded := cpapi.SnapshotKey("app", "p1", 1, 1)
			p2Key := cpapi.SnapshotKey("app", "p2", 1, 9)
			if err := h.swap.Put(ctx, p2Key, strings.NewReader("p2's"), 4); err != nil {
				t.Fatal(err)
			}
			if rec := h.record("p1"); rec.Generation != 2 || rec.Snapshot != recorded {
				t.Fatalf("record %+v: want generation 2 naming %s", rec, recorded)
			}
			put := func(app, pid string, gen, seq uint64) cpapi.SnapshotAccessRequest {
				return cpapi.SnapshotAccessRequest{App: app, PID: pid, Generation: gen, Op: cpapi.SnapshotPut, Seq: seq, Size: 3}
			}
			get := func(app, pid string, gen uint64, key string) cpapi.SnapshotAccessRequest {
				return cpapi.SnapshotAccessRequest{App: app, PID: pid, Generation: gen, Op: cpapi.SnapshotGet, Key: key}
			}
			wantURL := func(t *testing.T, a cpapi.SnapshotAccess) {
				t.Helper()
				if presign {
					if a.Auth || !strings.HasPrefix(a.URL, ps.srv.URL+"/"+a.Key+"?") {
						t.Fatalf("grant %+v: want a presigned URL of the store, without auth", a)
					}
				} else if !a.Auth || !strings.HasPrefix(a.URL, h.s.cfg.URL+cpapi.PathSnapshotData+"?") {
					t.Fatalf("grant %+v: want the control plane's streaming route, with auth", a)
				}
				if d := time.Until(a.Expires); d < snapshotAccessTTL-time.Minute || d > snapshotAccessTTL {
					t.Errorf("grant expires in %s, want about %s", d, snapshotAccessTTL)
				}
			}

			t.Run("put of its own generation's key", func(t *testing.T) {
				code, a, err := askAccess(h.s.cfg.URL, cred, put("app", "p1", 2, 5))
				if err != nil || code != http.StatusOK {
					t.Fatalf("access: %d %v", code, err)
				}
				if want := cpapi.SnapshotKey("app", "p1", 2, 5); a.Key != want || a.Method != http.MethodPut {
					t.Fatalf("grant %+v: want PUT of %s", a, want)
				}
				wantURL(t, a)
				if code, body, err := transfer(a, cred, []byte("new")); err != nil || code/100 != 2 {
					t.Fatalf("PUT: %d %s %v", code, body, err)
				}
				if got := h.swap.content(a.Key); got != "new" {
					t.Fatalf("stored %q, want new", got)
				}
			})
			t.Run("a put too large for one request goes through the control plane", func(t *testing.T) {
				req := put("app", "p1", 2, 8)
				req.Size = maxPresignedPut + 1
				code, a, err := askAccess(h.s.cfg.URL, cred, req)
				if err != nil || code != http.StatusOK {
					t.Fatalf("access: %d %v", code, err)
				}
				if !a.Auth || !strings.HasPrefix(a.URL, h.s.cfg.URL+cpapi.PathSnapshotData+"?") {
					t.Fatalf("grant %+v: want the control plane's streaming route", a)
				}
			})
			t.Run("get of the snapshot its record names", func(t *testing.T) {
				for _, key := range []string{"", recorded} {
					code, a, err := askAccess(h.s.cfg.URL, cred, get("app", "p1", 2, key))
					if err != nil || code != http.StatusOK || a.Key != recorded || a.Method != http.MethodGet {
						t.Fatalf("access naming %q: %d %+v %v: want GET of %s", key, code, a, err, recorded)
					}
					wantURL(t, a)
					code, body, err := transfer(a, cred, nil)
					if err != nil || code != http.StatusOK || string(body) != "state of "+recorded {
						t.Fatalf("GET: %d %q %v", code, body, err)
					}
				}
			})
			for _, tc := range []struct {
				name string
				cred string
				req  cpapi.SnapshotAccessRequest
				want int
			}{
				{"get of another key of its own", cred, get("app", "p1", 2, cpapi.SnapshotKey("app", "p1", 2, 5)), http.StatusForbidden},
				{"get of another pid's snapshot", cred, get("app", "p1", 2, p2Key), http.StatusForbidden},
				{"put as another pid", cred, put("app", "p2", 1, 3), http.StatusForbidden},
				{"get as another pid", cred, get("app", "p2", 1, ""), http.StatusForbidden},
				{"put as another app's process", cred, put("other", "p1", 1, 3), http.StatusForbidden},
				{"get as another app's process", cred, get("other", "p1", 1, ""), http.StatusForbidden},
				{"put as an older generation", cred, put("app", "p1", 1, 3), http.StatusForbidden},
				{"put by an older generation", oldCred, put("app", "p1", 1, 3), http.StatusGone},
				{"get by an older generation", oldCred, get("app", "p1", 1, ""), http.StatusGone},
				{"put without a credential", "", put("app", "p1", 2, 3), http.StatusUnauthorized},
				{"put with a forged credential", "x" + cred, put("app", "p1", 2, 3), http.StatusUnauthorized},
				{"put of seq 0", cred, put("app", "p1", 2, 0), http.StatusBadRequest},
				{"an unknown op", cred, cpapi.SnapshotAccessRequest{App: "app", PID: "p1", Generation: 2, Op: "delete"}, http.StatusBadRequest},
			} {
				t.Run(tc.name+" is refused", func(t *testing.T) {
					code, a, err := askAccess(h.s.cfg.URL, tc.cred, tc.req)
					if err != nil || code != tc.want {
						t.Fatalf("access: %d %+v %v, want %d", code, a, err, tc.want)
					}
				})
			}
			t.Run("the streaming route checks the rule again", func(t *testing.T) {
				data := func(method, pid string, gen uint64, key string) int {
					q := url.Values{"app": {"app"}, "pid": {pid}, "generation": {strconv.FormatUint(gen, 10)}, "key": {key}}
					var body io.Reader
					if method == http.MethodPut {
						body = strings.NewReader("forged")
					}
					code, _, err := rawRequest(method, h.s.cfg.URL+cpapi.PathSnapshotData+"?"+q.Encode(), cred, body)
					if err != nil {
						t.Fatal(err)
					}
					return code
				}
				for _, tc := range []struct {
					method, pid string
					gen         uint64
					key         string
					want        int
				}{
					{http.MethodPut, "p1", 2, p2Key, http.StatusForbidden},
					{http.MethodPut, "p1", 2, recorded, http.StatusForbidden}, // an older generation's key
					{http.MethodPut, "p1", 2, cpapi.SnapshotPrefix("app", "p1") + "2-0", http.StatusForbidden},
					{http.MethodPut, "p1", 2, cpapi.SnapshotPrefix("app", "p1") + "2-5/../../p2/1-9", http.StatusForbidden},
					{http.MethodPut, "p1", 2, "snapshots/other/p1/1-1", http.StatusForbidden},
					{http.MethodPut, "p2", 1, p2Key, http.StatusForbidden},
					{http.MethodGet, "p1", 2, p2Key, http.StatusForbidden},
					{http.MethodGet, "p2", 1, p2Key, http.StatusForbidden},
					{http.MethodGet, "p1", 1, recorded, http.StatusForbidden},
				} {
					if code := data(tc.method, tc.pid, tc.gen, tc.key); code != tc.want {
						t.Errorf("%s %s as %s generation %d: %d, want %d", tc.method, tc.key, tc.pid, tc.gen, code, tc.want)
					}
				}
				if got := h.swap.content(p2Key); got != "p2's" {
					t.Fatalf("p2's snapshot is %q now", got)
				}
				if got := h.swap.content(recorded); got != "state of "+recorded {
					t.Fatalf("p1's recorded snapshot is %q now", got)
				}
				if !presign {
					if code := data(http.MethodGet, "p1", 2, recorded); code != http.StatusOK {
						t.Errorf("GET of its own recorded snapshot: %d", code)
					}
				}
			})
			t.Run("a URL of one key does not reach another", func(t *testing.T) {
				code, a, err := askAccess(h.s.cfg.URL, cred, put("app", "p1", 2, 6))
				if err != nil || code != http.StatusOK {
					t.Fatalf("access: %d %v", code, err)
				}
				a.URL = strings.Replace(a.URL, url.QueryEscape(a.Key), url.QueryEscape(p2Key), 1)
				a.URL = strings.Replace(a.URL, a.Key, p2Key, 1)
				if code, _, err := transfer(a, cred, []byte("forged")); err != nil || code/100 == 2 {
					t.Fatalf("PUT through a retargeted URL: %d %v", code, err)
				}
				if got := h.swap.content(p2Key); got != "p2's" {
					t.Fatalf("p2's snapshot is %q now", got)
				}
			})
			t.Run("a generation that ended gets nothing", func(t *testing.T) {
				l := h.s.lookupLive("app", "p2")
				p2Cred := h.be.proc(l.backendHandle()).credential()
				if err := h.s.swapOut(ctx, l); err != nil {
					t.Fatal(err)
				}
				for _, req := range []cpapi.SnapshotAccessRequest{put("app", "p2", 1, 7), get("app", "p2", 1, "")} {
					if code, _, err := askAccess(h.s.cfg.URL, p2Cred, req); err != nil || code != http.StatusGone {
						t.Errorf("%s by swapped-out generation: %d %v, want 410", req.Op, code, err)
					}
				}
			})
			t.Run("heartbeat replies pre-issue the orphan key", func(t *testing.T) {
				hb := cpapi.Heartbeat{App: "app", PID: "p1", Generation: 2, OrphanNanos: int64(10 * time.Minute)}
				data, _ := json.Marshal(hb)
				req, _ := http.NewRequest(http.MethodPost, h.s.cfg.URL+cpapi.PathHeartbeat, bytes.NewReader(data))
				req.Header.Set("Authorization", "Bearer "+cred)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var reply cpapi.HeartbeatReply
				if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("heartbeat: %d %v", resp.StatusCode, err)
				}
				if !presign {
					if reply.Orphan != nil {
						t.Fatalf("orphan URL %+v from a store that presigns none", reply.Orphan)
					}
					return
				}
				a := reply.Orphan
				if a == nil || a.Key != cpapi.SnapshotKey("app", "p1", 2, cpapi.OrphanSeq) || a.Method != http.MethodPut || a.Auth {
					t.Fatalf("orphan access %+v: want a presigned PUT of generation 2's orphan key", a)
				}
				if d := time.Until(a.Expires); d < 9*time.Minute || d > 10*time.Minute {
					t.Errorf("orphan URL expires in %s, want about the 10m asked for", d)
				}
				if code, body, err := transfer(*a, "", []byte("orphaned")); err != nil || code/100 != 2 {
					t.Fatalf("PUT through the orphan URL: %d %s %v", code, body, err)
				}
			})
		})
	}
}
