package storetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// PresignSwap is a swap store that presigns URLs.
type PresignSwap interface {
	store.Swap
	store.Presigner
}

// RunPresigner runs the conformance suite for store.Presigner: what a client
// without credentials can do, and cannot do, with the URLs. open must return
// a new, empty store each time it is called; the suite closes it.
func RunPresigner(t *testing.T, open func(t *testing.T) PresignSwap) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, s PresignSwap)
	}{
		{"PutThenGet", testPresignPutThenGet},
		{"GetURL", testPresignGetURL},
		{"PutReplacesAtomically", testPresignPutReplaces},
		{"OnlyItsKey", testPresignOnlyItsKey},
		{"OnlyItsMethod", testPresignOnlyItsMethod},
		{"Expires", testPresignExpires},
		{"InvalidKeys", testPresignInvalidKeys},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, t.Context(), s)
		})
	}
}

// send makes one request to u, with a body of known length if body is not
// nil, and returns the status and the answer.
func send(ctx context.Context, method string, u *url.URL, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func mustPresign(t *testing.T, what string, u *url.URL, err error) *url.URL {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if u == nil || !u.IsAbs() {
		t.Fatalf("%s: %v is not an absolute URL", what, u)
	}
	return u
}

// mustPut writes data through a presigned PUT URL.
func mustPut(t *testing.T, ctx context.Context, u *url.URL, data []byte) {
	t.Helper()
	code, body, err := send(ctx, http.MethodPut, u, data)
	if err != nil {
		t.Fatalf("PUT: %v", err)
	}
	if code/100 != 2 {
		t.Fatalf("PUT: %d %s", code, body)
	}
}

// wantObject fails t unless the store holds want under key.
func wantObject(t *testing.T, ctx context.Context, s store.Swap, key string, want []byte) {
	t.Helper()
	r, err := s.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get %s = %d bytes %.40q, want %d bytes %.40q", key, len(got), got, len(want), want)
	}
}

func wantRefused(t *testing.T, what string, code int, body []byte, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if code/100 == 2 {
		t.Fatalf("%s: %d, want a refusal", what, code)
	}
	if code/100 != 4 {
		t.Errorf("%s: %d %s, want a 4xx refusal", what, code, body)
	}
}

func testPresignPutThenGet(t *testing.T, ctx context.Context, s PresignSwap) {
	data, err := io.ReadAll(pseudo(7, 3<<20+17))
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.PresignPut(ctx, "snapshots/app/p1/1-1", time.Minute)
	mustPut(t, ctx, mustPresign(t, "PresignPut", u, err), data)
	wantObject(t, ctx, s, "snapshots/app/p1/1-1", data)
}

func testPresignGetURL(t *testing.T, ctx context.Context, s PresignSwap) {
	data := []byte("the snapshot")
	if err := s.Put(ctx, "snapshots/app/p1/1-2", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	u, err := s.PresignGet(ctx, "snapshots/app/p1/1-2", time.Minute)
	code, got, err := send(ctx, http.MethodGet, mustPresign(t, "PresignGet", u, err), nil)
	if err != nil || code != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("GET = %d %q, %v; want 200 %q", code, got, err, data)
	}
	u, err = s.PresignGet(ctx, "snapshots/app/p1/absent", time.Minute)
	code, _, err = send(ctx, http.MethodGet, mustPresign(t, "PresignGet", u, err), nil)
	if err != nil || code != http.StatusNotFound {
		t.Fatalf("GET of an absent key = %d, %v; want 404", code, err)
	}
}

func testPresignPutReplaces(t *testing.T, ctx context.Context, s PresignSwap) {
	key := "snapshots/app/p1/2-1"
	if err := s.Put(ctx, key, strings.NewReader("old"), 3); err != nil {
		t.Fatal(err)
	}
	u, err := s.PresignPut(ctx, key, time.Minute)
	u = mustPresign(t, "PresignPut", u, err)
	// A PUT that ends early stores nothing.
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), &failingReader{r: strings.NewReader("part of it"), n: 4})
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 1000
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			t.Fatalf("a truncated PUT answered %d", resp.StatusCode)
		}
	}
	wantObject(t, ctx, s, key, []byte("old"))
	mustPut(t, ctx, u, []byte("new"))
	wantObject(t, ctx, s, key, []byte("new"))
}

// testPresignOnlyItsKey: a URL for one key, edited to name another, writes
// and reads nothing.
func testPresignOnlyItsKey(t *testing.T, ctx context.Context, s PresignSwap) {
	mine, theirs := "snapshots/app/p1/3-1", "snapshots/app/p2/3-1"
	if err := s.Put(ctx, theirs, strings.NewReader("theirs"), 6); err != nil {
		t.Fatal(err)
	}
	retarget := func(u *url.URL) *url.URL {
		v := *u
		v.Path = strings.Replace(v.Path, "/p1/", "/p2/", 1)
		v.RawPath = ""
		if v.Path == u.Path {
			t.Fatalf("URL %s does not name the key in its path", u.Redacted())
		}
		return &v
	}
	u, err := s.PresignPut(ctx, mine, time.Minute)
	code, body, err := send(ctx, http.MethodPut, retarget(mustPresign(t, "PresignPut", u, err)), []byte("forged"))
	wantRefused(t, "PUT to another key", code, body, err)
	wantObject(t, ctx, s, theirs, []byte("theirs"))

	u, err = s.PresignGet(ctx, mine, time.Minute)
	code, body, err = send(ctx, http.MethodGet, retarget(mustPresign(t, "PresignGet", u, err)), nil)
	wantRefused(t, "GET of another key", code, body, err)
	if bytes.Contains(body, []byte("theirs")) {
		t.Fatal("GET of another key answered its content")
	}
}

// testPresignOnlyItsMethod: a GET URL does not write, a PUT URL does not read.
func testPresignOnlyItsMethod(t *testing.T, ctx context.Context, s PresignSwap) {
	key := "snapshots/app/p1/4-1"
	if err := s.Put(ctx, key, strings.NewReader("kept"), 4); err != nil {
		t.Fatal(err)
	}
	u, err := s.PresignGet(ctx, key, time.Minute)
	code, body, err := send(ctx, http.MethodPut, mustPresign(t, "PresignGet", u, err), []byte("forged"))
	wantRefused(t, "PUT through a GET URL", code, body, err)
	wantObject(t, ctx, s, key, []byte("kept"))

	u, err = s.PresignPut(ctx, key, time.Minute)
	code, body, err = send(ctx, http.MethodGet, mustPresign(t, "PresignPut", u, err), nil)
	wantRefused(t, "GET through a PUT URL", code, body, err)
	if bytes.Contains(body, []byte("kept")) {
		t.Fatal("GET through a PUT URL answered the content")
	}
}

func testPresignExpires(t *testing.T, ctx context.Context, s PresignSwap) {
	key := "snapshots/app/p1/5-1"
	u, err := s.PresignPut(ctx, key, time.Second)
	u = mustPresign(t, "PresignPut", u, err)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, err := send(ctx, http.MethodPut, u, []byte("late"))
		if err != nil {
			t.Fatal(err)
		}
		if code/100 == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a URL with a ttl of 1s still answers %d after 10s", code)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	code, body, err := send(ctx, http.MethodPut, u, []byte("late"))
	wantRefused(t, "PUT through an expired URL", code, body, err)
	if _, err := s.Get(ctx, key); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("Get after a PUT through an expired URL: %v, want not found", err)
	}
}

func testPresignInvalidKeys(t *testing.T, ctx context.Context, s PresignSwap) {
	for _, key := range []string{"", "/abs", "a/../b", "a/./b", "a//b", ".."} {
		u, err := s.PresignPut(ctx, key, time.Minute)
		wantErr(t, fmt.Sprintf("PresignPut(%q) = %v", key, u), err, errs.ErrInvalidArgument)
		u, err = s.PresignGet(ctx, key, time.Minute)
		wantErr(t, fmt.Sprintf("PresignGet(%q) = %v", key, u), err, errs.ErrInvalidArgument)
	}
}
