package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/praas-dev/praas/backend/kubernetes"
	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/kubetest"
	"github.com/praas-dev/praas/internal/testenv"
	"github.com/praas-dev/praas/store/storeurl"
)

// kubePraasImage is the image name under which the test node agent runs
// the praas binary built for these tests.
const kubePraasImage = "praas.test/praas:e2e"

// kubeCluster is a namespace of the test API server with a node agent, and
// control-plane replicas whose backend is Kubernetes.
type kubeCluster struct {
	client k8s.Interface
	ns     string
	node   *kubetest.Node
	rs     *replicaSet
}

func newKubeCluster(t *testing.T, extra ...string) *kubeCluster {
	t.Helper()
	c, _ := kubetest.Client(t)
	kubeconfig := testenv.Kubeconfig(t)
	ns := kubetest.Namespace(t, c, "praas-e2e")
	node := kubetest.StartNode(t, kubetest.Config{
		Client: c, Namespace: ns, LogDir: t.TempDir(),
		Images: map[string][]string{kubePraasImage: {praasBin}},
	})
	rs := newReplicaSet(t, append([]string{"--backend", "kubernetes", "--kubeconfig", kubeconfig,
		"--namespace", ns, "--praas-image", kubePraasImage}, extra...)...)
	return &kubeCluster{client: c, ns: ns, node: node, rs: rs}
}

// pods returns the process pods of app/pid that have not ended.
func (k *kubeCluster) pods(t *testing.T, app, pid string) []corev1.Pod {
	t.Helper()
	list, err := k.client.CoreV1().Pods(k.ns).List(t.Context(), metav1.ListOptions{LabelSelector: kubernetes.LabelProcess + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.Annotations[kubernetes.AnnotationApp] == app && (pid == "" || p.Annotations[kubernetes.AnnotationPID] == pid) && !podEnded(&p) {
			out = append(out, p)
		}
	}
	return out
}

func podEnded(p *corev1.Pod) bool {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return true
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Terminated != nil {
			return true
		}
	}
	return false
}

// watchDoubles records, from every pod event, whether a pid was ever backed
// by two pods that had not ended.
func (k *kubeCluster) watchDoubles(t *testing.T) func() []string {
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithNamespace(k.ns))
	inf := factory.Core().V1().Pods().Informer()
	var mu sync.Mutex
	live := map[string]map[string]bool{} // app/pid → live pod names
	var doubles []string
	update := func(obj any, deleted bool) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		key := p.Annotations[kubernetes.AnnotationApp] + "/" + p.Annotations[kubernetes.AnnotationPID]
		mu.Lock()
		defer mu.Unlock()
		if live[key] == nil {
			live[key] = map[string]bool{}
		}
		if deleted || podEnded(p) {
			delete(live[key], p.Name)
			return
		}
		live[key][p.Name] = true
		if len(live[key]) > 1 {
			doubles = append(doubles, fmt.Sprintf("%s: %d pods at once", key, len(live[key])))
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { update(obj, false) },
		UpdateFunc: func(_, obj any) { update(obj, false) },
		DeleteFunc: func(obj any) { update(obj, true) },
	})
	stop := make(chan struct{})
	factory.Start(stop)
	cache.WaitForCacheSync(stop, inf.HasSynced)
	t.Cleanup(func() { close(stop); factory.Shutdown() })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), doubles...)
	}
}

// The whole life of processes on the Kubernetes backend, with two replicas
// sharing Redis and S3: pods appear, serve the data plane at the pod IP,
// message each other, swap out (pod gone, snapshot in S3) and in (new pod,
// new generation, state intact); a replica is killed and the other carries
// on with every acknowledged increment; a pod deleted from outside is
// restored from its snapshot; deleting the app leaves no pod, Secret or
// snapshot behind; and no pid is ever backed by two pods.
func TestKubernetesEndToEnd(t *testing.T) {
	k := newKubeCluster(t)
	doubles := k.watchDoubles(t)
	a, b := k.rs.start("a"), k.rs.start("b")
	ca, cb := clientOf(t, a), clientOf(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	app := uniqueName("kube")
	// The app's resources, and p2's own in place of them.
	appRes := client.Resources{MilliCPU: 100, MemoryBytes: 64 << 20}
	ownRes := map[string]client.Resources{"p2": {MilliCPU: 200, MemoryBytes: 128 << 20}}
	if _, err := ca.CreateApp(ctx, app, "", client.WithResources(appRes)); err != nil {
		t.Fatal(err)
	}

	// Processes: one pod each, ready, the data plane at the pod IP.
	for _, pid := range []string{"p1", "p2"} {
		var opts []client.CreateOption
		want, own := ownRes[pid]
		if own {
			opts = append(opts, client.WithResources(want))
		} else {
			want = appRes
		}
		p, err := ca.CreateProcess(ctx, app, pid, opts...)
		if err != nil {
			t.Fatalf("create %s: %v", pid, err)
		}
		pods := k.pods(t, app, pid)
		if len(pods) != 1 {
			t.Fatalf("%s: %d pods, want 1", pid, len(pods))
		}
		pod := pods[0]
		if want := pod.Status.PodIP + ":" + strconv.Itoa(kubernetes.DefaultPort); p.Address != want {
			t.Errorf("%s: data-plane address %s, want the pod's %s", pid, p.Address, want)
		}
		if got := pod.Labels[kubernetes.LabelGeneration]; got != strconv.FormatUint(p.Generation, 10) {
			t.Errorf("%s: pod generation label %s, process generation %d", pid, got, p.Generation)
		}
		if !strings.HasPrefix(p.Handle, pod.Name+"@") {
			t.Errorf("%s: handle %s does not name pod %s", pid, p.Handle, pod.Name)
		}
		lim := pod.Spec.Containers[0].Resources.Limits
		if cpu, mem := lim.Cpu().MilliValue(), lim.Memory().Value(); cpu != want.MilliCPU || mem != want.MemoryBytes {
			t.Errorf("%s: pod limits %dm CPU, %d bytes; want %dm, %d", pid, cpu, mem, want.MilliCPU, want.MemoryBytes)
		}
	}

	// The data plane, straight to the pods.
	for i := 1; i <= 3; i++ {
		out, err := cb.Invoke(ctx, app, "p1", "counter", nil)
		if err != nil || string(out) != strconv.Itoa(i) {
			t.Fatalf("data-plane counter: %q, %v; want %d", out, err, i)
		}
	}
	// Process to process: p1 sends to p2, p2 receives.
	if _, err := ca.Invoke(ctx, app, "p1", "send", []byte("p2 greeting hello from p1")); err != nil {
		t.Fatalf("send: %v", err)
	}
	if out, err := ca.Invoke(ctx, app, "p2", "recv", []byte("p1 greeting 10000")); err != nil || string(out) != "hello from p1" {
		t.Fatalf("recv: %q, %v", out, err)
	}
	if _, err := ca.Invoke(ctx, app, "p1", "state-set", []byte("kept=across swaps")); err != nil {
		t.Fatal(err)
	}
	// What a pod's process prints reaches its log, read through either
	// replica (the one that does not own p2 forwards the read).
	if _, err := ca.Invoke(ctx, app, "p2", "log", []byte("from a pod")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{ca, cb} {
		waitFor(t, 30*time.Second, "p2's output in its log", func() bool {
			found := 0
			err := c.Logs(ctx, app, "p2", client.LogsOptions{}, func(l client.LogLine) error {
				if (l.Stream == "stdout" && l.Line == "out: from a pod") || (l.Stream == "stderr" && l.Line == "err: from a pod") {
					found++
				}
				return nil
			})
			return err == nil && found == 2
		})
	}

	// Swap out through the other replica: the pod goes once the snapshot
	// is in S3.
	before := getProcess(t, cb, app, "p1")
	if _, err := cb.SwapProcess(ctx, app, "p1"); err != nil {
		t.Fatalf("swap: %v", err)
	}
	waitFor(t, 60*time.Second, "p1 swapped with no pod", func() bool {
		p, err := cb.GetProcess(ctx, app, "p1")
		return err == nil && p.Status == "swapped" && len(k.pods(t, app, "p1")) == 0
	})
	swapped := getProcess(t, ca, app, "p1")
	if swapped.Snapshot == "" {
		t.Fatal("swapped p1 names no snapshot")
	}
	swap, err := storeurl.OpenSwap(ctx, k.rs.swap, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer swap.Close()
	if r, err := swap.Get(ctx, swapped.Snapshot); err != nil {
		t.Fatalf("snapshot %s not in S3: %v", swapped.Snapshot, err)
	} else {
		r.Close()
	}

	// Swap in by invoking: a new pod, a new generation, the state intact.
	if out, err := ca.Invoke(ctx, app, "p1", "state-get", []byte("kept")); err != nil || string(out) != "across swaps" {
		t.Fatalf("state after swap-in: %q, %v", out, err)
	}
	if out, err := ca.Invoke(ctx, app, "p1", "counter", nil); err != nil || string(out) != "4" {
		t.Fatalf("counter after swap-in: %q, %v; want 4", out, err)
	}
	after := getProcess(t, ca, app, "p1")
	if after.Generation <= before.Generation || after.Handle == before.Handle {
		t.Errorf("swap-in: generation %d handle %s, was %d %s; want a new pod and generation", after.Generation, after.Handle, before.Generation, before.Handle)
	}
	if pods := k.pods(t, app, "p1"); len(pods) != 1 || !strings.HasPrefix(after.Handle, pods[0].Name+"@") {
		t.Errorf("after swap-in: %d pods of p1, handle %s", len(pods), after.Handle)
	}

	// A replica is killed: the other takes its processes over and nothing
	// acknowledged is lost.
	owner := map[string]*controlPlane{"a": a, "b": b}[getProcess(t, cb, app, "p2").Owner]
	cs := cb
	if owner == b {
		cs = ca
	}
	var acked int
	for ; acked < 5; acked++ {
		if _, err := cs.Invoke(ctx, app, "p2", "counter", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := owner.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-owner.exited
	waitFor(t, replicaLeaseTTL+30*time.Second, "the survivor owns p2", func() bool {
		p, err := cs.GetProcess(ctx, app, "p2")
		return err == nil && p.Owner != "" && owner != map[string]*controlPlane{"a": a, "b": b}[p.Owner] && p.Status == "active"
	})
	out, err := cs.Invoke(ctx, app, "p2", "counter", nil)
	if err != nil {
		t.Fatalf("counter after the takeover: %v", err)
	}
	if n, _ := strconv.Atoi(string(out)); n < acked+1 {
		t.Errorf("counter after the takeover %s, want at least %d: acknowledged increments lost", out, acked+1)
	}

	// A pod deleted from outside, as a node drain would: the runtime swaps
	// out on SIGTERM, and the next invocation restores it.
	p2 := getProcess(t, cs, app, "p2")
	pods := k.pods(t, app, "p2")
	if len(pods) != 1 {
		t.Fatalf("p2: %d pods, want 1", len(pods))
	}
	if err := k.client.CoreV1().Pods(k.ns).Delete(ctx, pods[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the drained p2 noticed", func() bool {
		p, err := cs.GetProcess(ctx, app, "p2")
		return err == nil && p.Status != "active"
	})
	counter, _ := strconv.Atoi(string(out))
	out, err = cs.Invoke(ctx, app, "p2", "counter", nil)
	if err != nil {
		t.Fatalf("counter after the drain: %v", err)
	}
	if n, _ := strconv.Atoi(string(out)); n != counter+1 {
		t.Errorf("counter after the drain %s, want %d: state not restored", out, counter+1)
	}
	if p := getProcess(t, cs, app, "p2"); p.Generation <= p2.Generation {
		t.Errorf("p2 after the drain: generation %d, was %d", p.Generation, p2.Generation)
	}

	// Delete: no pod, no Secret, no snapshot.
	snapshots := []string{swapped.Snapshot, p2.Snapshot}
	for _, pid := range []string{"p1", "p2"} {
		snapshots = append(snapshots, getProcess(t, cs, app, pid).Snapshot)
	}
	if err := cs.DeleteApp(ctx, app); err != nil {
		t.Fatalf("delete app: %v", err)
	}
	waitFor(t, 60*time.Second, "no pods and no Secrets of the app", func() bool {
		secrets, err := k.client.CoreV1().Secrets(k.ns).List(ctx, metav1.ListOptions{LabelSelector: kubernetes.LabelApp + "=" + app})
		return len(k.pods(t, app, "")) == 0 && err == nil && len(secrets.Items) == 0
	})
	for _, key := range snapshots {
		if key == "" {
			continue
		}
		waitFor(t, 30*time.Second, "snapshot "+key+" deleted", func() bool {
			r, err := swap.Get(ctx, key)
			if err == nil {
				r.Close()
			}
			return errors.Is(err, errs.ErrNotFound)
		})
	}
	if d := doubles(); len(d) > 0 {
		t.Errorf("a pid was backed by two pods at once: %v", d)
	}
}
