// Package stats summarizes benchmark samples the way the papers report
// them: the median, the 99th percentile, and a distribution-free 99%
// confidence interval of the median from order statistics.
package stats

import (
	"math"
	"slices"
)

// Summary describes a set of samples.
type Summary struct {
	N      int
	Median float64
	P99    float64
	// CILow and CIHigh bound the median with 99% confidence (order-statistic
	// method); both are NaN when N is too small for that confidence (N < 8).
	CILow, CIHigh float64
	Min, Max      float64
	Mean          float64
}

// Summarize computes the summary of xs; xs is not modified.
func Summarize(xs []float64) Summary {
	n := len(xs)
	if n == 0 {
		nan := math.NaN()
		return Summary{Median: nan, P99: nan, CILow: nan, CIHigh: nan, Min: nan, Max: nan, Mean: nan}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	lo, hi := MedianCI(s, 0.99)
	return Summary{
		N:      n,
		Median: Median(s),
		P99:    Percentile(s, 99),
		CILow:  lo,
		CIHigh: hi,
		Min:    s[0],
		Max:    s[n-1],
		Mean:   sum / float64(n),
	}
}

// Median of sorted samples (the mean of the two middle ones for even N).
func Median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// Percentile returns the nearest-rank p-th percentile of sorted samples.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	return sorted[min(max(rank, 1), n)-1]
}

// MedianCI returns the distribution-free confidence interval of the median
// of sorted samples: [x(j), x(n+1-j)] for the largest j whose coverage
// P(j <= B <= n-j), B ~ Binomial(n, 1/2), is at least conf. It returns NaNs
// when even [x(1), x(n)] does not reach conf.
func MedianCI(sorted []float64, conf float64) (lo, hi float64) {
	j := MedianCIRank(len(sorted), conf)
	if j == 0 {
		return math.NaN(), math.NaN()
	}
	return sorted[j-1], sorted[len(sorted)-j]
}

// MedianCIRank returns the 1-based rank j of the lower bound of the median's
// confidence interval for n samples (the upper bound has rank n+1-j), or 0
// if n samples cannot give that confidence.
func MedianCIRank(n int, conf float64) int {
	if n < 1 {
		return 0
	}
	// pmf[k] = P(B = k); coverage of [x(j), x(n+1-j)] is sum_{k=j}^{n-j} pmf[k].
	pmf := make([]float64, n+1)
	lf := func(k int) float64 { v, _ := math.Lgamma(float64(k) + 1); return v }
	for k := 0; k <= n; k++ {
		pmf[k] = math.Exp(lf(n) - lf(k) - lf(n-k) - float64(n)*math.Ln2)
	}
	best := 0
	tail := 0.0 // P(B < j) = P(B > n-j)
	for j := 1; j <= (n+1)/2; j++ {
		tail += pmf[j-1]
		if 1-2*tail >= conf {
			best = j
		} else {
			break
		}
	}
	return best
}
