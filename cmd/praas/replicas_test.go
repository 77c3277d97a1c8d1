package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/testenv"
	"github.com/praas-dev/praas/store/storeurl"
)

// The replica tests run several control planes as real OS processes that
// share one Redis metadata store, one S3 swap store and one run directory
// (where the local backend records what runs on this host), as replicas on
// one host do. Leases and heartbeat timeouts are short so that takeovers
// happen within seconds.

const (
	replicaLeaseTTL         = 2 * time.Second
	replicaHeartbeatTimeout = 2 * time.Second
)

// replicaSet starts control-plane replicas over shared stores.
type replicaSet struct {
	t        *testing.T
	metadata string // Redis URL with this test's key prefix
	swap     string // S3 URL with this test's object prefix
	runDir   string
	extra    []string
	data     map[string]string // replica id → its --data directory
	// signingKey is the --signing-key file every replica shares.
	signingKey string
}

// newReplicaSet prepares replicas on the test servers, under a key and
// object prefix of their own; extra flags go to every replica.
func newReplicaSet(t *testing.T, extra ...string) *replicaSet {
	t.Helper()
	redisURL, s3URL := testenv.Redis(t), testenv.S3(t)
	prefix := uniqueName("t")
	return &replicaSet{
		t:        t,
		metadata: withQuery(redisURL, "prefix="+prefix+":"),
		swap:     withQuery(s3URL, "prefix="+prefix+"/"),
		runDir:   t.TempDir(),
		extra:    extra,
		data:     make(map[string]string),

		signingKey: filepath.Join(t.TempDir(), "signing.key"),
	}
}

// start runs replica id. A replica started again with an id it had gets its
// data directory back, as a restarted one would.
func (rs *replicaSet) start(id string) *controlPlane {
	rs.t.Helper()
	data, ok := rs.data[id]
	if !ok {
		data = rs.t.TempDir()
		rs.data[id] = data
	}
	args := []string{"--replica-id", id, "--metadata", rs.metadata, "--swap", rs.swap, "--run-dir", rs.runDir,
		"--lease-ttl", replicaLeaseTTL.String(), "--heartbeat-timeout", replicaHeartbeatTimeout.String(),
		"--signing-key", rs.signingKey}
	return startControlPlane(rs.t, data, append(args, rs.extra...)...)
}

// processLog is the raw output file of app/pid's processes started by replica id.
func (rs *replicaSet) processLog(id, app, pid string) string {
	return filepath.Join(rs.data[id], "logs", app, pid+".out")
}

func uniqueName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// clientOf returns a client of one replica.
func clientOf(t *testing.T, cp *controlPlane) *client.Client {
	c := client.New(cp.endpoint, client.WithToken(token()))
	t.Cleanup(func() { c.Close() })
	return c
}

// praasAt runs the CLI against the replica at endpoint.
func praasAt(t *testing.T, endpoint string, args ...string) string {
	t.Helper()
	t.Setenv(EnvEndpoint, endpoint)
	return mustPraas(t, "", args...)
}

// invokeVia invokes function through the replica c talks to (never
// straight over the data plane) and fails the test on error.
func invokeVia(t *testing.T, c *client.Client, app, pid, function, input string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := c.InvokeControlPlane(ctx, app, pid, function, []byte(input))
	if err != nil {
		t.Fatalf("invoke %s/%s %s %q: %v", app, pid, function, input, err)
	}
	return string(res.Output)
}

func expectVia(t *testing.T, c *client.Client, want, app, pid, function, input string) {
	t.Helper()
	if got := invokeVia(t, c, app, pid, function, input); got != want {
		t.Fatalf("invoke %s/%s %s %q = %q, want %q", app, pid, function, input, got, want)
	}
}

func getProcess(t *testing.T, c *client.Client, app, pid string) client.Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := c.GetProcess(ctx, app, pid)
	if err != nil {
		t.Fatalf("get %s/%s: %v", app, pid, err)
	}
	return p
}

// snapshotGeneration is the generation that wrote the snapshot a record names.
func snapshotGeneration(p client.Process) uint64 {
	gen, _, _ := cpapi.ParseSnapshotKey(p.App, p.PID, p.Snapshot)
	return gen
}

// osProc is an OS process, told apart from a later one with its pid by its
// start time (a local backend handle is "PID@STARTTIME").
type osProc struct {
	pid   int
	start uint64
}

func osProcOf(t *testing.T, handle string) osProc {
	t.Helper()
	pid, err := osPID(handle)
	if err != nil {
		t.Fatal(err)
	}
	_, st, _ := strings.Cut(handle, "@")
	start, err := strconv.ParseUint(st, 10, 64)
	if err != nil {
		t.Fatalf("handle %q: %v", handle, err)
	}
	return osProc{pid, start}
}

// procStatOf returns the state and start time in /proc/PID/stat.
func procStatOf(pid int) (state byte, start uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')') // the command name may hold anything
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3, the state; f[19] the start time
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, false
	}
	start, err = strconv.ParseUint(string(f[19]), 10, 64)
	return f[0][0], start, err == nil
}

// alive reports whether p runs: it exists and is not a zombie (a process
// whose control plane died is nobody's child, and may stay a zombie).
func (p osProc) alive() bool {
	state, start, ok := procStatOf(p.pid)
	return ok && start == p.start && state != 'Z' && state != 'X'
}

// signal sends sig to p if it still runs.
func (p osProc) signal(sig syscall.Signal) {
	if p.alive() {
		_ = syscall.Kill(p.pid, sig)
	}
}

// environ returns p's environment.
func (p osProc) environ(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	env := make(map[string]string)
	for _, kv := range bytes.Split(b, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	return env
}

// servingProcess is an OS process that runs a praas process.
type servingProcess struct {
	OSPID      int
	Generation string
	State      string
}

// processesServing scans /proc for the live OS processes (zombies left
// out) whose environment names app/pid.
func processesServing(app, pid string) ([]servingProcess, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	wantApp, wantPID := []byte(cpapi.EnvApp+"="+app), []byte(cpapi.EnvPID+"="+pid)
	genPrefix := []byte(cpapi.EnvGeneration + "=")
	var out []servingProcess
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue // ended meanwhile
		}
		vars := bytes.Split(env, []byte{0})
		if !slices.ContainsFunc(vars, func(v []byte) bool { return bytes.Equal(v, wantApp) }) ||
			!slices.ContainsFunc(vars, func(v []byte) bool { return bytes.Equal(v, wantPID) }) {
			continue
		}
		state, _, ok := procStatOf(n)
		if !ok || state == 'Z' || state == 'X' {
			continue
		}
		sp := servingProcess{OSPID: n, State: string(state)}
		for _, v := range vars {
			if g, ok := bytes.CutPrefix(v, genPrefix); ok {
				sp.Generation = string(g)
			}
		}
		out = append(out, sp)
	}
	return out, nil
}

// processSummary is what every replica must agree on about a process.
type processSummary struct {
	PID, Status, Owner, Address, Snapshot string
	Generation                            uint64
}

func summarize(procs []client.Process) []processSummary {
	out := make([]processSummary, 0, len(procs))
	for _, p := range procs {
		out = append(out, processSummary{PID: p.PID, Status: p.Status, Owner: p.Owner,
			Address: p.Address, Snapshot: p.Snapshot, Generation: p.Generation})
	}
	slices.SortFunc(out, func(a, b processSummary) int { return strings.Compare(a.PID, b.PID) })
	return out
}

// Three replicas serve one application as one: invocations, messages and
// swaps work through any of them, the owner does the swaps, and a replica
// restart loses nothing.
func TestReplicasShareProcesses(t *testing.T) {
	rs := newReplicaSet(t)
	cps := []*controlPlane{rs.start("r1"), rs.start("r2"), rs.start("r3")}
	cs := []*client.Client{clientOf(t, cps[0]), clientOf(t, cps[1]), clientOf(t, cps[2])}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	app := uniqueName("share")
	if _, err := cs[0].CreateApp(ctx, app, ""); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []string{"p1", "p2"} {
		p, err := cs[0].CreateProcess(ctx, app, pid)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != "active" || p.Owner != "r1" || p.Generation != 1 {
			t.Fatalf("created %s: status %s owner %q generation %d; want active, r1, 1", pid, p.Status, p.Owner, p.Generation)
		}
	}

	// r2 and r3 do not own p1: they invoke it on its data plane, and the
	// state is one.
	counter := 0
	for _, k := range []int{1, 2, 1, 2} {
		counter++
		expectVia(t, cs[k], strconv.Itoa(counter), app, "p1", "counter", "")
	}
	if p := getProcess(t, cs[2], app, "p1"); p.Owner != "r1" || p.Generation != 1 {
		t.Fatalf("after invocations through r2 and r3, p1 has owner %q generation %d; want r1, 1", p.Owner, p.Generation)
	}

	// Messages through r3: one from outside, one from p2 (owned by r1).
	if err := cs[2].SendMessage(ctx, app, "p1", "greet", []byte("hello via r3")); err != nil {
		t.Fatal(err)
	}
	expectVia(t, cs[2], "", app, "p2", "send", "p1 peer hi from p2")
	expectVia(t, cs[1], "hello via r3", app, "p1", "recv", "@any greet 2000")
	expectVia(t, cs[2], "hi from p2", app, "p1", "recv", "p2 peer 2000")

	// A swap through r2 is forwarded to r1, the owner; r3 swaps p1 back in
	// as generation 2, its owner now.
	if p, err := cs[1].SwapProcess(ctx, app, "p1"); err != nil || p.Status != "swapped" || p.Owner != "" || snapshotGeneration(p) != 1 {
		t.Fatalf("swap through r2: %+v %v; want swapped, no owner, a snapshot of generation 1", p, err)
	}
	counter++
	expectVia(t, cs[2], strconv.Itoa(counter), app, "p1", "counter", "")
	if p := getProcess(t, cs[0], app, "p1"); p.Status != "active" || p.Owner != "r3" || p.Generation != 2 {
		t.Fatalf("after the swap-in through r3, p1 is %s owner %q generation %d; want active, r3, 2", p.Status, p.Owner, p.Generation)
	}

	// Swapped out through r1 (forwarded to r3): a message through r2 waits
	// in the backup queue and brings p1 back, generation 3.
	if p, err := cs[0].SwapProcess(ctx, app, "p1"); err != nil || p.Status != "swapped" {
		t.Fatalf("swap through r1: %+v %v", p, err)
	}
	if err := cs[1].SendMessage(ctx, app, "p1", "queued", []byte("while swapped")); err != nil {
		t.Fatal(err)
	}
	expectVia(t, cs[0], "while swapped", app, "p1", "recv", "@any queued 5000")
	counter++
	expectVia(t, cs[0], strconv.Itoa(counter), app, "p1", "counter", "")
	if p := getProcess(t, cs[1], app, "p1"); p.Status != "active" || p.Generation != 3 {
		t.Fatalf("after the message swap-in, p1 is %s generation %d; want active, 3", p.Status, p.Generation)
	}

	// r1 restarts: SIGTERM swaps out what it owns (p2, maybe p1), and it
	// comes back with the same id and data directory.
	cps[0].terminate(t)
	if st := cps[0].cmd.ProcessState; st == nil || !st.Success() {
		t.Fatalf("r1 did not exit cleanly: %v", st)
	}
	cps[0] = rs.start("r1")
	cs[0] = clientOf(t, cps[0])
	counter++
	expectVia(t, cs[0], strconv.Itoa(counter), app, "p1", "counter", "")
	expectVia(t, cs[0], "back", app, "p2", "echo", "back")
	expectVia(t, cs[2], "", app, "p2", "send", "p1 after restart")
	expectVia(t, cs[1], "restart", app, "p1", "recv", "p2 after 2000")

	// Every replica lists the same processes, pids, statuses, owners and
	// generations, as `praas process list` shows them.
	var want []processSummary
	for i, cp := range cps {
		var procs []client.Process
		if err := json.Unmarshal([]byte(praasAt(t, cp.endpoint, "process", "list", app, "--json")), &procs); err != nil {
			t.Fatal(err)
		}
		got := summarize(procs)
		if i == 0 {
			want = got
			continue
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("r%d lists other processes than r1 (-r1 +r%d):\n%s", i+1, i+1, diff)
		}
	}
	if len(want) != 2 || want[0].PID != "p1" || want[1].PID != "p2" {
		t.Fatalf("listed %+v, want p1 and p2", want)
	}
	for _, p := range want {
		if p.Status != "active" || p.Owner == "" || p.Address == "" {
			t.Fatalf("listed %+v, want active with an owner and an address", p)
		}
	}
	if want[0].Generation < 3 || want[1].Generation != 2 {
		t.Fatalf("generations p1 %d p2 %d; want p1 at least 3 and p2 2 (created, swapped out by the restart, back)", want[0].Generation, want[1].Generation)
	}
	t.Logf("after the restart: %+v", want)
}

// Every replica invokes a swapped-out process at once, round after round:
// exactly one replica starts it, so exactly one OS process serves the pid,
// each invocation runs once on the one copy of the state, and the state is
// the last snapshot's plus every increment.
func TestConcurrentActivationRace(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	rs := newReplicaSet(t)
	cps := []*controlPlane{rs.start("r1"), rs.start("r2"), rs.start("r3")}
	cs := make([]*client.Client, len(cps))
	for i, cp := range cps {
		cs[i] = clientOf(t, cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	app := uniqueName("race")
	if _, err := cs[0].CreateApp(ctx, app, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := cs[0].CreateProcess(ctx, app, "p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs[0].SwapProcess(ctx, app, "p1"); err != nil {
		t.Fatal(err)
	}
	gen := getProcess(t, cs[0], app, "p1").Generation
	total, scans := 0, 0
	owners := make(map[string]int)
	start := time.Now()
	for round := range rounds {
		outs := make([]string, len(cs))
		failures := make([]error, len(cs))
		// While the replicas race, no second OS process may appear, not
		// even for a moment.
		type sample struct {
			most  []servingProcess
			scans int
			err   error
		}
		done := make(chan struct{})
		sampled := make(chan sample, 1)
		go func() {
			var s sample
			for {
				procs, err := processesServing(app, "p1")
				if err != nil {
					s.err = err
				}
				if len(procs) > len(s.most) {
					s.most = procs
				}
				s.scans++
				select {
				case <-done:
					sampled <- s
					return
				default:
				}
			}
		}()
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				res, err := c.InvokeControlPlane(ctx, app, "p1", "counter", nil)
				outs[i], failures[i] = string(res.Output), err
			})
		}
		wg.Wait()
		close(done)
		during := <-sampled
		scans += during.scans
		for i, err := range failures {
			if err != nil {
				t.Fatalf("round %d: counter through r%d: %v", round, i+1, err)
			}
		}
		procs, err := processesServing(app, "p1")
		if err != nil {
			t.Fatal(err)
		}
		if len(procs) != 1 {
			t.Fatalf("round %d: %d OS processes serve p1, want 1: %+v", round, len(procs), procs)
		}
		if during.err != nil {
			t.Fatal(during.err)
		}
		if len(during.most) > 1 {
			t.Fatalf("round %d: %d OS processes served p1 at once during the activation: %+v", round, len(during.most), during.most)
		}
		// One copy of the state: the invocations saw total+1 ... total+n.
		vals := make([]int, len(outs))
		for i, out := range outs {
			n, err := strconv.Atoi(out)
			if err != nil {
				t.Fatalf("round %d: counter returned %q", round, out)
			}
			vals[i] = n
		}
		slices.Sort(vals)
		for i, v := range vals {
			if v != total+1+i {
				t.Fatalf("round %d: counters %v after %d increments; want %d to %d", round, vals, total, total+1, total+len(vals))
			}
		}
		total += len(vals)
		expectVia(t, cs[round%len(cs)], strconv.Itoa(total), app, "p1", "state-get", "counter")
		p := getProcess(t, cs[round%len(cs)], app, "p1")
		if p.Status != "active" || p.Generation != gen+1 {
			t.Fatalf("round %d: p1 is %s generation %d, want active generation %d: one activation", round, p.Status, p.Generation, gen+1)
		}
		gen = p.Generation
		owners[p.Owner]++
		// Swapped out through the next replica (forwarded to the owner
		// unless that is the owner).
		swapCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		sp, err := cs[(round+1)%len(cs)].SwapProcess(swapCtx, app, "p1")
		cancel()
		if err != nil || sp.Status != "swapped" {
			t.Fatalf("round %d: swap: %+v %v", round, sp, err)
		}
	}
	took := time.Since(start)
	t.Logf("%d rounds of %d concurrent activations in %s (%s a round); activations won by %v; /proc scanned %d times during activations",
		rounds, len(cs), took.Round(time.Millisecond), (took / time.Duration(rounds)).Round(time.Millisecond), owners, scans)
}

// replicaLoad invokes counter and sends a message, one after the other,
// through one replica to one process, and keeps what was acknowledged.
type replicaLoad struct {
	pid     string
	rounds  atomic.Int64
	values  []int   // counter results, in order
	failed  []error // invocations that failed: each may or may not have run
	acked   []int   // message sequence numbers acknowledged
	unacked []int   // messages whose send failed: each may or may not arrive
	sendErr []error
}

func (l *replicaLoad) run(c *client.Client, app string, stop <-chan struct{}) {
	for seq := 1; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := c.InvokeControlPlane(ctx, app, l.pid, "counter", nil)
		if err != nil {
			l.failed = append(l.failed, err)
		} else if n, err := strconv.Atoi(string(res.Output)); err != nil {
			l.failed = append(l.failed, fmt.Errorf("counter returned %q", res.Output))
		} else {
			l.values = append(l.values, n)
		}
		if err := c.SendMessage(ctx, app, l.pid, "m", []byte(strconv.Itoa(seq))); err != nil {
			l.unacked = append(l.unacked, seq)
			l.sendErr = append(l.sendErr, err)
		} else {
			l.acked = append(l.acked, seq)
		}
		cancel()
		l.rounds.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
}

// A replica killed with SIGKILL loses nothing: the other replica takes its
// busy processes over once its lease expired, adopting them as they run,
// and every acknowledged increment and message is there. The processes
// learn of b from a's heartbeat replies; in the second case a dies right
// after b joined (a rolling deploy gone wrong), before they could.
func TestReplicaKilledTakeover(t *testing.T) {
	t.Run("after-heartbeats", func(t *testing.T) { testReplicaKilledTakeover(t, false) })
	t.Run("right-after-b-joined", func(t *testing.T) { testReplicaKilledTakeover(t, true) })
}

func testReplicaKilledTakeover(t *testing.T, killEarly bool) {
	rs := newReplicaSet(t)
	a := rs.start("a")
	var b *controlPlane
	if !killEarly {
		b = rs.start("b")
	}
	ca := clientOf(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	app := uniqueName("takeover")
	if _, err := ca.CreateApp(ctx, app, ""); err != nil {
		t.Fatal(err)
	}
	const n = 4
	before := make(map[string]client.Process)
	loads := make([]*replicaLoad, n)
	for i := range n {
		pid := "w" + strconv.Itoa(i)
		p, err := ca.CreateProcess(ctx, app, pid)
		if err != nil {
			t.Fatal(err)
		}
		if p.Owner != "a" {
			t.Fatalf("%s created through a is owned by %q", pid, p.Owner)
		}
		before[pid] = p
		loads[i] = &replicaLoad{pid: pid}
	}
	if killEarly {
		b = rs.start("b")
	}
	cb := clientOf(t, b)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, l := range loads {
		wg.Go(func() { l.run(cb, app, stop) })
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)
	progress := func(atLeast int64) func() bool {
		return func() bool {
			for _, l := range loads {
				if l.rounds.Load() < atLeast {
					return false
				}
			}
			return true
		}
	}
	loadStart := time.Now()
	waitFor(t, 30*time.Second, "load through b", func() bool {
		if killEarly {
			return progress(5)()
		}
		// A few heartbeats under a: the processes learn b's URL from a's replies.
		return progress(20)() && time.Since(loadStart) > 3*time.Second
	})

	killed := time.Now()
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	waitFor(t, replicaLeaseTTL+20*time.Second, "b owns every process", func() bool {
		procs, err := cb.ListProcesses(ctx, app)
		if err != nil || len(procs) != n {
			return false
		}
		for _, p := range procs {
			if p.Owner != "b" || p.Status != "active" {
				return false
			}
		}
		return true
	})
	takeover := time.Since(killed)
	var sofar int64
	for _, l := range loads {
		sofar = max(sofar, l.rounds.Load())
	}
	// Long enough for b to notice an adopted process that does not report.
	tookOver := time.Now()
	waitFor(t, 30*time.Second, "load after the takeover", func() bool {
		return progress(sofar+20)() && time.Since(tookOver) > 2*replicaHeartbeatTimeout
	})
	stopLoad()
	t.Logf("b took over %d busy processes %s after a was killed (lease TTL %s, heartbeat timeout %s)",
		n, takeover.Round(time.Millisecond), replicaLeaseTTL, replicaHeartbeatTimeout)
	if limit := replicaLeaseTTL + 4*time.Second; takeover > limit {
		t.Errorf("takeover took %s, want at most the lease TTL and a few heartbeats (%s)", takeover, limit)
	}

	for _, l := range loads {
		// Adopted as they ran: same OS process, same generation.
		p := getProcess(t, cb, app, l.pid)
		if was := before[l.pid]; p.Generation != was.Generation || p.Handle != was.Handle {
			t.Errorf("%s: generation %d handle %s, was %d %s: restarted rather than adopted", l.pid, p.Generation, p.Handle, was.Generation, was.Handle)
		}
		for i := 1; i < len(l.values); i++ {
			if l.values[i] <= l.values[i-1] {
				t.Errorf("%s: counter went from %d to %d at increment %d: acknowledged increments lost", l.pid, l.values[i-1], l.values[i], i+1)
				break
			}
		}
		// Invocations ran one after the other: the counter is the number
		// acknowledged, plus any of the failed ones that ran.
		counter, err := strconv.Atoi(invokeVia(t, cb, app, l.pid, "state-get", "counter"))
		if err != nil {
			t.Fatal(err)
		}
		if acked := len(l.values); counter < acked || counter > acked+len(l.failed) {
			t.Errorf("%s: counter %d after %d acknowledged and %d failed increments", l.pid, counter, acked, len(l.failed))
		}
		// Every acknowledged message arrives once, in order.
		var got []int
		for {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			res, err := cb.InvokeControlPlane(rctx, app, l.pid, "recv", []byte("@any m 300"))
			cancel()
			if errors.Is(err, errs.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatalf("%s: recv: %v", l.pid, err)
			}
			seq, err := strconv.Atoi(string(res.Output))
			if err != nil {
				t.Fatalf("%s: received %q", l.pid, res.Output)
			}
			got = append(got, seq)
		}
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("%s: messages arrived out of order or twice: %v", l.pid, got)
		}
		var lost, strange []int
		for _, seq := range l.acked {
			if !slices.Contains(got, seq) {
				lost = append(lost, seq)
			}
		}
		for _, seq := range got {
			if !slices.Contains(l.acked, seq) && !slices.Contains(l.unacked, seq) {
				strange = append(strange, seq)
			}
		}
		if len(lost) > 0 {
			t.Errorf("%s: %d acknowledged messages never arrived: %s", l.pid, len(lost), ranges(lost))
		}
		if len(strange) > 0 {
			t.Errorf("%s: received messages that were never sent: %s", l.pid, ranges(strange))
		}
		t.Logf("%s: %d increments (%d failed), %d messages received of %d acknowledged (%d failed)",
			l.pid, len(l.values), len(l.failed), len(got), len(l.acked), len(l.unacked))
		for i, err := range append(l.failed, l.sendErr...) {
			if i == 3 {
				break
			}
			t.Logf("%s: failed during the takeover: %v", l.pid, err)
		}
	}
}

// Nothing a process of an old generation reports is taken: a process
// presumed dead is ended by its owner, its generation's reports are
// refused with 410 and its snapshots deleted, and one that survived where
// no control plane could end it retires at its first report, its late
// checkpoint never restored.
func TestStaleGenerationRefused(t *testing.T) {
	rs := newReplicaSet(t, "--checkpoint-interval", "1s")
	a, b := rs.start("a"), rs.start("b")
	ca, cb := clientOf(t, a), clientOf(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	app := uniqueName("stale")
	if _, err := ca.CreateApp(ctx, app, ""); err != nil {
		t.Fatal(err)
	}
	swap, err := storeurl.OpenSwap(ctx, rs.swap, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer swap.Close()

	// p1, generation 1, owned by a, stops answering (SIGSTOP): a marks it
	// failed after the heartbeat timeout and ends it, so it never wakes up
	// to write anything.
	p1, err := ca.CreateProcess(ctx, app, "p1")
	if err != nil {
		t.Fatal(err)
	}
	expectVia(t, ca, "", app, "p1", "state-set", "k=gen1")
	waitFor(t, 10*time.Second, "p1 checkpoint", func() bool { return getProcess(t, ca, app, "p1").Snapshot != "" })
	old1 := osProcOf(t, p1.Handle)
	cred := old1.environ(t)[cpapi.EnvToken]
	if cred == "" {
		t.Fatalf("no %s in the environment of p1", cpapi.EnvToken)
	}
	if err := syscall.Kill(old1.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old1.signal(syscall.SIGKILL) })
	waitFor(t, replicaHeartbeatTimeout+10*time.Second, "silent p1 marked failed", func() bool {
		return getProcess(t, cb, app, "p1").Status == "failed"
	})
	waitFor(t, 10*time.Second, "silent p1 ended", func() bool { return !old1.alive() })
	old1.signal(syscall.SIGCONT)
	expectVia(t, cb, "gen1", app, "p1", "state-get", "k") // generation 2, restored
	cur := getProcess(t, cb, app, "p1")
	if cur.Generation != p1.Generation+1 || cur.Owner != "b" {
		t.Fatalf("p1 back as generation %d owner %q; want %d, b", cur.Generation, cur.Owner, p1.Generation+1)
	}

	// Reports in generation 1's name, with generation 1's own credential,
	// are refused with 410 by either replica, and the snapshot is deleted.
	lateKey := cpapi.SnapshotKey(app, "p1", p1.Generation, 99)
	if err := swap.Put(ctx, lateKey, strings.NewReader("late"), 4); err != nil {
		t.Fatal(err)
	}
	report := cpapi.Snapshot{App: app, PID: "p1", Generation: p1.Generation, Key: lateKey, Bytes: 4}
	if code := postInternal(t, a.endpoint, cpapi.PathSnapshot, "wrong", report); code != http.StatusUnauthorized {
		t.Fatalf("snapshot report with a wrong credential: %d, want 401", code)
	}
	for _, cp := range []*controlPlane{a, b} {
		if code := postInternal(t, cp.endpoint, cpapi.PathSnapshot, cred, report); code != http.StatusGone {
			t.Fatalf("snapshot report of generation %d at %s: %d, want 410", p1.Generation, cp.endpoint, code)
		}
		hb := cpapi.Heartbeat{App: app, PID: "p1", Generation: p1.Generation}
		if code := postInternal(t, cp.endpoint, cpapi.PathHeartbeat, cred, hb); code != http.StatusGone {
			t.Fatalf("heartbeat of generation %d at %s: %d, want 410", p1.Generation, cp.endpoint, code)
		}
		reg := cpapi.Register{App: app, PID: "p1", Generation: p1.Generation, Address: "127.0.0.1:1"}
		if code := postInternal(t, cp.endpoint, cpapi.PathRegister, cred, reg); code != http.StatusGone {
			t.Fatalf("registration of generation %d at %s: %d, want 410", p1.Generation, cp.endpoint, code)
		}
	}
	if r, err := swap.Get(ctx, lateKey); !errors.Is(err, errs.ErrNotFound) {
		if err == nil {
			r.Close()
		}
		t.Fatalf("the refused snapshot %s is still in the swap store (%v)", lateKey, err)
	}
	if p := getProcess(t, cb, app, "p1"); p.Snapshot != cur.Snapshot || p.Generation != cur.Generation || p.Address != cur.Address {
		t.Fatalf("refused reports changed the record: %+v, was %+v", p, cur)
	}
	expectVia(t, cb, "gen1", app, "p1", "state-get", "k")

	// p2, generation 1, owned by a, survives where no control plane can end
	// it, as across a partition: a dies, the backend's record of p2 is gone
	// (so b can neither adopt nor signal it) and p2 is frozen with a change
	// no checkpoint has covered yet (its next checkpoint is a second away).
	p2, err := ca.CreateProcess(ctx, app, "p2")
	if err != nil {
		t.Fatal(err)
	}
	old2 := osProcOf(t, p2.Handle)
	t.Cleanup(func() { old2.signal(syscall.SIGKILL) })
	expectVia(t, ca, "", app, "p2", "state-set", "k=v1")
	waitFor(t, 10*time.Second, "p2 checkpoint", func() bool { return getProcess(t, ca, app, "p2").Snapshot != "" })
	first := getProcess(t, ca, app, "p2").Snapshot
	expectVia(t, ca, "", app, "p2", "state-set", "k=v2")
	waitFor(t, 10*time.Second, "p2 second checkpoint", func() bool { return getProcess(t, ca, app, "p2").Snapshot != first })
	expectVia(t, ca, "", app, "p2", "state-set", "k=late")
	// a dies first: a process group with a stopped member that loses its
	// parent gets SIGHUP, which would end p2.
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	if err := os.Remove(filepath.Join(rs.runDir, p2.Handle+".json")); err != nil {
		t.Fatalf("remove the backend's record of p2: %v", err)
	}
	if err := syscall.Kill(old2.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	waitFor(t, replicaLeaseTTL+20*time.Second, "b takes p2 over as failed", func() bool {
		p := getProcess(t, cb, app, "p2")
		return p.Status == "failed" && p.Owner == ""
	})
	// Generation 2 restores the last reported checkpoint, without the late change.
	expectVia(t, cb, "v2", app, "p2", "state-get", "k")
	expectVia(t, cb, "", app, "p2", "state-set", "k=gen2")
	waitFor(t, 10*time.Second, "generation 2 checkpoint", func() bool {
		p := getProcess(t, cb, app, "p2")
		return p.Generation == p2.Generation+1 && snapshotGeneration(p) == p2.Generation+1
	})
	named := getProcess(t, cb, app, "p2")

	// Woken up, generation 1 writes its late checkpoint and reports, and
	// beats: refused, it retires.
	logPath := rs.processLog("a", app, "p2")
	logBefore, _ := os.ReadFile(logPath)
	if err := syscall.Kill(old2.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	woken := time.Now()
	waitFor(t, 30*time.Second, "stale p2 retired", func() bool { return !old2.alive() })
	t.Logf("stale p2 frozen for %s; retired %s after it woke up", woken.Sub(frozen).Round(time.Millisecond), time.Since(woken).Round(time.Millisecond))
	if p := getProcess(t, cb, app, "p2"); p.Snapshot != named.Snapshot || p.Generation != named.Generation || p.Owner != "b" {
		t.Fatalf("after the stale process woke up p2 is %+v; was %+v", p, named)
	}
	logAll, _ := os.ReadFile(logPath)
	woke := string(logAll[len(logBefore):])
	lateWrites := 0
	for line := range strings.Lines(woke) {
		if !strings.Contains(line, "snapshot written") {
			continue
		}
		_, key, _ := strings.Cut(line, "key=")
		key, _, _ = strings.Cut(key, " ")
		if gen, _, ok := cpapi.ParseSnapshotKey(app, "p2", key); !ok || gen != p2.Generation {
			t.Errorf("stale p2 wrote snapshot %q", key)
			continue
		}
		lateWrites++
		// A late snapshot is deleted once refused; give the refusal a moment.
		waitFor(t, 10*time.Second, "late snapshot "+key+" deleted", func() bool {
			r, err := swap.Get(ctx, key)
			if err == nil {
				r.Close()
			}
			return errors.Is(err, errs.ErrNotFound)
		})
	}
	if !strings.Contains(woke, "retired by the control plane") {
		t.Errorf("stale p2 exited without being retired; its log after waking up:\n%s", woke)
	}
	t.Logf("stale p2 wrote %d late snapshot(s) after it woke up, all refused", lateWrites)

	// Generation 2 crashes: it comes back from its own checkpoint, never
	// from anything generation 1 wrote.
	if err := syscall.Kill(osProcOf(t, named.Handle).pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, replicaHeartbeatTimeout+10*time.Second, "p2 generation 2 marked failed", func() bool {
		return getProcess(t, cb, app, "p2").Status == "failed"
	})
	expectVia(t, cb, "gen2", app, "p2", "state-get", "k")
	if p := getProcess(t, cb, app, "p2"); p.Generation != named.Generation+1 {
		t.Fatalf("p2 back as generation %d, want %d", p.Generation, named.Generation+1)
	}
}

// ranges writes sorted numbers as "1-5 7 9-10".
func ranges(ns []int) string {
	var b strings.Builder
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", ns[i], ns[j])
		} else {
			fmt.Fprintf(&b, "%d", ns[i])
		}
		i = j + 1
	}
	return b.String()
}

// postInternal posts body to the internal API of the replica at endpoint
// with the process credential cred and returns the status code.
func postInternal(t *testing.T, endpoint, path, cred string, body any) int {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+cred)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
