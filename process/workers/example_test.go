package workers_test

import (
	"encoding/json"
	"path/filepath"
	"testing"
)

// TestKMeansExample trains examples/python-kmeans on three clusters: the
// centroids converge near the clusters' centres, and the model is in the
// runtime's state.
func TestKMeansExample(t *testing.T) {
	mod, err := filepath.Abs("../../examples/python-kmeans/kmeans.py")
	if err != nil {
		t.Fatal(err)
	}
	rt, dc := startModule(t, mod, 2)
	var pts [][2]float64
	centres := [][2]float64{{0, 0}, {10, 0}, {0, 10}}
	for i := range 300 {
		c := centres[i%3]
		pts = append(pts, [2]float64{c[0] + float64(i%7)/7 - 0.5, c[1] + float64(i%5)/5 - 0.5})
	}
	in, _ := json.Marshal(map[string]any{"k": 3, "points": pts, "seed": 3})
	invoke(t, dc, "load", string(in))
	var r struct {
		Moved     float64      `json:"moved"`
		Centroids [][2]float64 `json:"centroids"`
	}
	for i := 0; i < 30; i++ {
		if err := json.Unmarshal([]byte(invoke(t, dc, "step", "")), &r); err != nil {
			t.Fatal(err)
		}
		if r.Moved == 0 {
			break
		}
	}
	if r.Moved != 0 {
		t.Fatalf("not converged after 30 steps: %+v", r)
	}
	for _, c := range centres {
		near := false
		for _, got := range r.Centroids {
			if (got[0]-c[0])*(got[0]-c[0])+(got[1]-c[1])*(got[1]-c[1]) < 0.5 {
				near = true
			}
		}
		if !near {
			t.Errorf("no centroid near %v: %v", c, r.Centroids)
		}
	}
	if v, ok := rt.Process().State("centroids"); !ok || len(v) == 0 {
		t.Error("the model is not in the process state")
	}
}
