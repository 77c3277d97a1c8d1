package store

import (
	"cmp"
	"math/bits"
	"slices"
	"time"
)

// UsageBucket is the usage of one process during one interval of time: what
// the reports recorded while the bucket was current added up.
type UsageBucket struct {
	PID   string    `json:"pid"`
	Start time.Time `json:"start"`
	Usage Usage     `json:"usage"`
}

// Add returns u plus v, field by field.
func (u Usage) Add(v Usage) Usage {
	return Usage{
		Invocations:      u.Invocations + v.Invocations,
		BusyNanos:        u.BusyNanos + v.BusyNanos,
		BytesIn:          u.BytesIn + v.BytesIn,
		BytesOut:         u.BytesOut + v.BytesOut,
		StateByteSeconds: u.StateByteSeconds + v.StateByteSeconds,
		SwapByteSeconds:  u.SwapByteSeconds + v.SwapByteSeconds,
	}
}

// Since returns what u has more than earlier, field by field (zero where
// it has not): the delta of two cumulative readings.
func (u Usage) Since(earlier Usage) Usage {
	sub := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return a - b
	}
	return Usage{
		Invocations:      sub(u.Invocations, earlier.Invocations),
		BusyNanos:        sub(u.BusyNanos, earlier.BusyNanos),
		BytesIn:          sub(u.BytesIn, earlier.BytesIn),
		BytesOut:         sub(u.BytesOut, earlier.BytesOut),
		StateByteSeconds: sub(u.StateByteSeconds, earlier.StateByteSeconds),
		SwapByteSeconds:  sub(u.SwapByteSeconds, earlier.SwapByteSeconds),
	}
}

// Max returns the larger of u and v, field by field.
func (u Usage) Max(v Usage) Usage {
	return Usage{
		Invocations:      max(u.Invocations, v.Invocations),
		BusyNanos:        max(u.BusyNanos, v.BusyNanos),
		BytesIn:          max(u.BytesIn, v.BytesIn),
		BytesOut:         max(u.BytesOut, v.BytesOut),
		StateByteSeconds: max(u.StateByteSeconds, v.StateByteSeconds),
		SwapByteSeconds:  max(u.SwapByteSeconds, v.SwapByteSeconds),
	}
}

// ByteNanos is bytes × d as a 128-bit product (hi, lo), which a GiB held
// for minutes already needs.
func ByteNanos(bytes int64, d time.Duration) (hi, lo uint64) {
	if bytes <= 0 || d <= 0 {
		return 0, 0
	}
	return bits.Mul64(uint64(bytes), uint64(d))
}

// ByteSeconds is bytes × d in byte-seconds, rounded down (saturating at
// the largest uint64, some 16 exabyte-years).
func ByteSeconds(bytes int64, d time.Duration) uint64 {
	hi, lo := ByteNanos(bytes, d)
	if hi >= uint64(time.Second) {
		return ^uint64(0)
	}
	q, _ := bits.Div64(hi, lo, uint64(time.Second))
	return q
}

// SortUsage sorts buckets by Start, then PID, as ListUsage returns them.
func SortUsage(buckets []UsageBucket) {
	slices.SortFunc(buckets, func(a, b UsageBucket) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.PID, b.PID))
	})
}
