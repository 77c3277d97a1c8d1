package controlplane

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
)

// poll calls the members long poll as process p of the app with query q.
func (h *harness) poll(t *testing.T, q url.Values) (int, cpapi.MembersUpdate) {
	t.Helper()
	q.Set("app", h.app.Name)
	q.Set("pid", "p")
	own, _ := h.s.processTokens(h.app.Name, "p", 1)
	r := httptest.NewRequest(http.MethodGet, cpapi.PathMembers+"?"+q.Encode(), nil)
	r.Header.Set("Authorization", "Bearer "+own)
	w := httptest.NewRecorder()
	h.s.Handler().ServeHTTP(w, r)
	var u cpapi.MembersUpdate
	if w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), &u); err != nil {
			t.Fatalf("members answer %q: %v", w.Body, err)
		}
	}
	return w.Code, u
}

// change creates, updates or deletes process records and bumps the epoch,
// as the lifecycle does.
func (h *harness) change(t *testing.T, create []string, activate map[string]string, del []string) {
	t.Helper()
	ctx := context.Background()
	for _, pid := range create {
		if _, err := h.meta.CreateProcess(ctx, store.Process{App: h.app.Name, PID: pid, Status: store.StatusAllocating, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	for pid, addr := range activate {
		_, err := store.UpdateProcess(ctx, h.meta, h.app.Name, pid, func(p *store.Process) error {
			p.Status, p.Address = store.StatusActive, addr
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, pid := range del {
		if err := h.meta.DeleteProcess(ctx, h.app.Name, pid); err != nil {
			t.Fatal(err)
		}
	}
	h.s.bumpEpoch(ctx, h.app.Name)
}

// A long poll that takes deltas gets what changed since the epoch it names
// of the same view, and the whole membership otherwise; applied in order,
// the deltas give what a whole read gives.
func TestMembersDeltas(t *testing.T) {
	h := newHarness(t, nil)
	h.change(t, []string{"a", "b", "c"}, nil, nil)

	code, full := h.poll(t, url.Values{"epoch": {"0"}, cpapi.QueryDelta: {"1"}})
	if code != http.StatusOK || full.Since != 0 || full.View == "" || len(full.Members) != 3 {
		t.Fatalf("first poll: %d %+v, want the whole membership of 3 with a view", code, full)
	}
	// Nothing new: a poll from the current epoch waits. Change meanwhile.
	var wg sync.WaitGroup
	var got cpapi.MembersUpdate
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, got = h.poll(t, url.Values{"epoch": {strconv.FormatUint(full.Epoch, 10)}, cpapi.QueryDelta: {"1"}, cpapi.QueryView: {full.View}})
	}()
	waitUntil(t, "a waiting poll", func() bool {
		w := h.s.watch(h.app.Name)
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.waiters == 1
	})
	h.change(t, []string{"d"}, map[string]string{"a": "127.0.0.1:1"}, []string{"c"})
	wg.Wait()
	if got.Since != full.Epoch || got.Epoch <= full.Epoch || got.View != full.View {
		t.Fatalf("delta %+v, want since %d of view %s", got, full.Epoch, full.View)
	}
	slices.SortFunc(got.Members, func(x, y cpapi.Member) int { return strings.Compare(x.PID, y.PID) })
	want := []cpapi.Member{{PID: "a", Status: store.StatusActive, Address: "127.0.0.1:1"}, {PID: "d", Status: store.StatusAllocating}}
	if diff := cmp.Diff(want, got.Members); diff != "" || !slices.Equal(got.Removed, []string{"c"}) {
		t.Fatalf("delta members (-want +got):\n%s\nremoved %v, want [c]", diff, got.Removed)
	}

	// Applied, the delta gives the whole membership at its epoch.
	_, now := h.poll(t, url.Values{"epoch": {"0"}, cpapi.QueryFresh: {"1"}})
	applied := map[string]cpapi.Member{}
	for _, m := range full.Members {
		applied[m.PID] = m
	}
	for _, m := range got.Members {
		applied[m.PID] = m
	}
	for _, pid := range got.Removed {
		delete(applied, pid)
	}
	var appliedList []cpapi.Member
	for _, m := range applied {
		appliedList = append(appliedList, m)
	}
	slices.SortFunc(appliedList, func(x, y cpapi.Member) int { return strings.Compare(x.PID, y.PID) })
	if now.Epoch != got.Epoch {
		t.Fatalf("whole membership at epoch %d, delta to %d", now.Epoch, got.Epoch)
	}
	if diff := cmp.Diff(now.Members, appliedList); diff != "" {
		t.Fatalf("delta applied differs from the whole membership (-whole +applied):\n%s", diff)
	}

	// Another view, an epoch it does not keep, or no delta asked for: whole.
	for name, q := range map[string]url.Values{
		"other view":    {"epoch": {strconv.FormatUint(full.Epoch, 10)}, cpapi.QueryDelta: {"1"}, cpapi.QueryView: {"elsewhere"}},
		"unknown epoch": {"epoch": {strconv.FormatUint(full.Epoch-1, 10)}, cpapi.QueryDelta: {"1"}, cpapi.QueryView: {full.View}},
		"no delta":      {"epoch": {strconv.FormatUint(full.Epoch, 10)}},
	} {
		_, u := h.poll(t, q)
		if u.Since != 0 || u.Epoch != now.Epoch || len(u.Members) != 3 {
			t.Errorf("%s: %+v, want the whole membership at %d", name, u, now.Epoch)
		}
	}
}

// Changes made faster than the spacing between publications go out in few
// of them: a waiting poll is woken once per publication, not per change.
func TestMembersCoalesced(t *testing.T) {
	h := newHarness(t, nil)
	h.change(t, []string{"p0"}, nil, nil)
	_, first := h.poll(t, url.Values{"epoch": {"0"}, cpapi.QueryDelta: {"1"}})

	const changes = 200
	done := make(chan struct{})
	answers := 0
	var last cpapi.MembersUpdate
	go func() {
		defer close(done)
		cur := first
		for cur.Epoch < first.Epoch+changes {
			_, u := h.poll(t, url.Values{"epoch": {strconv.FormatUint(cur.Epoch, 10)}, cpapi.QueryDelta: {"1"}, cpapi.QueryView: {first.View}})
			if u.Since != cur.Epoch {
				t.Errorf("answer %+v is not a delta from %d", u, cur.Epoch)
				return
			}
			answers++
			cur, last = u, u
		}
	}()
	waitUntil(t, "a waiting poll", func() bool {
		w := h.s.watch(h.app.Name)
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.waiters == 1
	})
	for i := 1; i <= changes; i++ {
		h.change(t, []string{"p" + strconv.Itoa(i)}, nil, nil)
		time.Sleep(time.Millisecond) // slower than the store, faster than the spacing
	}
	<-done
	t.Logf("%d changes reached the poller in %d answers", changes, answers)
	if answers >= changes/2 {
		t.Errorf("%d changes took %d answers: not coalesced", changes, answers)
	}
	if last.Epoch != first.Epoch+changes {
		t.Errorf("last answer at epoch %d, want %d", last.Epoch, first.Epoch+changes)
	}
}
