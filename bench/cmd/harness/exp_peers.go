package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/praas-dev/praas/bench/internal/stats"
	"github.com/praas-dev/praas/client"
)

// counterSystem is one system keeping a counter: incr adds 1 and returns
// the new value.
type counterSystem struct {
	name      string
	guarantee string
	incr      func(ctx context.Context) (int64, error)
	err       error // set when the system is not available
}

// expPeers is experiment 7: a counter in state through praas, a Restate
// virtual object and a Cloudflare Durable Object in workerd.
func expPeers(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 7, Title: "Stateful peers: a counter", Plot: "7-peers.svg"}
	seq, conc := e.reps(1000, 200), 16
	sec.Text = []string{
		fmt.Sprintf("A counter kept in state, incremented by %d sequential calls and then by %d concurrent callers (%d calls in all), "+
			"from a Go client on the same host. Each system runs on loopback with its defaults; the sequential calls of all systems "+
			"are interleaved, the concurrent phases run one system at a time. Every counter's final value is checked.", seq, conc, seq),
		"- **praas, data plane**: the builtin `counter` function over a `client.DataConn`;\n" +
			"- **praas, control plane**: the same through `POST /v1/apps/{app}/invoke/counter?pid=...`;\n" +
			"- **Restate**: a virtual object `counter` with an exclusive handler `add` (`ctx.get`/`ctx.set`) written with the TypeScript SDK " +
			"(`bench/peers/restate/counter.mjs`, Node " + nodeVersion(ctx) + "), served by `restate-server` (npm `@restatedev/restate-server`) and called through its HTTP ingress;\n" +
			"- **Durable Object**: a class `Counter` (`bench/peers/workerd/counter.js`) using `storage.get`/`storage.put`, served by `workerd` " +
			"(npm `workerd`) with SQLite storage on local disk, called over HTTP.",
		"**What an acknowledged increment survives differs, so these numbers do not compare like for like:**",
		"| system | an increment, once acknowledged, is |\n|---|---|\n" +
			"| praas | in the process's memory only. It survives swap-out/swap-in and a graceful control-plane restart (the state is snapshotted), but a crash of the process loses the increments since its last snapshot (`--checkpoint-interval` bounds that; off in this run). No disk write per call. |\n" +
			"| Restate | durable: the invocation's journal and state change are in Restate's log on local disk (RocksDB write-ahead log, fsync on by default) before the response; survives a crash of the server and of the service. |\n" +
			"| Durable Object (workerd) | durable: the output gate holds the response until the write is committed to the object's SQLite database on local disk (workerd fsyncs its write-ahead log on each commit). |",
	}
	var systems []*counterSystem
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()

	// praas over the data plane and through the control plane.
	dc, err := dataConn(ctx, e.C, "demo", "counter-dp")
	if err != nil {
		return sec, nil, err
	}
	defer dc.Close()
	if _, err := e.C.CreateProcess(ctx, "demo", "counter-cp"); err != nil {
		return sec, nil, err
	}
	cc := client.New(e.CP.Endpoint, client.WithToken(e.CP.Token))
	defer cc.Close()
	praasGuarantee := "memory; snapshot on swap"
	systems = append(systems,
		&counterSystem{name: "praas data plane", guarantee: praasGuarantee, incr: func(ctx context.Context) (int64, error) {
			out, err := dc.Invoke(ctx, "counter", nil)
			if err != nil {
				return 0, err
			}
			return strconv.ParseInt(string(out), 10, 64)
		}},
		&counterSystem{name: "praas control plane", guarantee: praasGuarantee, incr: func(ctx context.Context) (int64, error) {
			res, err := cc.InvokeControlPlane(ctx, "demo", "counter-cp", "counter", nil)
			if err != nil {
				return 0, err
			}
			return strconv.ParseInt(string(res.Output), 10, 64)
		}})

	key := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	restate := &counterSystem{name: "Restate", guarantee: "durable (log, fsync)"}
	if url, err := e.startRestate(ctx); err != nil {
		restate.err = err
	} else {
		restate.incr = httpCounter(hc, url+"/counter/"+key+"/add")
	}
	workerd := &counterSystem{name: "Durable Object (workerd)", guarantee: "durable (SQLite, fsync)"}
	if url, err := e.startWorkerd(ctx); err != nil {
		workerd.err = err
	} else {
		workerd.incr = httpCounter(hc, url+"/"+key)
	}
	systems = append(systems, restate, workerd)

	var avail []*counterSystem
	for _, s := range systems {
		if s.err != nil {
			e.logf("exp 7 %s is not available: %v", s.name, s.err)
			continue
		}
		avail = append(avail, s)
	}
	// Sequential calls, interleaved.
	var ops []op
	counts := map[string]int64{}
	for _, s := range avail {
		ops = append(ops, op{s.name, timed(func(ctx context.Context) error {
			_, err := s.incr(ctx)
			if err == nil {
				counts[s.name]++
			}
			return err
		})})
	}
	start := time.Now()
	warm := 10
	samples, errs := interleave(ctx, warm, seq, ops)
	for name, err := range errs {
		for _, s := range avail {
			if s.name == name {
				s.err = err
			}
		}
	}
	seqTook := time.Since(start)
	e.logf("exp 7 sequential phase took %s", seqTook.Round(time.Millisecond))

	var ms []Measure
	tbl := Table{Head: []string{"system", "sequential: median µs", "99% CI", "p99 µs", "calls/s", "16 concurrent: median µs", "p99 µs", "calls/s", "durability"}}
	var cats []string
	bars := []barGroup{{name: "sequential"}, {name: fmt.Sprintf("%d concurrent callers", conc)}}
	for _, s := range systems {
		id := strings.ToLower(strings.NewReplacer(" ", "_", "(", "", ")", "").Replace(s.name))
		if s.err != nil {
			why := firstLine(s.err.Error())
			ms = append(ms, unavailable("counter_sequential_"+id, "us", why), unavailable("counter_concurrent16_"+id, "us", why))
			tbl.add(s.name, "not available: "+why, "", "", "", "", "", "", "")
			continue
		}
		ss := samples.sum(s.name)
		// One sequential caller: its rate is 1 / the mean latency.
		seqRate := 1e6 / ss.Mean
		// Concurrent callers.
		lat, rate, err := concurrentCalls(ctx, s, conc, seq)
		if err != nil {
			s.err = err
			why := firstLine(err.Error())
			ms = append(ms, unavailable("counter_concurrent16_"+id, "us", why))
			tbl.add(s.name, fmtVal(ss.Median), fmtCI(ss), fmtVal(ss.P99), fmtVal(seqRate), "failed: "+why, "", "", s.guarantee)
			continue
		}
		counts[s.name] += int64(seq)
		final, err := s.incr(ctx)
		if err != nil {
			return sec, ms, err
		}
		if final != counts[s.name]+1 {
			return sec, ms, fmt.Errorf("%s counted %d increments, %d were made", s.name, final, counts[s.name]+1)
		}
		cs := stats.Summarize(lat)
		ms = append(ms,
			measure("counter_sequential_"+id, "us", ss),
			measure("counter_concurrent16_"+id, "us", cs),
			Measure{Name: "counter_throughput_sequential_" + id, Unit: "ops/s", Median: num(seqRate), N: ss.N},
			Measure{Name: "counter_throughput_concurrent16_" + id, Unit: "ops/s", Median: num(rate), N: 1})
		tbl.add(s.name, fmtVal(ss.Median), fmtCI(ss), fmtVal(ss.P99), fmtVal(seqRate), fmtVal(cs.Median), fmtVal(cs.P99), fmtVal(rate), s.guarantee)
		cats = append(cats, s.name)
		bars[0].values = append(bars[0].values, seqRate)
		bars[1].values = append(bars[1].values, rate)
		e.logf("exp 7 %-26s sequential %s µs (%s/s), %d concurrent %s/s", s.name, fmtVal(ss.Median), fmtVal(seqRate), conc, fmtVal(rate))
	}
	sec.Tables = append(sec.Tables, tbl)
	sec.Notes = append(sec.Notes, "Sequential calls/s is one caller's rate (1 / mean latency); concurrent calls/s is the total rate of all callers. "+
		"Each counter's final value equalled the number of increments made.")
	if len(cats) == 0 {
		return sec, ms, errors.New("no system available")
	}
	return sec, ms, barPlot(e.plotPath(sec.Plot), "Counter increments per second (higher is better)", "calls / s", cats, bars, false)
}

// concurrentCalls makes total increments from n concurrent callers and
// returns each call's latency (µs) and the overall rate.
func concurrentCalls(ctx context.Context, s *counterSystem, n, total int) ([]float64, float64, error) {
	var mu sync.Mutex
	var lat []float64
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		calls := total / n
		if i < total%n {
			calls++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]float64, 0, calls)
			for j := 0; j < calls; j++ {
				t := time.Now()
				if _, err := s.incr(ctx); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					return
				}
				mine = append(mine, us(time.Since(t)))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if firstErr != nil {
		return nil, 0, firstErr
	}
	return lat, float64(total) / took.Seconds(), nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func httpCounter(hc *http.Client, url string) func(ctx context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
		}
		return strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func nodeVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "node", "--version").Output()
	if err != nil {
		return "not installed"
	}
	return strings.TrimSpace(string(out))
}

// peersReady says whether bench/run installed the npm packages.
func (e *Env) peersBin(name string) (string, error) {
	if why := os.Getenv("PRAAS_BENCH_PEERS_ERROR"); why != "" {
		return "", errors.New(why)
	}
	p := filepath.Join(e.Root, "bench", "peers", "node_modules", ".bin", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is not installed (bench/run installs it with npm into bench/peers)", name)
	}
	return p, nil
}

// spawn starts a helper process whose output goes to a log file in Tmp and
// registers its end at Close.
func (e *Env) spawn(name string, cmd *exec.Cmd) (string, error) {
	logPath := filepath.Join(e.Tmp, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return "", err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	e.onClose(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	return logPath, nil
}

// waitFor polls f every 50 ms until it succeeds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func logTail(path string) string {
	b, _ := os.ReadFile(path)
	return lastLines(string(b), 5)
}

// startRestate runs restate-server and the counter service, registers the
// service and returns the ingress URL.
func (e *Env) startRestate(ctx context.Context) (string, error) {
	bin, err := e.peersBin("restate-server")
	if err != nil {
		return "", err
	}
	var ports [4]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return "", err
		}
	}
	ingress := fmt.Sprintf("127.0.0.1:%d", ports[0])
	admin := fmt.Sprintf("127.0.0.1:%d", ports[1])
	cmd := exec.Command(bin, "--base-dir", filepath.Join(e.Tmp, "restate"), "--no-logo", "--node-name", "bench")
	cmd.Env = append(os.Environ(),
		"RESTATE_INGRESS__BIND_ADDRESS="+ingress,
		"RESTATE_ADMIN__BIND_ADDRESS="+admin,
		fmt.Sprintf("RESTATE_BIND_ADDRESS=127.0.0.1:%d", ports[2]),
		"RESTATE_LISTEN_MODE=tcp",
		"RESTATE_DISABLE_TELEMETRY=true",
		"RESTATE_LOG_FILTER=warn",
		"RESTATE_LOG_DISABLE_ANSI_CODES=true")
	serverLog, err := e.spawn("restate-server", cmd)
	if err != nil {
		return "", fmt.Errorf("start restate-server: %w", err)
	}
	svc := exec.Command("node", filepath.Join(e.Root, "bench", "peers", "restate", "counter.mjs"), strconv.Itoa(ports[3]))
	svc.Dir = filepath.Join(e.Root, "bench", "peers")
	svcLog, err := e.spawn("restate-counter", svc)
	if err != nil {
		return "", fmt.Errorf("start the Restate service: %w", err)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	if err := waitFor(ctx, 60*time.Second, func() error {
		resp, err := hc.Get("http://" + admin + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}); err != nil {
		return "", fmt.Errorf("restate-server did not come up: %w: %s", err, logTail(serverLog))
	}
	body := fmt.Sprintf(`{"uri": "http://127.0.0.1:%d"}`, ports[3])
	if err := waitFor(ctx, 30*time.Second, func() error {
		resp, err := hc.Post("http://"+admin+"/deployments", "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		return nil
	}); err != nil {
		return "", fmt.Errorf("register the Restate service: %w: %s", err, logTail(svcLog))
	}
	url := "http://" + ingress
	incr := httpCounter(hc, url+"/counter/probe/add")
	if err := waitFor(ctx, 30*time.Second, func() error { _, err := incr(ctx); return err }); err != nil {
		return "", fmt.Errorf("Restate ingress: %w", err)
	}
	return url, nil
}

// startWorkerd runs workerd with the Durable Object counter and returns its URL.
func (e *Env) startWorkerd(ctx context.Context) (string, error) {
	bin, err := e.peersBin("workerd")
	if err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	storage := filepath.Join(e.Tmp, "workerd-storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return "", err
	}
	dir := filepath.Join(e.Root, "bench", "peers", "workerd")
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.capnp"),
		fmt.Sprintf("--socket-addr=http=127.0.0.1:%d", port), "--directory-path=storage="+storage)
	cmd.Dir = dir
	logPath, err := e.spawn("workerd", cmd)
	if err != nil {
		return "", fmt.Errorf("start workerd: %w", err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	incr := httpCounter(hc, url+"/probe")
	if err := waitFor(ctx, 30*time.Second, func() error { _, err := incr(ctx); return err }); err != nil {
		return "", fmt.Errorf("workerd did not come up: %w: %s", err, logTail(logPath))
	}
	return url, nil
}
