package process

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/praas-dev/praas/internal/cpapi"
)

// The runtime applies a delta only to the epoch and view it came from; the
// members it hands out are never changed afterwards.
func TestMembershipUpdate(t *testing.T) {
	var m membership
	m.init()
	whole := cpapi.MembersUpdate{View: "v1", Membership: Membership{Epoch: 5, Members: []Member{
		{PID: "a", Status: "active", Address: "x:1"}, {PID: "b", Status: "allocating"}, {PID: "c", Status: "active", Address: "x:3"},
	}}}
	if !m.update(whole) {
		t.Fatal("whole membership refused")
	}
	handedOut, changed := m.get()
	before := append([]Member(nil), handedOut.Members...)

	steps := []struct {
		name    string
		u       cpapi.MembersUpdate
		applied bool
		want    Membership
	}{
		{"delta from another view", cpapi.MembersUpdate{View: "v2", Since: 5, Membership: Membership{Epoch: 6}}, false, whole.Membership},
		{"delta from another epoch", cpapi.MembersUpdate{View: "v1", Since: 4, Membership: Membership{Epoch: 6}}, false, whole.Membership},
		{"empty delta (poll timed out)", cpapi.MembersUpdate{View: "v1", Since: 5, Membership: Membership{Epoch: 5, Members: []Member{}}}, true, whole.Membership},
		{"delta", cpapi.MembersUpdate{View: "v1", Since: 5, Removed: []string{"c"}, Membership: Membership{Epoch: 7, Members: []Member{
			{PID: "aa", Status: "allocating"}, {PID: "b", Status: "active", Address: "x:2"},
		}}}, true, Membership{Epoch: 7, Members: []Member{
			{PID: "a", Status: "active", Address: "x:1"}, {PID: "aa", Status: "allocating"}, {PID: "b", Status: "active", Address: "x:2"},
		}}},
		{"older whole", cpapi.MembersUpdate{View: "v1", Membership: Membership{Epoch: 6, Members: []Member{}}}, true, Membership{Epoch: 7, Members: []Member{
			{PID: "a", Status: "active", Address: "x:1"}, {PID: "aa", Status: "allocating"}, {PID: "b", Status: "active", Address: "x:2"},
		}}},
	}
	for _, s := range steps {
		if got := m.update(s.u); got != s.applied {
			t.Fatalf("%s: update = %v, want %v", s.name, got, s.applied)
		}
		cur, _ := m.get()
		if diff := cmp.Diff(s.want, cur); diff != "" {
			t.Fatalf("%s: membership (-want +got):\n%s", s.name, diff)
		}
	}
	select {
	case <-changed:
	default:
		t.Error("a delta did not signal a change")
	}
	if diff := cmp.Diff(before, handedOut.Members); diff != "" {
		t.Errorf("a membership handed out was modified (-before +after):\n%s", diff)
	}
	if _, ok := m.lookup("c"); ok {
		t.Error("a removed member is still found")
	}
	if mem, ok := m.lookup("b"); !ok || mem.Address != "x:2" {
		t.Errorf("lookup(b) = %+v, %v after the delta", mem, ok)
	}
}

// The membership is followed from the first time it is wanted: asked for
// before the runtime could start the long poll, it starts as soon as it
// can; asked for again, it is not started twice; never asked for, never.
func TestMembershipFollowedOnDemand(t *testing.T) {
	for _, wantFirst := range []bool{false, true} {
		var m membership
		m.init()
		starts := 0
		if wantFirst {
			m.want()
		}
		m.setStart(func() { starts++ })
		if wantFirst != (starts == 1) {
			t.Fatalf("want first %v: %d starts after setStart", wantFirst, starts)
		}
		first := m.want()
		m.want()
		if starts != 1 {
			t.Fatalf("want first %v: %d starts after two wants, want 1", wantFirst, starts)
		}
		select {
		case <-first:
			t.Fatal("first answer signalled before any answer")
		default:
		}
		m.update(cpapi.MembersUpdate{View: "v", Membership: Membership{Epoch: 1, Members: []Member{}}})
		<-first
	}
	var idle membership
	idle.init()
	idle.setStart(func() { t.Error("started without being wanted") })
}
