// Package storetest holds the conformance suites that every implementation
// of store.Metadata and store.Swap runs from its own tests, so that the
// embedded and the shared stores behave the same.
//
// Each test of a suite opens a fresh, empty store with the open function the
// driver passes in; the suite closes it. A driver whose data outlives a Close
// (all but the in-memory store) also passes a reopen function, and the suite
// then checks that acknowledged writes survive.
package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/praas-dev/praas/errs"
)

// cmpOpts compare records after a round trip through a store: times by
// instant (encodings drop the monotonic clock and may change the location),
// nil and empty slices as equal.
var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
	cmpopts.EquateEmpty(),
}

// t0 is a fixed time for records, with nanoseconds that an encoding must keep.
var t0 = time.Date(2024, 5, 1, 12, 30, 0, 123456789, time.UTC)

// wantErr fails t unless err wraps target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want one wrapping %q (code %d)", what, err, target, errs.CodeOf(target))
	}
}

// must fails t at once on err.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// diff fails t if got and want differ.
func diff(t *testing.T, what string, got, want any) {
	t.Helper()
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}
