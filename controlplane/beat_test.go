package controlplane

import (
	"strconv"
	"testing"
	"time"
)

// A replica with more processes than its heartbeat budget asks them to beat
// less often, and waits as many times longer before it calls one silent.
func TestBeatInterval(t *testing.T) {
	for _, tc := range []struct {
		live          int
		interval, max time.Duration
	}{
		{0, 0, 5 * time.Second},
		{beatsPerSecond, 0, 5 * time.Second},
		{2 * beatsPerSecond, 2 * time.Second, 10 * time.Second},
		{4 * beatsPerSecond, 4 * time.Second, 20 * time.Second},
	} {
		s := &Server{cfg: Config{HeartbeatTimeout: 5 * time.Second}, live: make(map[string]*live)}
		for i := range tc.live {
			s.live[strconv.Itoa(i)] = &live{}
		}
		if got := s.beatInterval(); got != tc.interval {
			t.Errorf("%d processes: interval %s, want %s", tc.live, got, tc.interval)
		}
		if got := s.silenceLimit(); got != tc.max {
			t.Errorf("%d processes: silence limit %s, want %s", tc.live, got, tc.max)
		}
	}
}
