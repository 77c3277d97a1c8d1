package workers_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/process"
	"github.com/praas-dev/praas/process/workers"
)

// goFunctions are the Go counterparts of the benchmarked Python functions,
// registered beside them in one runtime so that both run in one run.
func goFunctions(im *process.Image) {
	im.Register("go-noop", func(context.Context, *process.Process, []byte) ([]byte, error) { return nil, nil })
	im.Register("go-state-loop", func(_ context.Context, p *process.Process, in []byte) ([]byte, error) {
		n, _ := strconv.Atoi(string(in))
		for range n {
			if err := p.SetState("k", make([]byte, 64)); err != nil {
				return nil, err
			}
			p.State("k")
		}
		return nil, nil
	})
	im.Register("go-msg-loop", func(ctx context.Context, p *process.Process, in []byte) ([]byte, error) {
		n, _ := strconv.Atoi(string(in))
		for range n {
			if err := p.Send(ctx, process.Self, "m", make([]byte, 64)); err != nil {
				return nil, err
			}
			if _, err := p.Recv(ctx, process.Self, "m", 5*time.Second); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
}

// BenchmarkInvoke compares a Python no-op invocation over the data plane
// with the Go one, at three input sizes, in one runtime.
func BenchmarkInvoke(b *testing.B) {
	_, dc := startPython(b, 2, goFunctions)
	// The same Python functions with large payloads through the socket.
	_, sock := startWith(b, workers.Python{Module: module(b), Workers: 2, NoSharedMemory: true})
	for _, size := range []struct {
		name string
		n    int
	}{{"1B", 1}, {"1KiB", 1 << 10}, {"1MiB", 1 << 20}} {
		in := make([]byte, size.n)
		for _, v := range []struct {
			name, fn string
			dc       *client.DataConn
		}{{"go", "go-noop", dc}, {"python", "noop", dc}, {"python-socket", "noop", sock}} {
			if v.name == "python-socket" && size.n < 64<<10 {
				continue
			}
			b.Run(v.name+"/"+size.name, func(b *testing.B) {
				b.SetBytes(int64(size.n))
				for b.Loop() {
					if _, err := v.dc.Invoke(context.Background(), v.fn, in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkStateCall is the cost of one state get plus one set from a
// function, Python against Go (100 pairs per invocation; ns/op is per pair).
func BenchmarkStateCall(b *testing.B) { benchLoop(b, "state-loop") }

// BenchmarkSendRecv is the cost of one send to the process itself and one
// recv of it, Python against Go (ns/op is per pair).
func BenchmarkSendRecv(b *testing.B) { benchLoop(b, "msg-loop") }

func benchLoop(b *testing.B, fn string) {
	_, dc := startPython(b, 2, goFunctions)
	const per = 100
	for _, f := range []string{"go-" + fn, fn} {
		lang := "python"
		if f != fn {
			lang = "go"
		}
		b.Run(lang, func(b *testing.B) {
			invocations := 0
			start := time.Now()
			for b.Loop() {
				if _, err := dc.Invoke(context.Background(), f, []byte(strconv.Itoa(per))); err != nil {
					b.Fatal(err)
				}
				invocations++
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(invocations*per), "ns/pair")
		})
	}
}

// BenchmarkShmVsSocket measures whether large payloads should go through
// the workers' shared memory: the same Python function on two runtimes,
// one with shared memory and one without, invoked alternately (so both see
// the same load); it reports the median of each in µs.
func BenchmarkShmVsSocket(b *testing.B) {
	_, shm := startWith(b, workers.Python{Module: module(b), Workers: 1})
	_, sock := startWith(b, workers.Python{Module: module(b), Workers: 1, NoSharedMemory: true})
	for _, fn := range []string{"noop", "echo"} {
		for _, n := range []int{256 << 10, 1 << 20, 8 << 20} {
			in := make([]byte, n)
			b.Run(fmt.Sprintf("%s/%dKiB", fn, n>>10), func(b *testing.B) {
				var ds [2][]time.Duration
				for b.Loop() {
					for i, dc := range []*client.DataConn{shm, sock} {
						start := time.Now()
						if _, err := dc.Invoke(context.Background(), fn, in); err != nil {
							b.Fatal(err)
						}
						ds[i] = append(ds[i], time.Since(start))
					}
				}
				for i, name := range []string{"shm-µs", "socket-µs"} {
					slices.Sort(ds[i])
					b.ReportMetric(float64(ds[i][len(ds[i])/2].Microseconds()), name)
				}
			})
		}
	}
}
