package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// newReplica returns a replica record that started at t0 and expires ttl
// after it.
func newReplica(id string, ttl time.Duration) store.Replica {
	return store.Replica{ID: id, URL: "http://" + id + ".internal:7070", Started: t0, Expires: t0.Add(ttl)}
}

func testReplicas(t *testing.T, ctx context.Context, m store.Metadata) {
	list := func(what string, want ...store.Replica) {
		t.Helper()
		got, err := m.ListReplicas(ctx)
		must(t, "ListReplicas "+what, err)
		diff(t, "ListReplicas "+what, got, want)
	}
	list("on empty store")

	a, b, c := newReplica("cp-a", -time.Minute), newReplica("cp-b", 10*time.Second), newReplica("cp-c", time.Hour)
	for _, r := range []store.Replica{b, c, a} {
		must(t, "PutReplica "+r.ID, m.PutReplica(ctx, r))
	}
	list("sorted, expired included", a, b, c)

	// Renewing is putting again with a later expiry.
	b.Expires = t0.Add(time.Minute)
	must(t, "PutReplica renew", m.PutReplica(ctx, b))
	list("after renewal", a, b, c)

	got, err := m.ListReplicas(ctx)
	must(t, "ListReplicas", err)
	for _, tt := range []struct {
		r    store.Replica
		at   time.Time
		live bool
	}{
		{got[0], t0, false},                      // expired a minute ago
		{got[1], t0, true},                       // renewed
		{got[1], t0.Add(time.Minute - 1), true},  // last instant
		{got[1], t0.Add(time.Minute), false},     // expires at Expires
		{got[1], t0.Add(2 * time.Minute), false}, // later
	} {
		if live := tt.r.Live(tt.at); live != tt.live {
			t.Errorf("%s (expires %v).Live(%v) = %v, want %v", tt.r.ID, tt.r.Expires, tt.at, live, tt.live)
		}
	}

	must(t, "DeleteReplica", m.DeleteReplica(ctx, "cp-b"))
	list("after delete", a, c)
	must(t, "DeleteReplica again", m.DeleteReplica(ctx, "cp-b"))
	must(t, "DeleteReplica of a stranger", m.DeleteReplica(ctx, "cp-never"))
	list("after deleting absent ones", a, c)

	wantErr(t, "PutReplica without id", m.PutReplica(ctx, store.Replica{URL: "http://x"}), errs.ErrInvalidArgument)
	list("after a refused put", a, c)
}
