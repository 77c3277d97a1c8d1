package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/client"
)

// The usage an app reports is what its process did: exact invocations and
// bytes over the data plane and the control plane, the memory-time of a
// state of known size within the bounds of when it was held, the swap
// storage held equal to the snapshot's size while swapped, all kept across
// a control-plane restart and the deletion of the process.
func TestUsageEqualsWhatProcessesDid(t *testing.T) {
	addr := freeAddr(t)
	data := t.TempDir()
	flags := []string{"--listen", addr, "--usage-bucket", "1s"}
	cp := startControlPlane(t, data, flags...)
	ctx := context.Background()
	c := testClient()
	defer c.Close()
	const app, pid = "bill", "p1"
	if _, err := c.CreateApp(ctx, app, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateProcess(ctx, app, pid); err != nil {
		t.Fatal(err)
	}
	created := time.Now()

	var invocations, bytesIn, bytesOut uint64
	count := func(in, out []byte) {
		invocations++
		bytesIn += uint64(len(in))
		bytesOut += uint64(len(out))
	}
	// A state of known size: key "blob" and 1 MiB.
	const stateSize = len("blob") + 1<<20
	fillIn := []byte(fmt.Sprintf("blob %d 7", 1<<20))
	fillStart := time.Now()
	out, err := c.Invoke(ctx, app, pid, "state-fill", fillIn)
	if err != nil {
		t.Fatal(err)
	}
	fillDone := time.Now()
	count(fillIn, out)
	for i := range 20 { // over the data plane
		in := []byte(strings.Repeat("d", 10*i+1))
		out, err := c.Invoke(ctx, app, pid, "echo", in)
		if err != nil {
			t.Fatal(err)
		}
		count(in, out)
	}
	for i := range 5 { // through the control plane
		in := []byte(strings.Repeat("c", 100*i+3))
		res, err := c.InvokeControlPlane(ctx, app, pid, "echo", in)
		if err != nil {
			t.Fatal(err)
		}
		count(in, res.Output)
	}

	// While the process runs, its usage is at most a heartbeat late.
	usage := func(opts client.UsageOptions) client.AppUsage {
		t.Helper()
		u, err := c.Usage(ctx, app, opts)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	waitFor(t, 10*time.Second, "usage of the running process", func() bool {
		return usage(client.UsageOptions{}).Totals.Invocations == invocations
	})

	// The control plane crashes once a heartbeat wrote some of the running
	// generation's usage into the record; the next one adopts the process
	// and must not count that part twice.
	time.Sleep(1500 * time.Millisecond)
	if err := cp.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-cp.exited
	cp = startControlPlane(t, data, flags...)
	c = testClient()
	defer c.Close()
	waitFor(t, 20*time.Second, "the adopted process's usage", func() bool {
		return usage(client.UsageOptions{}).Totals.Invocations >= invocations
	})
	in := []byte("after the crash")
	out, err = c.Invoke(ctx, app, pid, "echo", in)
	if err != nil {
		t.Fatal(err)
	}
	count(in, out)
	waitFor(t, 10*time.Second, "usage after the adoption", func() bool {
		return usage(client.UsageOptions{}).Totals.Invocations >= invocations
	})
	if got := usage(client.UsageOptions{}).Totals; got.Invocations != invocations || got.BytesIn != bytesIn {
		t.Fatalf("after the adoption: %d invocations and %d bytes in, want %d and %d", got.Invocations, got.BytesIn, invocations, bytesIn)
	}
	if h := processStatus(t, app, pid).Generation; h != 1 {
		t.Fatalf("p1 is generation %d after the crash, want the adopted 1", h)
	}
	swapStart := time.Now()
	if _, err := c.SwapProcess(ctx, app, pid); err != nil {
		t.Fatal(err)
	}
	swapDone := time.Now()

	rec := processStatus(t, app, pid)
	info, err := os.Stat(filepath.Join(data, "swap", filepath.FromSlash(rec.Snapshot)))
	if err != nil {
		t.Fatalf("the snapshot %s: %v", rec.Snapshot, err)
	}
	snapshotBytes := info.Size()

	checkCounts := func(what string, f client.UsageFigures) {
		t.Helper()
		if f.Invocations != invocations || f.BytesIn != bytesIn || f.BytesOut != bytesOut {
			t.Fatalf("%s: %d invocations, %d bytes in, %d out; the test made %d, %d, %d",
				what, f.Invocations, f.BytesIn, f.BytesOut, invocations, bytesIn, bytesOut)
		}
		if f.ComputeNanos == 0 || f.ComputeSeconds != float64(f.ComputeNanos)/1e9 {
			t.Fatalf("%s: compute %d ns, %v s", what, f.ComputeNanos, f.ComputeSeconds)
		}
	}
	between := func(what string, got, lo, hi float64) {
		t.Helper()
		if got < lo || got > hi {
			t.Fatalf("%s = %v, want between %v and %v", what, got, lo, hi)
		}
	}
	totals := usage(client.UsageOptions{})
	checkCounts("totals after the swap-out", totals.Totals)
	// The state was held at least from the fill's answer to the swap request,
	// at most from the fill's request to the swap's answer (+1: rounding).
	stateBS := float64(totals.Totals.StateByteSeconds)
	between("state byte-seconds", stateBS,
		float64(stateSize)*swapStart.Sub(fillDone).Seconds()-1, float64(stateSize)*swapDone.Sub(fillStart).Seconds()+1)
	if want := stateBS / (1 << 30); totals.Totals.StateGiBSeconds != want {
		t.Fatalf("state GiB-seconds %v, want %v", totals.Totals.StateGiBSeconds, want)
	}
	if totals.Totals.SwapBytesHeld != snapshotBytes || len(totals.Processes) != 1 || totals.Processes[0].Status != "swapped" {
		t.Fatalf("after the swap-out: %+v, want %d swap bytes held by p1 swapped", totals, snapshotBytes)
	}

	// Swapped, the snapshot is billed by the second.
	time.Sleep(1500 * time.Millisecond)
	before := time.Now()
	swapping := usage(client.UsageOptions{}).Totals
	between("swap byte-seconds while swapped", float64(swapping.SwapByteSeconds),
		float64(snapshotBytes)*before.Sub(swapDone).Seconds()-1, float64(snapshotBytes)*time.Since(swapStart).Seconds()+1)

	// A restart of the control plane keeps it all.
	cp.terminate(t)
	startControlPlane(t, data, flags...)
	c = testClient()
	defer c.Close()
	checkCounts("totals after a restart", usage(client.UsageOptions{}).Totals)

	// Swapping in ends the swap period: it is in the record and in the buckets.
	digestIn := []byte("blob")
	out, err = c.Invoke(ctx, app, pid, "state-digest", digestIn)
	if err != nil {
		t.Fatal(err)
	}
	count(digestIn, out)
	swappedIn := time.Now()
	waitFor(t, 10*time.Second, "usage of the swapped-in process", func() bool {
		return usage(client.UsageOptions{}).Totals.Invocations == invocations
	})
	totals = usage(client.UsageOptions{})
	checkCounts("totals after the swap-in", totals.Totals)
	between("swap byte-seconds after the swap-in", float64(totals.Totals.SwapByteSeconds),
		float64(snapshotBytes)*before.Sub(swapDone).Seconds()-1, float64(snapshotBytes)*swappedIn.Sub(swapStart).Seconds()+1)
	window := client.UsageOptions{Since: created.Add(-time.Minute), Until: time.Now().Add(time.Minute)}
	// The buckets get the last invocation when the record does: within
	// the 5 s between writes of a running process's usage and a heartbeat.
	var windowed client.AppUsage
	waitFor(t, 10*time.Second, "the window to hold the last invocation", func() bool {
		windowed = usage(window)
		return windowed.Totals.Invocations == invocations
	})
	checkCounts("the window around the test", windowed.Totals)
	totals = usage(client.UsageOptions{}) // not older than the window
	if !windowed.Windowed || windowed.BucketSeconds != 1 || windowed.Since.After(created) {
		t.Fatalf("window: %+v", windowed)
	}
	// The buckets hold what the records got: all of it but what the live
	// process reported since its record was last written (its state's
	// memory-time at most); the swap period, spread over its buckets, exactly.
	if w, r := windowed.Totals.StateByteSeconds, totals.Totals.StateByteSeconds; w > r || w < uint64(stateBS) {
		t.Fatalf("window state byte-seconds %d, want between %d (up to the swap-out) and %d (the total)", w, uint64(stateBS), r)
	}
	if w, r := windowed.Totals.SwapByteSeconds, totals.Totals.SwapByteSeconds; w != r {
		t.Fatalf("window swap byte-seconds %d, record %d", w, r)
	}
	// A window before anything happened is empty.
	early := usage(client.UsageOptions{Since: created.Add(-time.Hour), Until: created.Add(-30 * time.Minute)})
	if early.Totals.Invocations != 0 || early.Totals.BytesIn != 0 || early.Totals.StateByteSeconds != 0 {
		t.Fatalf("a window before the test: %+v", early.Totals)
	}

	// praas usage --json prints the API's answer; the table has a row per process and a total.
	var cli client.AppUsage
	if err := json.Unmarshal([]byte(mustPraas(t, "", "usage", app, "--since", "10m", "--json")), &cli); err != nil {
		t.Fatal(err)
	}
	checkCounts("praas usage --json", cli.Totals)
	table := mustPraas(t, "", "usage", app)
	for _, want := range []string{"PID", "p1", "TOTAL", fmt.Sprint(invocations)} {
		if !strings.Contains(table, want) {
			t.Fatalf("praas usage prints no %q:\n%s", want, table)
		}
	}

	// Billing survives the deletion of the process, in windows.
	mustPraas(t, "", "process", "delete", app, pid)
	gone := usage(window)
	checkCounts("a window after the deletion", gone.Totals)
	if len(gone.Processes) != 1 || gone.Processes[0].Status != "deleted" {
		t.Fatalf("after the deletion: %+v", gone.Processes)
	}

	// Bad input.
	var api *client.APIError
	_, err = c.Usage(ctx, "nope", client.UsageOptions{})
	if !errors.As(err, &api) || api.Status != http.StatusNotFound {
		t.Fatalf("usage of an absent app: %v, want 404", err)
	}
	resp, err := http.Get(endpoint() + "/v1/apps/" + app + "/usage?since=yesterday")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a bad since without a key: %s", resp.Status)
	}
	_, errOut, code := runCLI(t, "", "usage", app, "--since", "yesterday")
	if code != exitUsage || !strings.Contains(errOut, "--since") {
		t.Fatalf("praas usage --since yesterday: exit %d, %q; want %d and a word on --since", code, errOut, exitUsage)
	}
}

// Usage of a process that two replicas owned in turn (Redis, S3) adds up,
// and either replica answers the same, totals and windows.
func TestUsageAcrossReplicas(t *testing.T) {
	rs := newReplicaSet(t, "--usage-bucket", "1s")
	r1, r2 := rs.start("r1"), rs.start("r2")
	c1, c2 := clientOf(t, r1), clientOf(t, r2)
	ctx := context.Background()
	app := uniqueName("usage")
	start := time.Now()
	if _, err := c1.CreateApp(ctx, app, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.CreateProcess(ctx, app, "p1"); err != nil { // r1 owns generation 1
		t.Fatal(err)
	}
	var want uint64
	for range 7 {
		expectVia(t, c2, "abc", app, "p1", "echo", "abc")
		want++
	}
	if _, err := c2.SwapProcess(ctx, app, "p1"); err != nil { // forwarded to r1
		t.Fatal(err)
	}
	for range 5 {
		expectVia(t, c2, "abcd", app, "p1", "echo", "abcd") // r2 swaps it in, generation 2
		want++
	}
	if p := getProcess(t, c1, app, "p1"); p.Owner != "r2" || p.Generation != 2 {
		t.Fatalf("p1: owner %q generation %d, want r2 and 2", p.Owner, p.Generation)
	}
	if _, err := c1.SwapProcess(ctx, app, "p1"); err != nil { // forwarded to r2
		t.Fatal(err)
	}
	wantIn := uint64(7*3 + 5*4)
	window := client.UsageOptions{Since: start.Add(-time.Minute), Until: time.Now().Add(time.Minute)}
	for i, c := range []*client.Client{c1, c2} {
		for _, opts := range []client.UsageOptions{{}, window} {
			u, err := c.Usage(ctx, app, opts)
			if err != nil {
				t.Fatal(err)
			}
			if u.Totals.Invocations != want || u.Totals.BytesIn != wantIn || u.Totals.BytesOut != wantIn || u.Totals.StateByteSeconds != 0 {
				t.Fatalf("replica r%d, windowed %v: %+v; want %d invocations, %d bytes in and out, no state",
					i+1, opts != client.UsageOptions{}, u.Totals, want, wantIn)
			}
		}
	}
}

func TestTimeOrAgo(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"", time.Time{}, true},
		{"90m", now.Add(-90 * time.Minute), true},
		{"2026-01-02T15:04:05Z", time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC), true},
		{"2026-01-02T15:04:05.5+01:00", time.Date(2026, 1, 2, 14, 4, 5, 5e8, time.UTC), true},
		{"-5m", time.Time{}, false},
		{"yesterday", time.Time{}, false},
	} {
		got, err := timeOrAgo("--since", tc.in, now)
		if (err == nil) != tc.ok || !got.Equal(tc.want) {
			t.Errorf("timeOrAgo(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
