package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/cpapi"
)

// The fault-injection suite. Under a steady load of messages (each carrying
// its source, key and a sequence number per (source, key)) and counter
// increments, it kills -9, at random seeded points: the control plane
// (restarted on the same address), a process, and the receiver or the
// control plane while the receiver is swapped in with a backup queue to
// deliver. Then a checker proves:
//
//   - every message the receiver recorded was sent, is recorded once, and
//     in order per (source, key);
//   - every acknowledged message is recorded, unless the receiver was
//     killed after it was sent and before a snapshot that holds it was
//     recorded (a crash loses what was acknowledged since the last
//     snapshot; see protected);
//   - the counter holds at least every acknowledged increment that a
//     recorded snapshot holds from every later kill, and no more than were
//     attempted.
//
// PRAAS_FAULT_SEED replays a run; -short runs fewer rounds. With
// PRAAS_TEST_REDIS and PRAAS_TEST_S3 set it runs against Redis and S3, else
// the embedded stores.
func TestFaultInjection(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PRAAS_FAULT_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("PRAAS_FAULT_SEED: %v", err)
		}
	}
	t.Logf("seed %d (PRAAS_FAULT_SEED replays it)", seed)
	rounds := 20
	if testing.Short() {
		rounds = 8
	}
	setup := "embedded"
	if os.Getenv("PRAAS_TEST_REDIS") != "" && os.Getenv("PRAAS_TEST_S3") != "" {
		setup = "redis+s3"
	}
	t.Logf("stores: %s", setup)
	f := newFaults(t, seed, setup)
	f.run(rounds)
	f.check()
	if t.Failed() {
		for i, cp := range f.cps {
			t.Logf("control plane %d:\n%s", i, cp.stderr)
		}
	}
}

const faultApp = "faults"

// Processes: R receives messages and records them (its "drain" function),
// S sends to R from inside the app, C counts.
const (
	pidR = "r"
	pidS = "s"
	pidC = "c"
)

type faults struct {
	t     *testing.T
	rng   *rand.Rand
	data  string
	flags []string
	cp    *controlPlane
	cps   []*controlPlane // every start, for their logs
	start time.Time

	mu     sync.Mutex
	sends  map[string][]sendAttempt // by "source key"
	incs   []callAttempt            // counter increments
	kills  map[string][]time.Time   // by pid
	swaps  map[string][]time.Time   // completed swap-outs by pid, when each was asked for
	snaps  map[string][]snapSeen    // snapshots the records named, by pid, as polled
	counts map[string]int           // fault counts by kind
	bursts int                      // killDuringSwapIn calls, naming their senders
}

type sendAttempt struct {
	seq        int
	start, end time.Time
	acked      bool
}

// snapSeen is a snapshot a process record named when polled at time at.
type snapSeen struct {
	at       time.Time
	gen, seq uint64
}

type callAttempt struct {
	start, end time.Time
	acked      bool
}

func newFaults(t *testing.T, seed uint64, setup string) *faults {
	addr := freeAddr(t)
	f := &faults{t: t, rng: rand.New(rand.NewPCG(seed, seed>>1|1)), data: t.TempDir(),
		sends: make(map[string][]sendAttempt), kills: make(map[string][]time.Time),
		swaps: make(map[string][]time.Time), snaps: make(map[string][]snapSeen), counts: make(map[string]int)}
	f.flags = append(storeFlags(t, setup), "--listen", addr, "--isolation", "none",
		"--checkpoint-interval", "100ms", "--heartbeat-timeout", "3s", "--log-level", "info")
	f.cp = startControlPlane(t, f.data, f.flags...)
	f.cps = append(f.cps, f.cp)
	image := buildFaultImage(t)
	ctx := context.Background()
	c := testClient()
	if _, err := c.CreateApp(ctx, faultApp, image); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []string{pidR, pidS, pidC} {
		if _, err := c.CreateProcess(ctx, faultApp, pid); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func buildFaultImage(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "testimage")
	build := exec.Command("go", "build", "-o", bin, "./e2e/testdata/testimage")
	build.Dir = "../.." // the module root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the test image: %v\n%s", err, out)
	}
	return bin
}

// callCtx bounds one call of the load: a call may wait for a restart.
func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 20*time.Second)
}

// load runs the senders, the counter and the drainer until ctx ends.
func (f *faults) load(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	c := testClient()
	for _, src := range []string{"a", "b"} {
		for k := range 2 {
			key := "k" + strconv.Itoa(k)
			wg.Go(func() { f.restSender(ctx, c, src, key) })
		}
	}
	wg.Go(func() { f.processSender(ctx, c) })
	wg.Go(func() {
		for ctx.Err() == nil {
			cctx, cancel := callCtx()
			a := callAttempt{start: time.Now()}
			_, err := c.Invoke(cctx, faultApp, pidC, "counter", nil)
			cancel()
			a.end, a.acked = time.Now(), err == nil
			f.mu.Lock()
			f.incs = append(f.incs, a)
			f.mu.Unlock()
		}
	})
	wg.Go(func() { f.pollSnapshots(ctx, c) })
	wg.Go(func() {
		for ctx.Err() == nil {
			for _, key := range []string{"k0", "k1", "ks"} {
				cctx, cancel := callCtx()
				_, _ = c.Invoke(cctx, faultApp, pidR, "drain", []byte(key))
				cancel()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return &wg
}

func (f *faults) record(src, key string, a sendAttempt) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends[src+" "+key] = append(f.sends[src+" "+key], a)
}

// restSender sends to R through the REST API: directly when R is active,
// into its backup queue when not.
func (f *faults) restSender(ctx context.Context, c *client.Client, src, key string) {
	for seq := 1; ctx.Err() == nil; seq++ {
		a := sendAttempt{seq: seq, start: time.Now()}
		cctx, cancel := callCtx()
		err := c.SendMessage(cctx, faultApp, pidR, key, []byte(fmt.Sprintf("%s %s %d", src, key, seq)))
		cancel()
		a.end, a.acked = time.Now(), err == nil
		f.record(src, key, a)
	}
}

// processSender has S send to R (process to process, or through the
// control plane's queue when R is not active).
func (f *faults) processSender(ctx context.Context, c *client.Client) {
	for seq := 1; ctx.Err() == nil; seq++ {
		a := sendAttempt{seq: seq, start: time.Now()}
		cctx, cancel := callCtx()
		_, err := c.Invoke(cctx, faultApp, pidS, "send", []byte(fmt.Sprintf("%s ks s ks %d", pidR, seq)))
		cancel()
		a.end, a.acked = time.Now(), err == nil
		f.record("s", "ks", a)
	}
}

// run injects rounds faults under load, then lets the load stop.
func (f *faults) run(rounds int) {
	t := f.t
	// Warm up: every process active.
	for _, pid := range []string{pidR, pidS, pidC} {
		f.mustInvoke(pid, "echo", "up")
	}
	f.start = time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	wg := f.load(ctx)
	for round := range rounds {
		time.Sleep(time.Duration(100+f.rng.IntN(400)) * time.Millisecond)
		switch kind := f.rng.IntN(5); kind {
		case 0:
			f.killControlPlane()
		case 1:
			f.killProcess(round)
		case 2:
			f.killDuringSwapIn(false)
		case 3:
			f.killDuringSwapIn(true)
		case 4:
			f.swapOut([]string{pidR, pidC}[f.rng.IntN(2)])
		}
	}
	cancel()
	wg.Wait()
	t.Logf("%d rounds in %s: %v", rounds, time.Since(f.start).Round(time.Millisecond), f.counts)
}

func (f *faults) mustInvoke(pid, function, input string) string {
	f.t.Helper()
	var out []byte
	var err error
	for range 5 { // a process may be coming back from a kill
		cctx, cancel := callCtx()
		out, err = testClient().Invoke(cctx, faultApp, pid, function, []byte(input))
		cancel()
		if err == nil {
			return string(out)
		}
	}
	f.t.Fatalf("invoke %s %s: %v\n%s", pid, function, err, f.cp.stderr)
	return ""
}

func (f *faults) note(kind, pid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[kind]++
	if pid != "" {
		f.kills[pid] = append(f.kills[pid], time.Now())
	}
}

// killControlPlane kills -9 the control plane and starts it again on the
// same address and data; its processes keep running and are adopted.
func (f *faults) killControlPlane() {
	if err := f.cp.cmd.Process.Kill(); err != nil {
		f.t.Fatal(err)
	}
	<-f.cp.exited
	f.note("control plane", "")
	time.Sleep(time.Duration(f.rng.IntN(300)) * time.Millisecond)
	f.cp = startControlPlane(f.t, f.data, f.flags...)
	f.cps = append(f.cps, f.cp)
}

// killProcess kills -9 a process the record says is active.
func (f *faults) killProcess(round int) {
	pid := []string{pidR, pidS, pidC}[round%3]
	p, err := testClient().GetProcess(context.Background(), faultApp, pid)
	if err != nil || p.Status != "active" {
		f.note("process not active to kill", "")
		return
	}
	osPid, err := osPID(p.Handle)
	if err != nil {
		f.t.Fatal(err)
	}
	f.note("process "+pid, pid)
	_ = syscall.Kill(osPid, syscall.SIGKILL)
}

// killDuringSwapIn swaps R out, sends it a burst (its backup queue, whose
// first message starts the swap-in), and kills the new R (or, with
// controlPlane, the control plane, which is started again) a random moment
// after it started: before it registered, while its queue is delivered, or
// just after. A control plane killed between a window's acknowledgement
// and its trim delivers that window again; R must drop it.
func (f *faults) killDuringSwapIn(controlPlane bool) {
	gen := f.lastGeneration(pidR)
	if !f.swapOut(pidR) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	c := testClient()
	f.mu.Lock()
	f.bursts++
	burst := f.bursts
	f.mu.Unlock()
	for i := range 8 {
		wg.Go(func() { f.restSender(ctx, c, fmt.Sprintf("burst%d.%d", burst, i), "k0") })
	}
	delay := time.Duration(f.rng.IntN(100)) * time.Millisecond
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r, ok := f.runRecord(pidR, gen); ok {
			time.Sleep(delay)
			if controlPlane {
				f.note("control plane during swap-in", "")
				f.killControlPlane()
				break
			}
			f.note("receiver during swap-in", pidR)
			_ = syscall.Kill(r.OSPID, syscall.SIGKILL)
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the burst goes on into the next start
	cancel()
	wg.Wait()
}

// swapOut swaps pid out gracefully: what was acknowledged before is in its
// snapshot. It reports whether the swap completed.
func (f *faults) swapOut(pid string) bool {
	asked := time.Now()
	ctx, cancel := callCtx()
	defer cancel()
	if _, err := testClient().SwapProcess(ctx, faultApp, pid); err != nil {
		// Not active (coming back from a kill): nothing to swap. A swap
		// that fails otherwise must lose nothing either: it is no kill.
		f.note("swap of "+pid+" failed", "")
		f.t.Logf("swap of %s at %s: %v", pid, time.Since(f.start).Round(time.Millisecond), err)
		return false
	}
	f.mu.Lock()
	f.swaps[pid] = append(f.swaps[pid], asked)
	f.counts["swap "+pid]++
	f.mu.Unlock()
	return true
}

type runRecord struct {
	App        string `json:"app"`
	PID        string `json:"pid"`
	Generation uint64 `json:"generation"`
	OSPID      int    `json:"os_pid"`
}

// runRecord finds the local backend's record of a generation of pid newer
// than after.
func (f *faults) runRecord(pid string, after uint64) (runRecord, bool) {
	files, _ := filepath.Glob(filepath.Join(f.data, "run", "*.json"))
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		var r runRecord
		if json.Unmarshal(raw, &r) == nil && r.App == faultApp && r.PID == pid && r.Generation > after && r.OSPID > 1 {
			return r, true
		}
	}
	return runRecord{}, false
}

func (f *faults) lastGeneration(pid string) uint64 {
	var gen uint64
	files, _ := filepath.Glob(filepath.Join(f.data, "run", "*.json"))
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		var r runRecord
		if json.Unmarshal(raw, &r) == nil && r.App == faultApp && r.PID == pid {
			gen = max(gen, r.Generation)
		}
	}
	return gen
}

// pollSnapshots notes which snapshot the records of R and C name, every
// few milliseconds, for protected.
func (f *faults) pollSnapshots(ctx context.Context, c *client.Client) {
	for ctx.Err() == nil {
		for _, pid := range []string{pidR, pidC} {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			p, err := c.GetProcess(cctx, faultApp, pid)
			cancel()
			if err != nil {
				continue
			}
			if gen, seq, ok := cpapi.ParseSnapshotKey(faultApp, pid, p.Snapshot); ok {
				f.mu.Lock()
				f.snaps[pid] = append(f.snaps[pid], snapSeen{at: time.Now(), gen: gen, seq: seq})
				f.mu.Unlock()
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// protected reports whether something acknowledged in [start, end] must
// have survived pid's kills: after every kill that followed start, a
// snapshot that holds it was recorded before the kill. That is so if a
// swap-out asked for after end completed before the kill, or if the record
// named snapshot GEN-SEQ at some time after end and GEN-(SEQ+2) or later
// before the kill: a process writes one snapshot after another, so
// SEQ+1 was reported after the first poll, and SEQ+2 taken after that.
func (f *faults) protected(pid string, start, end time.Time) bool {
	for _, k := range f.kills[pid] {
		if !k.After(start) {
			continue
		}
		if !f.savedBetween(pid, end, k) {
			return false
		}
	}
	return true
}

func (f *faults) savedBetween(pid string, after, before time.Time) bool {
	for _, s := range f.swaps[pid] {
		if s.After(after) && s.Before(before) {
			return true
		}
	}
	var first *snapSeen
	for i, s := range f.snaps[pid] {
		if !s.at.After(after) || !s.at.Before(before) {
			continue
		}
		if first == nil || first.gen != s.gen {
			first = &f.snaps[pid][i]
			continue
		}
		if s.seq >= first.seq+2 {
			return true
		}
	}
	return false
}

// check settles the processes, reads what R recorded and C counted, and
// holds them to the guarantees.
func (f *faults) check() {
	t := f.t
	// Bring R back with its queue delivered, record everything it holds,
	// and swap it out and in once more: the record is durable.
	for _, key := range []string{"k0", "k1", "ks"} {
		for f.mustInvoke(pidR, "drain", key) != "0" {
		}
	}
	f.swapOut(pidR)
	received := make(map[string][]int)
	for _, key := range []string{"k0", "k1", "ks"} {
		for line := range strings.SplitSeq(strings.TrimSuffix(f.mustInvoke(pidR, "get", "received/"+key), "\n"), "\n") {
			fs := strings.Fields(line)
			if len(fs) != 3 || fs[1] != key {
				t.Fatalf("R recorded %q under %s", line, key)
			}
			seq, err := strconv.Atoi(fs[2])
			if err != nil {
				t.Fatalf("R recorded %q under %s", line, key)
			}
			received[fs[0]+" "+fs[1]] = append(received[fs[0]+" "+fs[1]], seq)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var acked, got, lostAtRisk, unackedGot int
	for stream, attempts := range f.sends {
		seqs := received[stream]
		for i := 1; i < len(seqs); i++ {
			if seqs[i] == seqs[i-1] {
				t.Errorf("%s: message %d recorded twice", stream, seqs[i])
			} else if seqs[i] < seqs[i-1] {
				t.Errorf("%s: message %d recorded after %d", stream, seqs[i], seqs[i-1])
			}
		}
		have := make(map[int]bool, len(seqs))
		for _, s := range seqs {
			have[s] = true
		}
		for _, a := range attempts {
			switch {
			case a.acked && have[a.seq]:
				acked++
				got++
			case a.acked:
				acked++
				if f.protected(pidR, a.start, a.end) {
					t.Errorf("%s: message %d, acknowledged at %s, is lost; kills of R at %v, swaps at %v",
						stream, a.seq, a.end.Sub(f.start), since(f.start, f.kills[pidR]), since(f.start, f.swaps[pidR]))
				} else {
					lostAtRisk++
				}
			case have[a.seq]:
				unackedGot++
				got++
			}
		}
		for _, s := range seqs {
			if s < 1 || s > len(attempts) {
				t.Errorf("%s: message %d recorded, never sent", stream, s)
			}
		}
	}
	for stream := range received {
		if _, ok := f.sends[stream]; !ok {
			t.Errorf("%s: recorded, never sent", stream)
		}
	}
	t.Logf("messages: %d acknowledged, %d recorded (%d of them unacknowledged), %d lost to kills of R after their last snapshot",
		acked, got, unackedGot, lostAtRisk)

	// The counter.
	f.mu.Unlock()
	final, err := strconv.Atoi(f.mustInvoke(pidC, "get", "counter"))
	f.mu.Lock()
	if err != nil {
		t.Fatalf("counter: %v", err)
	}
	var lower, ackedIncs int
	for _, a := range f.incs {
		if a.acked {
			ackedIncs++
			if f.protected(pidC, a.start, a.end) {
				lower++
			}
		}
	}
	if final < lower || final > len(f.incs) {
		t.Errorf("counter %d, want between %d (acknowledged and protected by a swap-out from every later kill) and %d (attempted)",
			final, lower, len(f.incs))
	}
	t.Logf("counter: %d; %d increments acknowledged, %d of them protected, %d attempted", final, ackedIncs, lower, len(f.incs))
}

func since(start time.Time, ts []time.Time) []string {
	out := make([]string, 0, len(ts))
	for _, x := range ts {
		out = append(out, x.Sub(start).Round(time.Millisecond).String())
	}
	return slices.Clip(out)
}
