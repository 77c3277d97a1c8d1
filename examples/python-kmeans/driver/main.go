// Command driver trains the k-means model of examples/python-kmeans in a
// praas process: it creates the app with the Python image, loads a data set
// of K noisy clusters into the process state, runs step invocations until
// the centroids stop moving, swaps the process out and back in halfway
// (the model lives in the process state and survives it), and prints the
// model.
//
//	PRAAS_TOKEN=praas_... go run ./examples/python-kmeans/driver -k 3 -points 3000
//
// It talks to $PRAAS_ENDPOINT (default http://127.0.0.1:8420) with the API
// key in $PRAAS_TOKEN.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
}

type stepResult struct {
	Iteration int         `json:"iteration"`
	Inertia   float64     `json:"inertia"`
	Moved     float64     `json:"moved"`
	Centroids [][]float64 `json:"centroids"`
}

func run() error {
	endpoint := os.Getenv("PRAAS_ENDPOINT")
	if endpoint == "" {
		endpoint = client.DefaultEndpoint
	}
	fs := flag.NewFlagSet("driver", flag.ExitOnError)
	app := fs.String("app", "kmeans", "application to create (deleted first if it exists)")
	module := fs.String("module", "examples/python-kmeans/kmeans.py", "the Python module")
	k := fs.Int("k", 3, "clusters")
	n := fs.Int("points", 3000, "points")
	maxSteps := fs.Int("steps", 50, "most iterations")
	fs.Parse(os.Args[1:])
	abs, err := filepath.Abs(*module)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := client.New(endpoint, client.WithToken(os.Getenv("PRAAS_TOKEN")))
	defer c.Close()
	if err := c.DeleteApp(ctx, *app); err != nil && !errors.Is(err, errs.ErrNotFound) {
		return err
	}
	if _, err := c.CreateApp(ctx, *app, "python:"+abs); err != nil {
		return err
	}
	if _, err := c.CreateProcess(ctx, *app, "trainer"); err != nil {
		return err
	}

	// K clusters around random centres.
	rng := rand.New(rand.NewPCG(1, 2))
	pts := make([][2]float64, 0, *n)
	for i := range *n {
		cx, cy := float64(i%*k)*10, float64((i%*k)*(i%*k))*3
		pts = append(pts, [2]float64{cx + rng.NormFloat64(), cy + rng.NormFloat64()})
	}
	in, _ := json.Marshal(map[string]any{"k": *k, "points": pts})
	out, err := c.Invoke(ctx, *app, "trainer", "load", in)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	fmt.Printf("loaded %s\n", out)

	start := time.Now()
	var r stepResult
	for i := 0; i < *maxSteps; i++ {
		if i == 2 {
			// The model is in the process state: a swap loses nothing.
			if _, err := c.SwapProcess(ctx, *app, "trainer"); err != nil {
				return fmt.Errorf("swap: %w", err)
			}
			fmt.Println("swapped the trainer out; the next step swaps it back in")
		}
		out, err := c.Invoke(ctx, *app, "trainer", "step", nil)
		if err != nil {
			return fmt.Errorf("step: %w", err)
		}
		if err := json.Unmarshal(out, &r); err != nil {
			return err
		}
		fmt.Printf("iteration %2d: inertia %.1f, moved %.4f\n", r.Iteration, r.Inertia, r.Moved)
		if r.Moved < 1e-9 {
			break
		}
	}
	fmt.Printf("converged after %d iterations in %s; centroids %v\n", r.Iteration, time.Since(start).Round(time.Millisecond), r.Centroids)
	return nil
}
