package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/testenv"
)

// httpAs makes an HTTP request from inside app/pid, through the test
// image's http function: what any function there could do, with the
// process's own credential if auth is set. It returns the status code and
// the answer.
func (cl *cluster) httpAs(t *testing.T, app, pid, method, u, body string, auth bool) (int, string) {
	t.Helper()
	in, _ := json.Marshal(map[string]any{"method": method, "url": u, "body": body, "auth": auth})
	out := cl.invoke(t, app, pid, "http", string(in))
	codeText, answer, _ := strings.Cut(out, "\n")
	code, err := strconv.Atoi(codeText)
	if err != nil {
		t.Fatalf("http from %s/%s: %q", app, pid, out)
	}
	return code, answer
}

func (cl *cluster) process(t *testing.T, app, pid string) client.Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	p, err := cl.c.GetProcess(ctx, app, pid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A function in a process cannot read or write another process's snapshots,
// whatever it does with what its process holds: there are no swap-store
// credentials in the process, the control plane grants access to the
// process's own snapshots only, its streaming route (file store) checks the
// same rule, and a presigned URL (S3) does not stretch to another key.
func TestSnapshotAccessIsolation(t *testing.T) {
	t.Parallel()
	for _, setup := range []string{"file", "s3"} {
		t.Run(setup, func(t *testing.T) {
			swapURL := ""
			if setup == "s3" {
				u, err := url.Parse(testenv.S3(t))
				if err != nil {
					t.Fatal(err)
				}
				q := u.Query()
				q.Set("prefix", "e2e-"+strings.ToLower(rand.Text()[:10])+"/")
				u.RawQuery = q.Encode()
				swapURL = u.String()
			}
			cl := newClusterOn(t, swapURL)
			cl.createApp(t, "victim", bins.testImage, "v")
			cl.createApp(t, "snoop", bins.testImage, "a", "b")

			// The victim is swapped out: its record names its snapshot.
			cl.invoke(t, "victim", "v", "append", "0 victim's secret")
			cl.swap(t, "victim", "v")
			v := cl.process(t, "victim", "v")
			// b, of the snooper's own app, runs again after a swap: its
			// record names the snapshot it was restored from.
			cl.invoke(t, "snoop", "b", "append", "0 b's state")
			cl.swap(t, "snoop", "b")
			cl.invoke(t, "snoop", "b", "get", "chain")
			b := cl.process(t, "snoop", "b")
			a := cl.process(t, "snoop", "a")
			if v.Snapshot == "" || b.Snapshot == "" || b.Generation < 2 {
				t.Fatalf("victim %+v, b %+v: want recorded snapshots", v, b)
			}

			// The process holds no store credentials.
			for _, name := range strings.Split(cl.invoke(t, "snoop", "a", "env", ""), "\n") {
				if name == cpapi.EnvSwap || strings.HasPrefix(name, "AWS_") {
					t.Errorf("the process's environment has %s", name)
				}
			}

			access := func(req cpapi.SnapshotAccessRequest) (int, cpapi.SnapshotAccess) {
				t.Helper()
				body, _ := json.Marshal(req)
				code, answer := cl.httpAs(t, "snoop", "a", "POST", cl.url+cpapi.PathSnapshotAccess, string(body), true)
				var grant cpapi.SnapshotAccess
				if code == 200 {
					if err := json.Unmarshal([]byte(answer), &grant); err != nil {
						t.Fatalf("grant %q: %v", answer, err)
					}
				}
				return code, grant
			}
			put := func(app, pid string, gen, seq uint64) cpapi.SnapshotAccessRequest {
				return cpapi.SnapshotAccessRequest{App: app, PID: pid, Generation: gen, Op: cpapi.SnapshotPut, Seq: seq, Size: 6}
			}
			get := func(app, pid string, gen uint64, key string) cpapi.SnapshotAccessRequest {
				return cpapi.SnapshotAccessRequest{App: app, PID: pid, Generation: gen, Op: cpapi.SnapshotGet, Key: key}
			}
			for _, req := range []cpapi.SnapshotAccessRequest{
				put("victim", "v", v.Generation, 2),
				get("victim", "v", v.Generation, ""),
				get("victim", "v", v.Generation, v.Snapshot),
				put("snoop", "b", b.Generation, 9),
				get("snoop", "b", b.Generation, ""),
				get("snoop", "a", a.Generation, b.Snapshot),
				get("snoop", "a", a.Generation, v.Snapshot),
			} {
				if code, grant := access(req); code != 403 {
					t.Errorf("access %+v from a: %d %+v, want 403", req, code, grant)
				}
			}

			// Its own snapshots it can write.
			code, own := access(put("snoop", "a", a.Generation, 100))
			if code != 200 || own.Key != cpapi.SnapshotKey("snoop", "a", a.Generation, 100) {
				t.Fatalf("access to its own key: %d %+v", code, own)
			}
			if code, answer := cl.httpAs(t, "snoop", "a", own.Method, own.URL, "mine!", own.Auth); code/100 != 2 {
				t.Fatalf("PUT of its own snapshot: %d %s", code, answer)
			}

			// The streaming route refuses other keys and other identities.
			data := func(app, pid string, gen uint64, key string) string {
				q := url.Values{"app": {app}, "pid": {pid}, "generation": {strconv.FormatUint(gen, 10)}, "key": {key}}
				return cl.url + cpapi.PathSnapshotData + "?" + q.Encode()
			}
			for _, u := range []string{
				data("snoop", "a", a.Generation, v.Snapshot),
				data("snoop", "a", a.Generation, b.Snapshot),
				data("snoop", "a", a.Generation, "snapshots/snoop/a/../b/"+strings.TrimPrefix(b.Snapshot, cpapi.SnapshotPrefix("snoop", "b"))),
				data("victim", "v", v.Generation, v.Snapshot),
				data("snoop", "b", b.Generation, b.Snapshot),
			} {
				for _, method := range []string{"PUT", "GET"} {
					if code, answer := cl.httpAs(t, "snoop", "a", method, u, "forged", true); code != 403 {
						t.Errorf("%s %s from a: %d %.200s, want 403", method, u, code, answer)
					}
				}
			}

			if setup == "s3" {
				if own.Auth || strings.HasPrefix(own.URL, cl.url) {
					t.Fatalf("grant %+v: want a presigned URL of the store", own)
				}
				// A presigned URL edited to name another key, or used with
				// another method, is refused by the store.
				for _, key := range []string{v.Snapshot, b.Snapshot} {
					forged := strings.Replace(own.URL, own.Key, key, 1)
					if forged == own.URL {
						t.Fatalf("the key is not in the URL %s", own.URL)
					}
					for _, method := range []string{"PUT", "GET"} {
						if code, answer := cl.httpAs(t, "snoop", "a", method, forged, "forged", false); code != 403 {
							t.Errorf("%s of %s through a's edited URL: %d %.200s, want 403", method, key, code, answer)
						}
					}
				}
				if code, answer := cl.httpAs(t, "snoop", "a", "GET", own.URL, "", false); code != 403 {
					t.Errorf("GET through a PUT URL: %d %.200s, want 403", code, answer)
				}
				// Without a signature the store answers nothing.
				u, _ := url.Parse(own.URL)
				u.RawQuery = ""
				u.Path = strings.Replace(u.Path, own.Key, v.Snapshot, 1)
				if code, answer := cl.httpAs(t, "snoop", "a", "GET", u.String(), "", false); code != 403 {
					t.Errorf("unsigned GET of the victim's snapshot: %d %.200s, want 403", code, answer)
				}
			} else if !own.Auth || !strings.HasPrefix(own.URL, cl.url+cpapi.PathSnapshotData) {
				t.Fatalf("grant %+v: want the control plane's streaming route", own)
			}

			// Nothing of the others' changed: they come back as they were.
			if got := cl.invoke(t, "victim", "v", "get", "chain"); got != "victim's secret" {
				t.Errorf("victim's state after swap-in: %q", got)
			}
			if got := cl.process(t, "snoop", "b"); got.Snapshot != b.Snapshot {
				t.Errorf("b's record names %s now, want %s", got.Snapshot, b.Snapshot)
			}
			cl.swap(t, "snoop", "b")
			if got := cl.invoke(t, "snoop", "b", "get", "chain"); got != "b's state" {
				t.Errorf("b's state after another swap: %q", got)
			}
		})
	}
}
