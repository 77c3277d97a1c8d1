// Command image is the praas image the benchmark harness runs: functions
// that time operations from inside a process (local invoke, remote invoke,
// messages), keep a reduction vector in process state, in Redis or in S3,
// and fill process state for the swap experiment.
//
// Functions that time something return the elapsed nanoseconds as
// little-endian int64s. The harness names Redis (redis://HOST:PORT/DB) and
// S3 (an s3:// URL as the praas swap store takes) to each process with
// bench-config before it uses them: a process's environment is only what
// the control plane gives it, never `praas up`'s own.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/praas-dev/praas"
	"github.com/praas-dev/praas/bench/internal/blob"
	"github.com/praas-dev/praas/bench/internal/wireval"
)

func main() {
	praas.Register("bench-config", benchConfig)
	praas.Register("echo", echo)
	praas.Register("local-bench", localBench)
	praas.Register("remote-call", remoteCall)
	praas.Register("msg-ping", msgPing)
	praas.Register("pong", pong, praas.OnMessage())
	praas.Register("redis-setget", redisSetGet)
	praas.Register("redis-ping", redisPing)
	praas.Register("redis-pong-loop", redisPongLoop)
	praas.Register("s3-putget", s3PutGet)
	praas.Register("reduce-state", reduceState)
	praas.Register("reduce-redis", reduceRedis)
	praas.Register("reduce-s3", reduceS3)
	praas.Register("reduce-get", reduceGet)
	praas.Register("fill-state", fillState)
	praas.Register("state-digest", stateDigest)
	praas.Serve()
}

func echo(_ context.Context, _ *praas.Process, in []byte) ([]byte, error) { return in, nil }

func nanos(d ...time.Duration) []byte {
	out := make([]byte, 0, 8*len(d))
	for _, v := range d {
		out = binary.LittleEndian.AppendUint64(out, uint64(v))
	}
	return out
}

// localBench: input count uint32, size uint32. It invokes echo in this
// process count times with a size-byte input and returns each call's time.
func localBench(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	r := wireval.NewReader(in)
	count, size := int(r.U32()), int(r.U32())
	if err := r.Err(); err != nil || count < 1 || count > 1<<20 {
		return nil, fmt.Errorf("local-bench expects count and size")
	}
	input := make([]byte, size)
	times := make([]time.Duration, count)
	for i := range times {
		start := time.Now()
		out, err := p.Invoke(ctx, praas.Self, "echo", input)
		times[i] = time.Since(start)
		if err != nil {
			return nil, err
		}
		if len(out) != size {
			return nil, fmt.Errorf("local echo returned %d bytes, want %d", len(out), size)
		}
	}
	return nanos(times...), nil
}

// remoteCall: input dest str8, then the payload. It invokes echo in dest
// with the payload and returns the time of that one call.
func remoteCall(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	r := wireval.NewReader(in)
	dest := r.Str8()
	payload := r.Rest()
	if err := r.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	out, err := p.Invoke(ctx, dest, "echo", payload)
	d := time.Since(start)
	if err != nil {
		return nil, err
	}
	if len(out) != len(payload) {
		return nil, fmt.Errorf("remote echo returned %d bytes, want %d", len(out), len(payload))
	}
	return nanos(d), nil
}

// msgPing: input dest str8, then the payload. It sends the payload to
// function pong in dest, which sends it back, and returns the round trip.
func msgPing(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	r := wireval.NewReader(in)
	dest := r.Str8()
	payload := r.Rest()
	if err := r.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := p.Send(ctx, dest, "pong", payload); err != nil {
		return nil, err
	}
	m, err := p.Recv(ctx, dest, "reply", 10*time.Second)
	d := time.Since(start)
	if err != nil {
		return nil, err
	}
	if len(m.Data) != len(payload) {
		return nil, fmt.Errorf("reply of %d bytes, want %d", len(m.Data), len(payload))
	}
	return nanos(d), nil
}

// pong runs for every message with key "pong" and sends its data back to
// the sender under key "reply".
func pong(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	_, msgs, ok := praas.Triggered(ctx)
	if !ok || len(msgs) != 1 {
		return nil, errors.New("pong runs on a message")
	}
	return nil, p.Send(ctx, msgs[0].Src, "reply", msgs[0].Data)
}

// Where Redis and S3 are, as bench-config set them.
var (
	configMu        sync.Mutex
	redisURL, s3URL string
)

// benchConfig takes "REDIS_URL\nS3_URL" (either may be empty) for the
// functions that compare with Redis and S3. Set it before their first call:
// the clients are made once.
func benchConfig(_ context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	r, s, ok := strings.Cut(string(in), "\n")
	if !ok {
		return nil, errors.New(`bench-config takes "REDIS_URL\nS3_URL"`)
	}
	configMu.Lock()
	redisURL, s3URL = r, s
	configMu.Unlock()
	return nil, nil
}

func configured() (redis, s3 string) {
	configMu.Lock()
	defer configMu.Unlock()
	return redisURL, s3URL
}

var (
	redisOnce    sync.Once
	redisA       *goredis.Client // the sender's connection
	redisB       *goredis.Client // the receiver's connection
	redisInitErr error
)

func redisClients(ctx context.Context) (*goredis.Client, *goredis.Client, error) {
	redisOnce.Do(func() {
		u, _ := configured()
		if u == "" {
			redisInitErr = errors.New("no Redis URL: the harness calls bench-config first")
			return
		}
		if redisA, redisInitErr = blob.OpenRedis(ctx, u, 4); redisInitErr != nil {
			return
		}
		redisB, redisInitErr = blob.OpenRedis(ctx, u, 4)
	})
	return redisA, redisB, redisInitErr
}

var (
	s3Once    sync.Once
	s3Store   *blob.S3
	s3InitErr error
)

func s3Client(ctx context.Context) (*blob.S3, error) {
	s3Once.Do(func() {
		_, u := configured()
		if u == "" {
			s3InitErr = errors.New("no S3 URL: the harness calls bench-config first")
			return
		}
		s3Store, s3InitErr = blob.OpenS3(ctx, u)
	})
	return s3Store, s3InitErr
}

// redisSetGet: the sender SETs the payload, the receiver GETs it (on its
// own connection); returns the time of both.
func redisSetGet(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	a, b, err := redisClients(ctx)
	if err != nil {
		return nil, err
	}
	key := "bench:msg:" + p.PID()
	start := time.Now()
	if err := a.Set(ctx, key, in, 0).Err(); err != nil {
		return nil, err
	}
	got, err := b.Get(ctx, key).Bytes()
	d := time.Since(start)
	if err != nil {
		return nil, err
	}
	if len(got) != len(in) {
		return nil, fmt.Errorf("GET returned %d bytes, want %d", len(got), len(in))
	}
	return nanos(d), nil
}

const (
	queueReq = "bench:queue:req"
	queueRep = "bench:queue:rep"
)

// redisPing: LPUSH the payload to the request list, BRPOP the reply that
// redis-pong-loop (in another process) pushes back; returns the round trip.
func redisPing(ctx context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	a, _, err := redisClients(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := a.LPush(ctx, queueReq, in).Err(); err != nil {
		return nil, err
	}
	kv, err := a.BRPop(ctx, 10*time.Second, queueRep).Result()
	d := time.Since(start)
	if err != nil {
		return nil, err
	}
	if len(kv) != 2 || len(kv[1]) != len(in) {
		return nil, errors.New("bad reply from the request list")
	}
	return nanos(d), nil
}

// redisPongLoop: input count uint32. It answers count requests of
// redis-ping: BRPOP from the request list, LPUSH to the reply list.
func redisPongLoop(ctx context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	r := wireval.NewReader(in)
	count := int(r.U32())
	if err := r.Err(); err != nil {
		return nil, err
	}
	_, b, err := redisClients(ctx)
	if err != nil {
		return nil, err
	}
	for i := 0; i < count; i++ {
		kv, err := b.BRPop(ctx, 30*time.Second, queueReq).Result()
		if err != nil {
			return nil, fmt.Errorf("after %d requests: %w", i, err)
		}
		if err := b.LPush(ctx, queueRep, kv[1]).Err(); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// s3PutGet: PUT the payload as an object, GET it back; returns the time of both.
func s3PutGet(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	s, err := s3Client(ctx)
	if err != nil {
		return nil, err
	}
	key := "bench/msg/" + p.PID()
	start := time.Now()
	if err := s.Put(ctx, key, in); err != nil {
		return nil, err
	}
	got, err := s.Get(ctx, key, nil)
	d := time.Since(start)
	if err != nil {
		return nil, err
	}
	if len(got) != len(in) {
		return nil, fmt.Errorf("GET returned %d bytes, want %d", len(got), len(in))
	}
	return nanos(d), nil
}

// addInto adds the little-endian int64 vector in to acc (same length).
func addInto(acc, in []byte) {
	for i := 0; i+8 <= len(in); i += 8 {
		v := binary.LittleEndian.Uint64(acc[i:]) + binary.LittleEndian.Uint64(in[i:])
		binary.LittleEndian.PutUint64(acc[i:], v)
	}
}

func reduceArgs(in []byte) (key string, vec []byte, err error) {
	r := wireval.NewReader(in)
	key = r.Str8()
	vec = r.Rest()
	if err := r.Err(); err != nil {
		return "", nil, err
	}
	if key == "" || len(vec)%8 != 0 {
		return "", nil, errors.New("reduce expects key str8 and a vector of int64")
	}
	return key, vec, nil
}

// reduceState adds the input vector into the vector kept in process state.
func reduceState(_ context.Context, p *praas.Process, in []byte) ([]byte, error) {
	key, vec, err := reduceArgs(in)
	if err != nil {
		return nil, err
	}
	_, err = p.UpdateState("vec/"+key, func(old []byte, ok bool) []byte {
		if !ok || len(old) != len(vec) {
			old = make([]byte, len(vec))
		}
		addInto(old, vec)
		return old
	})
	return nil, err
}

// reduceRedis keeps the vector in Redis: GET, add, SET.
func reduceRedis(ctx context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	key, vec, err := reduceArgs(in)
	if err != nil {
		return nil, err
	}
	a, _, err := redisClients(ctx)
	if err != nil {
		return nil, err
	}
	rkey := "bench:vec:" + key
	acc, err := a.Get(ctx, rkey).Bytes()
	if errors.Is(err, goredis.Nil) || (err == nil && len(acc) != len(vec)) {
		acc, err = make([]byte, len(vec)), nil
	}
	if err != nil {
		return nil, err
	}
	addInto(acc, vec)
	return nil, a.Set(ctx, rkey, acc, 0).Err()
}

// reduceS3 keeps the vector in S3: GET, add, PUT.
func reduceS3(ctx context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	key, vec, err := reduceArgs(in)
	if err != nil {
		return nil, err
	}
	s, err := s3Client(ctx)
	if err != nil {
		return nil, err
	}
	okey := "bench/vec/" + key
	acc, err := s.Get(ctx, okey, nil)
	if errors.Is(err, blob.ErrNotFound) || (err == nil && len(acc) != len(vec)) {
		acc, err = make([]byte, len(vec)), nil
	}
	if err != nil {
		return nil, err
	}
	addInto(acc, vec)
	return nil, s.Put(ctx, okey, acc)
}

// reduceGet: input "state KEY", "redis KEY" or "s3 KEY": returns the vector.
func reduceGet(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	where, key, _ := strings.Cut(string(in), " ")
	switch where {
	case "state":
		v, _ := p.State("vec/" + key)
		return v, nil
	case "redis":
		a, _, err := redisClients(ctx)
		if err != nil {
			return nil, err
		}
		return a.Get(ctx, "bench:vec:"+key).Bytes()
	case "s3":
		s, err := s3Client(ctx)
		if err != nil {
			return nil, err
		}
		return s.Get(ctx, "bench/vec/"+key, nil)
	}
	return nil, fmt.Errorf("reduce-get: unknown store %q", where)
}

const chunk = 1 << 20

// fillState: input total uint64. It replaces the state with total bytes of
// random data in 1 MiB values and returns the digest (see stateDigest).
func fillState(_ context.Context, p *praas.Process, in []byte) ([]byte, error) {
	r := wireval.NewReader(in)
	total := int(r.U64())
	if err := r.Err(); err != nil {
		return nil, err
	}
	for _, k := range p.StateKeys() {
		p.DeleteState(k)
	}
	rng := rand.NewChaCha8([32]byte{byte(total), byte(total >> 8), byte(total >> 16), byte(total >> 24)})
	for i := 0; total > 0; i++ {
		n := min(total, chunk)
		b := make([]byte, n)
		_, _ = rng.Read(b)
		if err := p.SetState(fmt.Sprintf("blob/%06d", i), b); err != nil {
			return nil, err
		}
		total -= n
	}
	return digest(p), nil
}

// stateDigest returns the state's size uint64 and CRC-32C uint32 over its
// keys and values in key order.
func stateDigest(_ context.Context, p *praas.Process, _ []byte) ([]byte, error) {
	return digest(p), nil
}

func digest(p *praas.Process) []byte {
	tab := crc32.MakeTable(crc32.Castagnoli)
	var sum uint32
	var size uint64
	for _, k := range p.StateKeys() {
		v, _ := p.State(k)
		sum = crc32.Update(sum, tab, []byte(k))
		sum = crc32.Update(sum, tab, v)
		size += uint64(len(v))
	}
	out := binary.LittleEndian.AppendUint64(nil, size)
	return binary.LittleEndian.AppendUint32(out, sum)
}
