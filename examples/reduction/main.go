// Command reduction is a praas image for a parameter-server reduction, the
// machine-learning use case of Process-as-a-Service: worker processes each
// compute a partial gradient and send it to a parameter-server process,
// whose multi-source trigger adds the workers' vectors of a round into the
// model once all of them have arrived.
//
// Functions:
//
//	train   on a worker. Input "ROUND SERVER": computes this worker's gradient
//	        for ROUND and sends it to process SERVER with key "reduce:ROUND"
//	        (DIM float64 values, little-endian). Returns a one-line summary.
//	reduce  on the server, triggered by WORKERS messages with key
//	        "reduce:ROUND": adds their sum to the model in state.
//	model   on the server: the model as JSON, {"rounds", "last_round",
//	        "model": [...]}, where rounds counts the rounds reduced so far.
//	config  anywhere: {"workers", "dim"} as JSON.
//
// The image reads its configuration from the environment when it starts:
// REDUCTION_WORKERS (the number of workers, default 4) and REDUCTION_DIM
// (the vector length, default 16). With the local backend processes inherit
// the environment of the control plane, so set them for `praas up`.
//
// The gradient is pseudo-data that depends only on the round, the worker's
// pid and the index: values are multiples of 1/1024 between -1000/1024 and
// 1000/1024, so sums are exact whatever the order of additions.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/praas-dev/praas"
	"github.com/praas-dev/praas/errs"
)

// Config is the image's configuration.
type Config struct {
	Workers int `json:"workers"`
	Dim     int `json:"dim"`
}

func configFromEnv() (Config, error) {
	c := Config{Workers: 4, Dim: 16}
	for _, v := range []struct {
		name string
		dst  *int
	}{{"REDUCTION_WORKERS", &c.Workers}, {"REDUCTION_DIM", &c.Dim}} {
		s := os.Getenv(v.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1<<20 {
			return c, fmt.Errorf("%s=%q: want a positive integer", v.name, s)
		}
		*v.dst = n
	}
	return c, nil
}

func main() {
	cfg, err := configFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reduction:", err)
		os.Exit(2)
	}
	praas.Register("train", cfg.train)
	praas.Register("reduce", cfg.reduce, praas.MultiSource(cfg.Workers))
	praas.Register("model", model)
	praas.Register("config", func(context.Context, *praas.Process, []byte) ([]byte, error) {
		return json.Marshal(cfg)
	})
	praas.Serve()
}

// gradient returns worker pid's partial gradient for round.
func gradient(round uint64, pid string, dim int) []float64 {
	h := fnv.New64a()
	h.Write([]byte(pid))
	seed := h.Sum64() ^ round*0x9e3779b97f4a7c15
	g := make([]float64, dim)
	for i := range g {
		x := splitmix64(seed + uint64(i))
		g[i] = float64(int64(x%2001)-1000) / 1024
	}
	return g
}

// splitmix64 is the finalizer of the SplitMix64 generator.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func encode(v []float64) []byte {
	b := make([]byte, 0, 8*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

func decode(b []byte) ([]float64, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a vector of float64", errs.ErrInvalidArgument, len(b))
	}
	v := make([]float64, len(b)/8)
	for i := range v {
		v[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return v, nil
}

// train computes the worker's gradient for a round and sends it to the server.
func (c Config) train(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	f := strings.Fields(string(in))
	if len(f) != 2 {
		return nil, fmt.Errorf("%w: train expects ROUND SERVER", errs.ErrInvalidArgument)
	}
	round, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil || round == 0 {
		return nil, fmt.Errorf("%w: train: ROUND %q is not a positive integer", errs.ErrInvalidArgument, f[0])
	}
	g := gradient(round, p.PID(), c.Dim)
	if err := p.Send(ctx, f[1], "reduce:"+f[0], encode(g)); err != nil {
		return nil, err
	}
	if err := p.SetState("trained", []byte(f[0])); err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "%s sent %d values to %s for round %d", p.PID(), len(g), f[1], round), nil
}

// modelState is what the server keeps under state key "model".
type modelState struct {
	Rounds    int       `json:"rounds"`
	LastRound uint64    `json:"last_round"`
	Model     []float64 `json:"model"`
}

// reduce adds the workers' gradients of a round into the model.
func (c Config) reduce(ctx context.Context, p *praas.Process, _ []byte) ([]byte, error) {
	key, msgs, ok := praas.Triggered(ctx)
	if !ok {
		return nil, fmt.Errorf("%w: reduce runs when %d messages with key reduce:ROUND arrived", errs.ErrFailedPrecondition, c.Workers)
	}
	round, err := strconv.ParseUint(key, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: reduce: round %q is not a number", errs.ErrInvalidArgument, key)
	}
	sum := make([]float64, c.Dim)
	var sources []string
	for _, m := range msgs {
		g, err := decode(m.Data)
		if err != nil {
			return nil, err
		}
		if len(g) != c.Dim {
			return nil, fmt.Errorf("%w: round %d: %s sent %d values, want %d", errs.ErrInvalidArgument, round, m.Src, len(g), c.Dim)
		}
		if slices.Contains(sources, m.Src) {
			return nil, fmt.Errorf("%w: round %d: two gradients from %q", errs.ErrInvalidArgument, round, m.Src)
		}
		sources = append(sources, m.Src)
		for i, x := range g {
			sum[i] += x
		}
	}
	// A round is reduced once: a repeated one (a driver that retried) is refused.
	var again bool
	if _, err := p.UpdateState("reduced/"+key, func(old []byte, ok bool) []byte {
		again = ok
		return []byte("1")
	}); err != nil {
		return nil, err
	}
	if again {
		return nil, fmt.Errorf("%w: round %d was already reduced", errs.ErrAlreadyExists, round)
	}
	var failure error
	_, err = p.UpdateState("model", func(old []byte, ok bool) []byte {
		m := modelState{Model: make([]float64, c.Dim)}
		if ok {
			if err := json.Unmarshal(old, &m); err != nil {
				failure = err
				return old
			}
		}
		for i, x := range sum {
			m.Model[i] += x
		}
		m.Rounds++
		m.LastRound = max(m.LastRound, round)
		b, err := json.Marshal(m)
		if err != nil {
			failure = err
			return old
		}
		return b
	})
	return nil, errors.Join(failure, err)
}

// model returns the model state as JSON.
func model(_ context.Context, p *praas.Process, _ []byte) ([]byte, error) {
	if v, ok := p.State("model"); ok {
		return v, nil
	}
	return []byte(`{"rounds":0,"last_round":0,"model":[]}`), nil
}
