package redis_test

import (
	"context"
	"crypto/rand"
	"net/url"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/testenv"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/redis"
	"github.com/praas-dev/praas/store/storetest"
)

// serverURL returns the test server's URL, or skips the test loudly (fails it in CI).
func serverURL(t *testing.T) string {
	t.Helper()
	return testenv.Redis(t)
}

// withPrefix returns rawURL with a fresh random key prefix, and removes the
// prefix's keys when the test ends.
func withPrefix(t *testing.T, rawURL string) string {
	t.Helper()
	prefix := "praas-test-" + rand.Text()[:12] + ":"
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("prefix", prefix)
	u.RawQuery = q.Encode()
	t.Cleanup(func() {
		opts, err := goredis.ParseURL(rawURL)
		if err != nil {
			t.Error(err)
			return
		}
		rdb := goredis.NewClient(opts)
		defer rdb.Close()
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("cleaning up %s*: %v", prefix, err)
		}
	})
	return u.String()
}

func open(t *testing.T, rawURL string) *redis.Store {
	t.Helper()
	s, err := redis.Open(t.Context(), rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	base := serverURL(t)
	urls := map[store.Metadata]string{} // to reopen a closed store
	storetest.RunMetadata(t,
		func(t *testing.T) store.Metadata {
			u := withPrefix(t, base)
			s := open(t, u)
			urls[s] = u
			return s
		},
		storetest.ReopenMetadata(func(t *testing.T, closed store.Metadata) store.Metadata {
			return open(t, urls[closed])
		}),
	)
}

func TestOpenErrors(t *testing.T) {
	for _, u := range []string{"http://localhost:6379", "redis://127.0.0.1:6379/0?bogus=1"} {
		if _, err := redis.Open(t.Context(), u); err == nil {
			t.Errorf("Open(%q) succeeded", u)
		}
	}
	// Nothing listens on port 1.
	if _, err := redis.Open(t.Context(), "redis://127.0.0.1:1/0?dial_timeout=1s"); err == nil {
		t.Error("Open of a closed port succeeded")
	}
}

func TestPrefixIsolates(t *testing.T) {
	base := serverURL(t)
	a, b := open(t, withPrefix(t, base)), open(t, withPrefix(t, base))
	defer a.Close()
	defer b.Close()
	if err := a.CreateApp(t.Context(), store.App{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if apps, err := b.ListApps(t.Context()); err != nil || len(apps) != 0 {
		t.Errorf("other prefix: ListApps = %v, %v; want none", apps, err)
	}
}

// TestRecordsWithoutRevision checks the upgrade path of the package comment:
// a record written before revisions existed reads as revision 0 and can be
// updated as such.
func TestRecordsWithoutRevision(t *testing.T) {
	ctx := t.Context()
	u := withPrefix(t, serverURL(t))
	s := open(t, u)
	defer s.Close()
	if err := s.CreateApp(ctx, store.App{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateProcess(ctx, store.Process{App: "web", PID: "p1"}); err != nil {
		t.Fatal(err)
	}

	// Remove the revision fields, as an old store never wrote them.
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	prefix := parsed.Query().Get("prefix")
	opts, err := goredis.ParseURL(serverURL(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.HDel(ctx, prefix+"apprevs", "web").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HDel(ctx, prefix+"revs:web", "p1").Err(); err != nil {
		t.Fatal(err)
	}

	app, err := s.GetApp(ctx, "web")
	if err != nil || app.Revision != 0 {
		t.Fatalf("GetApp = revision %d, %v; want 0", app.Revision, err)
	}
	if app, err = s.UpdateApp(ctx, app); err != nil || app.Revision != 1 {
		t.Errorf("UpdateApp = revision %d, %v; want 1", app.Revision, err)
	}
	p, err := s.GetProcess(ctx, "web", "p1")
	if err != nil || p.Revision != 0 {
		t.Fatalf("GetProcess = revision %d, %v; want 0", p.Revision, err)
	}
	stored, err := s.UpdateProcess(ctx, p)
	if err != nil || stored.Revision != 1 {
		t.Errorf("UpdateProcess = revision %d, %v; want 1", stored.Revision, err)
	}
	if _, err := s.UpdateProcess(ctx, p); errs.CodeOf(err) != errs.FailedPrecondition {
		t.Errorf("UpdateProcess with revision 0 again = %v, want a failed precondition", err)
	}
}
