package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// newKey returns an API key of app ("" for an admin key).
func newKey(id, app string) store.Key {
	sum := sha256.Sum256([]byte("secret-" + id))
	return store.Key{ID: id, App: app, Hash: hex.EncodeToString(sum[:]), Name: "key " + id, CreatedAt: t0}
}

// listKeys fails t unless ListKeys(app) returns want.
func listKeys(t *testing.T, ctx context.Context, m store.Metadata, app string, want ...store.Key) {
	t.Helper()
	got, err := m.ListKeys(ctx, app)
	must(t, fmt.Sprintf("ListKeys(%q)", app), err)
	diff(t, fmt.Sprintf("ListKeys(%q)", app), got, want)
}

func testKeyRoundTrip(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	for _, k := range []store.Key{newKey("k1", "web"), newKey("admin1", "")} {
		must(t, "CreateKey "+k.ID, m.CreateKey(ctx, k))
		got, err := m.GetKey(ctx, k.ID)
		must(t, "GetKey "+k.ID, err)
		diff(t, "GetKey "+k.ID, got, k)
	}
	// Admin keys need no app at all.
	must(t, "CreateKey admin on a store with no such app", m.CreateKey(ctx, newKey("admin2", "")))
}

func testKeyNotFound(t *testing.T, ctx context.Context, m store.Metadata) {
	_, err := m.GetKey(ctx, "nope")
	wantErr(t, "GetKey", err, errs.ErrNotFound)
	wantErr(t, "DeleteKey", m.DeleteKey(ctx, "nope"), errs.ErrNotFound)
	wantErr(t, "CreateKey for an absent app", m.CreateKey(ctx, newKey("k1", "nope")), errs.ErrNotFound)
	_, err = m.GetKey(ctx, "k1")
	wantErr(t, "GetKey after refused CreateKey", err, errs.ErrNotFound)
	// A refused key must not be left behind for an app created later.
	must(t, "CreateApp", m.CreateApp(ctx, newApp("nope")))
	listKeys(t, ctx, m, "nope")
	wantErr(t, "CreateKey without id", m.CreateKey(ctx, newKey("", "")), errs.ErrInvalidArgument)
	listKeys(t, ctx, m, "")
}

func testCreateKeyAlreadyExists(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	first := newKey("k1", "web")
	must(t, "CreateKey", m.CreateKey(ctx, first))
	for _, app := range []string{"web", ""} { // same app, and as an admin key
		second := newKey("k1", app)
		second.Hash = "00"
		wantErr(t, fmt.Sprintf("second CreateKey (app %q)", app), m.CreateKey(ctx, second), errs.ErrAlreadyExists)
	}
	got, err := m.GetKey(ctx, "k1")
	must(t, "GetKey", err)
	diff(t, "key after failed CreateKey", got, first)
	listKeys(t, ctx, m, "web", first)
	listKeys(t, ctx, m, "")
}

func testListKeysSortedPerApp(t *testing.T, ctx context.Context, m store.Metadata) {
	listKeys(t, ctx, m, "")
	for _, app := range []string{"a", "b", "empty"} {
		must(t, "CreateApp "+app, m.CreateApp(ctx, newApp(app)))
	}
	keys := map[string][]string{
		"a": {"m", "b", "zz", "a", "B", "a-1", "ab"},
		"b": {"b2", "b1"},
		"":  {"root2", "admin", "root1"},
	}
	for app, ids := range keys {
		for _, id := range ids {
			must(t, "CreateKey "+id, m.CreateKey(ctx, newKey(id, app)))
		}
	}
	wants := map[string][]string{
		"a": {"B", "a", "a-1", "ab", "b", "m", "zz"},
		"b": {"b1", "b2"},
		"":  {"admin", "root1", "root2"},
	}
	for app, ids := range wants {
		var want []store.Key
		for _, id := range ids {
			want = append(want, newKey(id, app))
		}
		listKeys(t, ctx, m, app, want...)
	}
	listKeys(t, ctx, m, "empty")
}

func testDeleteKey(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	k1, k2, adm := newKey("k1", "web"), newKey("k2", "web"), newKey("adm", "")
	for _, k := range []store.Key{k1, k2, adm} {
		must(t, "CreateKey "+k.ID, m.CreateKey(ctx, k))
	}
	must(t, "DeleteKey k1", m.DeleteKey(ctx, "k1"))
	_, err := m.GetKey(ctx, "k1")
	wantErr(t, "GetKey after DeleteKey", err, errs.ErrNotFound)
	wantErr(t, "second DeleteKey", m.DeleteKey(ctx, "k1"), errs.ErrNotFound)
	listKeys(t, ctx, m, "web", k2)

	must(t, "DeleteKey adm", m.DeleteKey(ctx, "adm"))
	listKeys(t, ctx, m, "")
	listKeys(t, ctx, m, "web", k2)

	// A deleted ID can be used again, by another owner.
	k1Admin := newKey("k1", "")
	must(t, "CreateKey k1 again, as admin", m.CreateKey(ctx, k1Admin))
	listKeys(t, ctx, m, "", k1Admin)
	listKeys(t, ctx, m, "web", k2)
}

func testDeleteAppRemovesKeys(t *testing.T, ctx context.Context, m store.Metadata) {
	for _, app := range []string{"doomed", "kept"} {
		must(t, "CreateApp "+app, m.CreateApp(ctx, newApp(app)))
		for _, id := range []string{"1", "2"} {
			must(t, "CreateKey", m.CreateKey(ctx, newKey(app+"-"+id, app)))
		}
	}
	adm := newKey("adm", "")
	must(t, "CreateKey adm", m.CreateKey(ctx, adm))

	must(t, "DeleteApp", m.DeleteApp(ctx, "doomed"))
	for _, id := range []string{"doomed-1", "doomed-2"} {
		_, err := m.GetKey(ctx, id)
		wantErr(t, "GetKey "+id+" after DeleteApp", err, errs.ErrNotFound)
	}
	listKeys(t, ctx, m, "doomed")
	listKeys(t, ctx, m, "kept", newKey("kept-1", "kept"), newKey("kept-2", "kept"))
	listKeys(t, ctx, m, "", adm)

	// Recreating the app must not resurrect its keys; their IDs are free.
	must(t, "CreateApp again", m.CreateApp(ctx, newApp("doomed")))
	listKeys(t, ctx, m, "doomed")
	again := newKey("doomed-1", "doomed")
	must(t, "CreateKey doomed-1 again", m.CreateKey(ctx, again))
	listKeys(t, ctx, m, "doomed", again)
}

func testCreateKeyConcurrent(t *testing.T, ctx context.Context, m store.Metadata) {
	apps := []string{"a", "b", ""}
	for _, app := range apps[:2] {
		must(t, "CreateApp "+app, m.CreateApp(ctx, newApp(app)))
	}
	const n = 16
	tried := make([]store.Key, n)
	for i := range n {
		tried[i] = newKey("race", apps[i%len(apps)])
		tried[i].Name = fmt.Sprint("contender ", i)
	}
	_, results := race(n, func(i int) (struct{}, error) {
		return struct{}{}, m.CreateKey(ctx, tried[i])
	})
	w := oneWinner(t, "concurrent CreateKey of one ID", results, errs.ErrAlreadyExists)
	if w < 0 {
		return
	}
	got, err := m.GetKey(ctx, "race")
	must(t, "GetKey", err)
	diff(t, "stored key", got, tried[w])
	for _, app := range apps {
		if app == tried[w].App {
			listKeys(t, ctx, m, app, tried[w])
		} else {
			listKeys(t, ctx, m, app)
		}
	}
}

func testDeleteAppRacesCreateKey(t *testing.T, ctx context.Context, m store.Metadata) {
	// Whatever the interleaving, no key of the old app may outlive DeleteApp.
	for round := range 10 {
		must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range 10 {
				if err := m.CreateKey(ctx, newKey(fmt.Sprint("k", i), "web")); err != nil {
					wantErr(t, "CreateKey racing DeleteApp", err, errs.ErrNotFound)
				}
			}
		})
		wg.Go(func() {
			if err := m.DeleteApp(ctx, "web"); err != nil {
				t.Errorf("round %d: DeleteApp: %v", round, err)
			}
		})
		wg.Wait()
		must(t, "CreateApp after race", m.CreateApp(ctx, newApp("web")))
		got, err := m.ListKeys(ctx, "web")
		must(t, "ListKeys", err)
		diff(t, fmt.Sprintf("round %d: keys of recreated app", round), got, []store.Key{})
		for i := range 10 {
			_, err := m.GetKey(ctx, fmt.Sprint("k", i))
			wantErr(t, fmt.Sprintf("round %d: GetKey k%d", round, i), err, errs.ErrNotFound)
		}
		must(t, "DeleteApp", m.DeleteApp(ctx, "web"))
	}
}

func (s *metadataSuite) testKeyPersistence(t *testing.T, ctx context.Context) {
	m := s.open(t)
	for _, app := range []string{"web", "gone"} {
		must(t, "CreateApp "+app, m.CreateApp(ctx, newApp(app)))
	}
	web1, web2, adm := newKey("web1", "web"), newKey("web2", "web"), newKey("adm", "")
	for _, k := range []store.Key{web1, web2, adm, newKey("adm-old", ""), newKey("gone1", "gone")} {
		must(t, "CreateKey "+k.ID, m.CreateKey(ctx, k))
	}
	must(t, "DeleteKey", m.DeleteKey(ctx, "adm-old"))
	must(t, "DeleteApp", m.DeleteApp(ctx, "gone"))
	must(t, "Close", m.Close())

	m = s.reopen(t, m)
	t.Cleanup(func() { m.Close() })
	listKeys(t, ctx, m, "web", web1, web2)
	listKeys(t, ctx, m, "", adm)
	listKeys(t, ctx, m, "gone")
	got, err := m.GetKey(ctx, "web2")
	must(t, "GetKey after reopen", err)
	diff(t, "GetKey after reopen", got, web2)
	for _, id := range []string{"adm-old", "gone1"} {
		_, err := m.GetKey(ctx, id)
		wantErr(t, "GetKey "+id+" after reopen", err, errs.ErrNotFound)
	}
	wantErr(t, "CreateKey of a stored ID after reopen", m.CreateKey(ctx, newKey("web1", "")), errs.ErrAlreadyExists)
}
