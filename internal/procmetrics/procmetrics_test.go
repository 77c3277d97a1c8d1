package procmetrics

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/praas-dev/praas/errs"
)

func TestBucketOf(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0},
		{10 * time.Microsecond, 0},
		{10*time.Microsecond + 1, 1},
		{time.Millisecond, 4},
		{2 * time.Millisecond, 5},
		{10 * time.Second, len(Bounds) - 1},
		{time.Minute, len(Bounds)},
	} {
		if got := BucketOf(c.d); got != c.want {
			t.Errorf("BucketOf(%s) = %d, want %d", c.d, got, c.want)
		}
	}
}

func TestStatsRecord(t *testing.T) {
	var s Stats
	s.Record(5*time.Microsecond, false, errs.Unknown)
	s.Record(2*time.Millisecond, true, errs.FunctionFailed)
	s.Record(time.Minute, true, errs.FunctionFailed)
	s.Record(time.Second, true, errs.Code(999)) // past the table: counted as unknown
	got := s.Series("f", Remote)
	want := Series{Function: "f", Path: "remote", Count: 4,
		SumNanos: uint64(5*time.Microsecond + 2*time.Millisecond + time.Minute + time.Second),
		Buckets:  make([]uint64, NumBuckets),
		Errors:   map[string]uint64{"function_failed": 2, errs.Unknown.String(): 1}}
	want.Buckets[0], want.Buckets[5], want.Buckets[len(Bounds)], want.Buckets[10] = 1, 1, 1, 1
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("series (-want +got):\n%s", diff)
	}
}

func TestStatsConcurrent(t *testing.T) {
	var s Stats
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				s.Record(time.Duration(i)*time.Microsecond, i%10 == 0, errs.NotFound)
			}
		}()
	}
	// Read meanwhile, a series never has more in its buckets than its count.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for reading := true; reading; {
		select {
		case <-done:
			reading = false
		default:
		}
		r := s.Series("f", Local)
		var sum uint64
		for _, n := range r.Buckets {
			sum += n
		}
		if sum > r.Count {
			t.Fatalf("buckets hold %d, count is %d", sum, r.Count)
		}
	}
	got := s.Series("f", Local)
	var inBuckets uint64
	for _, n := range got.Buckets {
		inBuckets += n
	}
	if got.Count != 8000 || inBuckets != 8000 || got.Errors["not_found"] != 800 {
		t.Errorf("count %d, in buckets %d, errors %v", got.Count, inBuckets, got.Errors)
	}
}

func TestTotalsAdd(t *testing.T) {
	var a, b Stats
	a.Record(time.Millisecond, false, 0)
	b.Record(time.Millisecond, true, errs.Internal)
	b.Record(time.Second, false, 0)
	tot := make(Totals)
	tot.Add(&Report{Invocations: []Series{a.Series("f", DataPlane)}})
	tot.Add(&Report{Invocations: []Series{b.Series("f", DataPlane), b.Series("g", Triggered)}})
	f := tot[Key{"f", "dataplane"}]
	if f.Count != 3 || f.Buckets[4] != 2 || f.Buckets[10] != 1 || f.Errors["internal"] != 1 {
		t.Errorf("f: %+v", f)
	}
	if g := tot[Key{"g", "triggered"}]; g == nil || g.Count != 2 {
		t.Errorf("g: %+v", g)
	}
	if len(tot) != 2 {
		t.Errorf("%d series, want 2", len(tot))
	}
}
