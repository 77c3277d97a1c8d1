package stats

import (
	"math"
	"testing"
)

func TestMedianCIRank(t *testing.T) {
	// Reference values of the order-statistic 99% interval of the median.
	tests := []struct{ n, want int }{
		{7, 0}, {8, 1}, {10, 1}, {20, 4}, {50, 16}, {100, 37},
	}
	for _, tc := range tests {
		if got := MedianCIRank(tc.n, 0.99); got != tc.want {
			t.Errorf("MedianCIRank(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[99-i] = float64(i + 1) // 100..1, unsorted
	}
	s := Summarize(xs)
	if s.N != 100 || s.Median != 50.5 || s.P99 != 99 || s.Min != 1 || s.Max != 100 {
		t.Fatalf("summary %+v", s)
	}
	if s.CILow != 37 || s.CIHigh != 64 {
		t.Fatalf("CI [%v, %v], want [37, 64]", s.CILow, s.CIHigh)
	}
	if xs[0] != 100 {
		t.Fatal("input was modified")
	}
	if e := Summarize(nil); !math.IsNaN(e.Median) {
		t.Fatal("empty summary has a median")
	}
}
