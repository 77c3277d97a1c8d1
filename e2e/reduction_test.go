package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// gradient is the pseudo-gradient of examples/reduction, computed here
// independently of the image: worker pid's vector for round.
func gradient(round uint64, pid string, dim int) []float64 {
	h := fnv.New64a()
	h.Write([]byte(pid))
	seed := h.Sum64() ^ round*0x9e3779b97f4a7c15
	g := make([]float64, dim)
	for i := range g {
		x := seed + uint64(i) + 0x9e3779b97f4a7c15
		x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
		x = (x ^ x>>27) * 0x94d049bb133111eb
		x ^= x >> 31
		g[i] = float64(int64(x%2001)-1000) / 1024
	}
	return g
}

// runDriver runs the example's driver against cl and returns its output.
func runDriver(t *testing.T, cl *cluster, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.driver, append([]string{"-endpoint", cl.url, "-image", bins.reduction}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// The reduction example end to end: its driver runs three rounds with
// three workers; the parameter server's model is the sum of every worker's
// gradient of every round.
func TestReductionExample(t *testing.T) {
	t.Parallel()
	const (
		workers = 3
		rounds  = 3
		dim     = 8
	)
	cl := newCluster(t, fmt.Sprintf("REDUCTION_WORKERS=%d", workers), fmt.Sprintf("REDUCTION_DIM=%d", dim))

	out, err := runDriver(t, cl, "-app", "reduction", "-workers", fmt.Sprint(workers), "-rounds", fmt.Sprint(rounds))
	if err != nil {
		t.Fatalf("driver: %v\n%s", err, out)
	}
	t.Logf("driver output:\n%s", out)

	want := make([]float64, dim)
	for r := uint64(1); r <= rounds; r++ {
		for w := 1; w <= workers; w++ {
			for i, x := range gradient(r, fmt.Sprintf("w%d", w), dim) {
				want[i] += x
			}
		}
	}
	var got struct {
		Rounds    int       `json:"rounds"`
		LastRound uint64    `json:"last_round"`
		Model     []float64 `json:"model"`
	}
	if err := json.Unmarshal([]byte(cl.invoke(t, "reduction", "ps", "model", "")), &got); err != nil {
		t.Fatal(err)
	}
	if got.Rounds != rounds || got.LastRound != rounds {
		t.Errorf("model has %d rounds, last %d; want %d", got.Rounds, got.LastRound, rounds)
	}
	if diff := cmp.Diff(want, got.Model); diff != "" {
		t.Fatalf("model (-want +got):\n%s", diff)
	}

	h := fnv.New64a()
	for _, x := range want {
		h.Write(binary.LittleEndian.AppendUint64(nil, math.Float64bits(x)))
	}
	if sum := fmt.Sprintf("checksum %016x", h.Sum64()); !strings.Contains(out, sum) {
		t.Errorf("driver output does not report %q", sum)
	}
	for r := 1; r <= rounds; r++ {
		if !strings.Contains(out, fmt.Sprintf("round %d: ", r)) {
			t.Errorf("driver output has no timing for round %d", r)
		}
	}

	t.Run("driver refuses a worker count the image was not started with", func(t *testing.T) {
		out, err := runDriver(t, cl, "-app", "reduction-4", "-workers", "4", "-rounds", "1")
		if err == nil {
			t.Fatalf("driver succeeded with -workers 4:\n%s", out)
		}
		if !strings.Contains(out, "REDUCTION_WORKERS=3 but -workers is 4") {
			t.Fatalf("driver output does not explain the mismatch:\n%s", out)
		}
	})

	t.Run("driver refuses an existing app without -reset", func(t *testing.T) {
		out, err := runDriver(t, cl, "-app", "reduction", "-workers", "3", "-rounds", "1")
		if err == nil || !strings.Contains(out, "use -reset") {
			t.Fatalf("driver on an existing app: %v\n%s", err, out)
		}
	})
}
