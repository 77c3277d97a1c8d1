package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/praas-dev/praas/backend/kubernetes"
	"github.com/praas-dev/praas/bench/internal/stats"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/kubetest"
)

// kubeImage is the image name under which the test node agent runs the
// praas binary of the run.
const kubeImage = "praas.bench/praas:bench"

// kubeIdleTimeout is the --idle-timeout of both control planes of
// experiment 10.
const kubeIdleTimeout = 3 * time.Second

// expKube is experiment 10: the Kubernetes backend against the test API
// server and the test node agent (internal/kubetest), beside the local
// backend in the same run: process creation to first result, swap-in to
// first result, and the scale-down of idle processes by the idle timeout.
func expKube(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 10, Title: "Kubernetes backend"}
	reps, n := e.reps(20, 3), e.reps(100, 20)
	sec.Text = []string{
		"Two more control planes, started for this experiment with `--idle-timeout " + kubeIdleTimeout.String() + "`: one with `--backend kubernetes` " +
			"against the test API server (a real etcd and kube-apiserver on loopback, `scripts/kube-test-apiserver.sh`, which `bench/run` starts) " +
			"and the test node agent (`internal/kubetest`), one with the local backend. Apps of the builtin image; Redis metadata and S3 swap " +
			"(`--metadata`, `--swap`) on both when the servers are available, as in a Kubernetes installation. The two are measured one after the other, in the same run:",
		"- **create → first result**: `POST /v1/apps/{app}/processes` with a new pid, then invoking `counter` through the client (`client.Client.Invoke`): " +
			"on Kubernetes this writes a Secret and a pod, the node agent binds and starts it and writes its status, the backend's informer sees it ready;\n" +
			"- **swap-in → first result**: the same process swapped out (`POST .../swap`, waited for until it is `swapped`: on Kubernetes its pod is gone), " +
			"then invoked: the invocation brings it back (a new pod) and returns;\n" +
			fmt.Sprintf("- **scale-down**: %d processes, each invoked once, then left idle; the time from the last use until every one is `swapped` "+
				"(their pods deleted), less the idle timeout.", n),
		"**These are not cluster figures.** The node agent stands in for a kubelet and the scheduler: it binds every pending pod to itself and runs it " +
			"as a local OS process on a loopback address of its own. Compared with a real node it leaves out the image pull and unpacking " +
			"(an image name maps to the local `praas` binary), the pod sandbox (no pause container, no network namespace), cgroups and resource limits, " +
			"CNI (no pod network set up or torn down: the pod IP is a loopback address), volumes, probes and node leases. What the figures do include " +
			"is the API server round trips (Secret, pod, binding, status) and the informers on both sides; on a real cluster, creation and swap-in add " +
			"the sandbox and (unless cached) the image pull, seconds rather than milliseconds.",
	}
	var ms []Measure
	names := []string{"create_first_result", "swapin_first_result", "scale_down"}
	notAvailable := func(why string) (*Section, []Measure, error) {
		for _, b := range []string{"kube", "local"} {
			for _, nm := range names {
				unit := "ms"
				if nm == "scale_down" {
					unit = "s"
				}
				ms = append(ms, unavailable(b+"_"+nm, unit, why))
			}
		}
		sec.Notes = append(sec.Notes, "Not available in this run: "+why)
		e.logf("exp 10 not available: %s", why)
		return sec, ms, nil
	}
	if why := os.Getenv("PRAAS_BENCH_KUBE_ERROR"); why != "" {
		return notAvailable(why)
	}
	kubeconfig := os.Getenv("PRAAS_TEST_KUBECONFIG")
	if kubeconfig == "" {
		return notAvailable("PRAAS_TEST_KUBECONFIG is not set (bench/run starts the test API server with scripts/kube-test-apiserver.sh)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return notAvailable(fmt.Sprintf("kubeconfig %s: %v", kubeconfig, err))
	}
	cfg.QPS, cfg.Burst = 500, 1000
	kc, err := k8s.NewForConfig(cfg)
	if err != nil {
		return notAvailable(fmt.Sprintf("kubernetes client: %v", err))
	}
	ns, err := kubeNamespace(ctx, kc)
	if err != nil {
		return notAvailable(fmt.Sprintf("the test API server (%s): %v", cfg.Host, err))
	}
	defer deleteKubeNamespace(kc, ns)
	podLogs := filepath.Join(e.Tmp, "kube-pods")
	if err := os.MkdirAll(podLogs, 0o755); err != nil {
		return sec, ms, err
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	node, err := kubetest.Start(startCtx, kubetest.Config{
		Client: kc, Namespace: ns, LogDir: podLogs,
		Images: map[string][]string{kubeImage: {e.Praas}},
	})
	cancel()
	if err != nil {
		return sec, ms, fmt.Errorf("node agent: %w", err)
	}
	defer node.Close()

	// Both control planes get the same stores: Redis and S3 under a prefix
	// of their own when available, the defaults otherwise.
	common := func(name string) []string {
		args := []string{"--idle-timeout", kubeIdleTimeout.String()}
		if e.Redis != nil {
			args = append(args, "--metadata", withQuery(e.RedisURL, "prefix=bench-"+name+":"))
		}
		if e.S3 != nil {
			args = append(args, "--swap", withQuery(e.S3URL, "prefix=bench-"+name+"/"))
		}
		return args
	}
	if e.Redis == nil || e.S3 == nil {
		sec.Notes = append(sec.Notes, "Redis or S3 was not available: the control planes used their default stores (metadata and snapshots in their data directories).")
	}
	kubeCP, err := e.startControlPlane(ctx, "cp-kube", append([]string{"--backend", "kubernetes", "--kubeconfig", kubeconfig,
		"--namespace", ns, "--praas-image", kubeImage}, common("kube-"+ns)...)...)
	if err != nil {
		return sec, ms, err
	}
	defer kubeCP.stop() // before the node agent goes: its processes end with it
	localCP, err := e.startControlPlane(ctx, "cp-local-idle", common("local-"+ns)...)
	if err != nil {
		return sec, ms, err
	}
	defer localCP.stop()

	tbl := Table{Head: []string{"measure", "Kubernetes (test API server + node agent): median (min – max)", "99% CI of Kubernetes median", "local: median (min – max)", "ratio", "n"}}
	type result struct {
		create, swapIn stats.Summary
		scaleDown      time.Duration
	}
	results := map[string]*result{}
	for _, b := range []struct {
		name string
		cp   *ControlPlane
	}{{"kube", kubeCP}, {"local", localCP}} {
		c := client.New(b.cp.Endpoint, client.WithToken(b.cp.Token))
		defer c.Close()
		create, swapIn, err := kubeFirstResults(ctx, c, reps)
		if err != nil {
			return sec, ms, fmt.Errorf("%s backend: %w", b.name, err)
		}
		r := &result{create: stats.Summarize(create), swapIn: stats.Summarize(swapIn)}
		e.logf("exp 10 %s backend: create → first result %s ms, swap-in → first result %s ms", b.name, fmtVal(r.create.Median), fmtVal(r.swapIn.Median))
		if r.scaleDown, err = scaleDown(ctx, c, n); err != nil {
			return sec, ms, fmt.Errorf("%s backend: scale-down: %w", b.name, err)
		}
		e.logf("exp 10 %s backend: %d idle processes swapped out %s after the idle timeout", b.name, n, r.scaleDown.Round(time.Millisecond))
		if b.name == "kube" {
			if left, err := livePods(ctx, kc, ns); err != nil || left != 0 {
				return sec, ms, fmt.Errorf("after the scale-down: %d process pods remain (%v)", left, err)
			}
		}
		results[b.name] = r
	}
	k, l := results["kube"], results["local"]
	ms = append(ms,
		measure("local_create_first_result", "ms", l.create),
		versus("kube_create_first_result", "ms", k.create, "local_create_first_result", l.create),
		measure("local_swapin_first_result", "ms", l.swapIn),
		versus("kube_swapin_first_result", "ms", k.swapIn, "local_swapin_first_result", l.swapIn))
	ld, kd := l.scaleDown.Seconds(), k.scaleDown.Seconds()
	ms = append(ms, Measure{Name: "local_scale_down", Unit: "s", Median: num(ld), N: 1},
		Measure{Name: "kube_scale_down", Unit: "s", Median: num(kd), N: 1, Baseline: num(ld), BaselineOf: "local_scale_down", Ratio: num(kd / ld)})
	cell := func(s stats.Summary) string {
		return fmt.Sprintf("%s ms (%s – %s)", fmtVal(s.Median), fmtVal(s.Min), fmtVal(s.Max))
	}
	tbl.add("process creation → first result", cell(k.create), fmtCI(k.create), cell(l.create), fmtRatio(k.create.Median/l.create.Median), fmt.Sprint(k.create.N))
	tbl.add("swap-in → first result", cell(k.swapIn), fmtCI(k.swapIn), cell(l.swapIn), fmtRatio(k.swapIn.Median/l.swapIn.Median), fmt.Sprint(k.swapIn.N))
	tbl.add(fmt.Sprintf("%d idle processes all swapped out, after the %s idle timeout", n, kubeIdleTimeout),
		fmtVal(kd)+" s", "", fmtVal(ld)+" s", fmtRatio(kd/ld), "1")
	sec.Tables = append(sec.Tables, tbl)
	return sec, ms, nil
}

// kubeFirstResults measures, in an app of the builtin image, reps processes
// (after one warm-up) from creation to the first result of `counter`, then
// from swap-in (an invocation of the swapped-out process) to its result, in
// ms.
func kubeFirstResults(ctx context.Context, c *client.Client, reps int) (create, swapIn []float64, err error) {
	app := uniqueName("timing")
	if _, err := c.CreateApp(ctx, app, ""); err != nil {
		return nil, nil, fmt.Errorf("create app: %w", err)
	}
	defer deleteApp(c, app)
	for i := range reps + 1 {
		pid := fmt.Sprintf("t%d", i)
		t0 := time.Now()
		if _, err := c.CreateProcess(ctx, app, pid); err != nil {
			return nil, nil, fmt.Errorf("create %s: %w", pid, err)
		}
		if out, err := c.Invoke(ctx, app, pid, "counter", nil); err != nil || string(out) != "1" {
			return nil, nil, fmt.Errorf("first invocation of %s: %q, %v", pid, out, err)
		}
		dCreate := time.Since(t0)
		if _, err := c.SwapProcess(ctx, app, pid); err != nil {
			return nil, nil, fmt.Errorf("swap %s: %w", pid, err)
		}
		if err := waitUntil(ctx, time.Minute, func() bool {
			p, err := c.GetProcess(ctx, app, pid)
			return err == nil && p.Status == "swapped"
		}); err != nil {
			return nil, nil, fmt.Errorf("%s swapped: %w", pid, err)
		}
		t0 = time.Now()
		if out, err := c.Invoke(ctx, app, pid, "counter", nil); err != nil || string(out) != "2" {
			return nil, nil, fmt.Errorf("swap-in of %s: %q, %v", pid, out, err)
		}
		dSwap := time.Since(t0)
		if i > 0 {
			create, swapIn = append(create, ms(dCreate)), append(swapIn, ms(dSwap))
		}
	}
	return create, swapIn, nil
}

// scaleDown creates n processes of a new app, invokes each once and returns
// the time from the last use until every one is swapped out, less the idle
// timeout.
func scaleDown(ctx context.Context, c *client.Client, n int) (time.Duration, error) {
	app := uniqueName("scale")
	if _, err := c.CreateApp(ctx, app, ""); err != nil {
		return 0, fmt.Errorf("create app: %w", err)
	}
	defer deleteApp(c, app)
	var wg sync.WaitGroup
	errc := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			pid := fmt.Sprintf("s%d", i)
			if _, err := c.CreateProcess(ctx, app, pid); err != nil {
				errc <- err
				return
			}
			if _, err := c.Invoke(ctx, app, pid, "counter", nil); err != nil {
				errc <- err
			}
		})
	}
	wg.Wait()
	lastUse := time.Now()
	close(errc)
	if err := <-errc; err != nil {
		return 0, err
	}
	err := waitUntil(ctx, 5*time.Minute, func() bool {
		procs, err := c.ListProcesses(ctx, app)
		if err != nil || len(procs) != n {
			return false
		}
		for _, p := range procs {
			if p.Status != "swapped" {
				return false
			}
		}
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("every idle process swapped out: %w", err)
	}
	return time.Since(lastUse) - kubeIdleTimeout, nil
}

// waitUntil polls cond every 20 ms until it holds, timeout passes or ctx ends.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func deleteApp(c *client.Client, app string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = c.DeleteApp(ctx, app)
}

// livePods counts the process pods of ns that have not ended.
func livePods(ctx context.Context, kc k8s.Interface, ns string) (int, error) {
	list, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: kubernetes.LabelProcess + "=true"})
	if err != nil {
		return 0, err
	}
	live := 0
	for _, p := range list.Items {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && p.DeletionTimestamp == nil {
			live++
		}
	}
	return live, nil
}

// kubeNamespace creates a namespace of the experiment's own.
func kubeNamespace(ctx context.Context, kc k8s.Interface) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	name := uniqueName("praas-bench-")
	_, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return "", errors.New(firstLine(err.Error()))
	}
	return name, nil
}

// deleteKubeNamespace deletes what is left in ns (no controller manager
// empties it), ns itself and the node agent's Node.
func deleteKubeNamespace(kc k8s.Interface, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	zero := int64(0)
	_ = kc.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
	_ = kc.CoreV1().Secrets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	_ = kc.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	_ = kc.CoreV1().Nodes().Delete(ctx, "node-"+ns, metav1.DeleteOptions{})
}

func uniqueName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func withQuery(u, q string) string {
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}
