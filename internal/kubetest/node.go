// Package kubetest is a test-only node agent: it stands in for a kubelet
// (and for the scheduler) so that the Kubernetes backend's tests run
// against a real API server on a machine that cannot run containers.
//
// A Node registers a Node object, binds the unscheduled pods of its
// namespace to itself, and runs each pod bound to it as a local OS process:
// the image's entrypoint (from Config.Images, the one thing that stands in
// for pulling an image) or the container's command, followed by its args,
// with exactly the environment the pod spec gives (env with $(VAR)
// expansion, envFrom and secretKeyRef from Secrets, the downward API's pod
// IP, name and namespace), on its own loopback address 127.X.Y.N (so every
// pod has its own IP and the same port, as in a cluster). It writes the
// pod's status as a kubelet does: phase, conditions, podIP(s), hostIP,
// container state with exit code (128+signal when killed). A pod being
// deleted gets SIGTERM, and SIGKILL once its grace period is over; the agent
// then deletes the pod object for good (grace 0), as a kubelet does. A pod
// deleted with no grace period is killed at once.
//
// What it does not do, compared with a real node: no images (nothing is
// pulled or unpacked: Config.Images maps an image name to a local binary),
// no pod sandbox, network namespace, cgroups or resource limits (processes
// share the host's network, filesystem and user), no volumes, probes,
// restarts, init or sidecar containers, ConfigMap env, lifecycle hooks,
// node leases or eviction. The scheduling is binding every pending pod of
// the namespace to this node.
package kubetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// Config configures a Node.
type Config struct {
	Client k8s.Interface
	// Namespace whose pods this node schedules and runs (required): tests
	// sharing one API server each use their own.
	Namespace string
	// Name of the Node object (default: "node-" + Namespace).
	Name string
	// Images maps a container image to the local command that runs it
	// (its entrypoint). A pod whose image is not here stays Pending with
	// ErrImagePull, unless its container has a command.
	Images map[string][]string
	// LogDir receives each pod's standard output and error, in
	// LogPath(name, uid) (required).
	LogDir string
	Logger *slog.Logger
}

// Node is a running node agent.
type Node struct {
	cfg    Config
	client k8s.Interface
	subnet [2]byte // pods get 127.subnet[0].subnet[1].N
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	pods map[types.UID]*podProc
	ips  map[string]types.UID
}

// podProc is a pod this node runs (or failed to start).
type podProc struct {
	name      string
	uid       types.UID
	ip        string
	cmd       *exec.Cmd // nil if it never started
	done      chan struct{}
	termSent  bool
	killTimer *time.Timer
	deleting  bool // the pod object is being deleted
	exited    bool
}

// LogPath is where the output of pod name/uid goes.
func (n *Node) LogPath(name string, uid types.UID) string {
	return filepath.Join(n.cfg.LogDir, name+"_"+string(uid)+".log")
}

// Start registers the node and starts serving pods until ctx ends or Close.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.LogDir == "" {
		return nil, errors.New("kubetest: Client, Namespace and LogDir are required")
	}
	if cfg.Name == "" {
		cfg.Name = "node-" + cfg.Namespace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, err
	}
	var sub [2]byte
	rand.Read(sub[:])
	sub[0] = 1 + sub[0]%254 // never 127.0.x.x, where other servers of the host listen
	n := &Node{cfg: cfg, client: cfg.Client, subnet: sub, pods: make(map[types.UID]*podProc), ips: make(map[string]types.UID)}
	if err := n.register(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	factory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, informers.WithNamespace(cfg.Namespace))
	inf := factory.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.sync(rctx, obj, false) },
		UpdateFunc: func(_, obj any) { n.sync(rctx, obj, false) },
		DeleteFunc: func(obj any) { n.sync(rctx, obj, true) },
	})
	if err != nil {
		cancel()
		return nil, err
	}
	factory.Start(rctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		cancel()
		factory.Shutdown()
		return nil, fmt.Errorf("kubetest: pod informer did not sync: %w", ctx.Err())
	}
	n.wg.Go(func() {
		<-rctx.Done()
		factory.Shutdown()
	})
	return n, nil
}

// Close stops the agent and kills every process it runs; it leaves the
// pod objects as they are, as a node that went away would.
func (n *Node) Close() {
	n.cancel()
	n.mu.Lock()
	var waits []chan struct{}
	for _, p := range n.pods {
		if p.cmd != nil && !p.exited {
			p.cmd.Process.Kill()
			waits = append(waits, p.done)
		}
	}
	n.mu.Unlock()
	for _, w := range waits {
		<-w
	}
	n.wg.Wait()
}

// register creates (or refreshes) the Node object, Ready.
func (n *Node) register(ctx context.Context) error {
	nodes := n.client.CoreV1().Nodes()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Name, Labels: map[string]string{"kubernetes.io/hostname": n.cfg.Name, "praas.dev/test-node": "true"}}}
	got, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = nodes.Get(ctx, n.cfg.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("kubetest: register node: %w", err)
	}
	now := metav1.Now()
	got.Status = corev1.NodeStatus{
		Capacity: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("1000"),
		},
		Allocatable: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("1000"),
		},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "praas test node agent", LastHeartbeatTime: now, LastTransitionTime: now}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: n.cfg.Name}},
		NodeInfo:  corev1.NodeSystemInfo{KubeletVersion: "praas-test", OperatingSystem: "linux", Architecture: "amd64"},
	}
	if _, err := nodes.UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("kubetest: node status: %w", err)
	}
	return nil
}

// sync acts on one pod event.
func (n *Node) sync(ctx context.Context, obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.Spec.NodeName == "" {
		if !deleted && pod.DeletionTimestamp == nil {
			n.bind(ctx, pod)
		}
		return
	}
	if pod.Spec.NodeName != n.cfg.Name {
		return
	}
	n.mu.Lock()
	p := n.pods[pod.UID]
	running := p != nil && p.cmd != nil && !p.exited
	n.mu.Unlock()
	switch {
	case deleted:
		if p != nil {
			n.kill(p)
			n.release(p)
		}
	case pod.DeletionTimestamp != nil:
		if !running {
			n.finalDelete(ctx, pod.Name, pod.UID)
			return
		}
		n.terminate(p, pod)
	case p == nil:
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return // ran here before this agent started
		}
		n.start(ctx, pod)
	}
}

// bind places an unscheduled pod on this node.
func (n *Node) bind(ctx context.Context, pod *corev1.Pod) {
	err := n.client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: n.cfg.Name},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		n.cfg.Logger.Warn("kubetest: bind pod", "pod", pod.Name, "err", err)
	}
}

// allocIP returns a free pod IP whose container ports are free.
func (n *Node) allocIP(pod *corev1.Pod, uid types.UID) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := 2; i < 255*250; i++ {
		ip := fmt.Sprintf("127.%d.%d.%d", n.subnet[0], (int(n.subnet[1])+i/254)%256, 1+i%254)
		if _, used := n.ips[ip]; used {
			continue
		}
		if !portsFree(ip, pod) {
			continue
		}
		n.ips[ip] = uid
		return ip, nil
	}
	return "", errors.New("no free pod IP")
}

func portsFree(ip string, pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(int(p.ContainerPort))))
			if err != nil {
				return false
			}
			ln.Close()
		}
	}
	return true
}

func (n *Node) release(p *podProc) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p.ip != "" && n.ips[p.ip] == p.uid {
		delete(n.ips, p.ip)
	}
	delete(n.pods, p.uid)
}

// start runs the pod's (first) container.
func (n *Node) start(ctx context.Context, pod *corev1.Pod) {
	p := &podProc{name: pod.Name, uid: pod.UID, done: make(chan struct{})}
	n.mu.Lock()
	n.pods[pod.UID] = p
	n.mu.Unlock()
	c := pod.Spec.Containers[0]
	argv := c.Command
	if len(argv) == 0 {
		argv = n.cfg.Images[c.Image]
	}
	if len(argv) == 0 {
		close(p.done)
		p.exited = true
		n.setStatus(ctx, pod.Name, pod.UID, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodPending
			s.ContainerStatuses = []corev1.ContainerStatus{{Name: c.Name, Image: c.Image,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "image " + c.Image + " is unknown to the test node"}}}}
		})
		return
	}
	argv = append(append([]string(nil), argv...), c.Args...)
	ip, err := n.allocIP(pod, pod.UID)
	if err == nil {
		p.ip = ip
	}
	var env []string
	if err == nil {
		env, err = n.environment(ctx, pod, c, ip)
	}
	var cmd *exec.Cmd
	var logf *os.File
	if err == nil {
		logf, err = os.OpenFile(n.LogPath(pod.Name, pod.UID), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	}
	if err == nil {
		cmd = exec.Command(argv[0], argv[1:]...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Dir = os.TempDir()
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		err = cmd.Start()
		logf.Close()
	}
	started := metav1.Now()
	if err != nil {
		close(p.done)
		p.exited = true
		n.cfg.Logger.Warn("kubetest: start pod", "pod", pod.Name, "err", err)
		n.setStatus(ctx, pod.Name, pod.UID, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses = []corev1.ContainerStatus{{Name: c.Name, Image: c.Image,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", Message: err.Error(), FinishedAt: started}}}}
		})
		return
	}
	n.mu.Lock()
	p.cmd = cmd
	n.mu.Unlock()
	n.wg.Go(func() { n.reap(ctx, pod, p, c, started) })
	n.setStatus(ctx, pod.Name, pod.UID, func(s *corev1.PodStatus) {
		s.Phase = corev1.PodRunning
		s.HostIP, s.HostIPs = "127.0.0.1", []corev1.HostIP{{IP: "127.0.0.1"}}
		s.PodIP, s.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		s.StartTime = &started
		s.Conditions = conditions(corev1.ConditionTrue, started)
		ready := true
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: &ready,
			ContainerID: "praas-test://" + strconv.Itoa(cmd.Process.Pid),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}}}
	})
}

func conditions(ready corev1.ConditionStatus, at metav1.Time) []corev1.PodCondition {
	return []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: at},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: at},
		{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: at},
		{Type: corev1.PodReady, Status: ready, LastTransitionTime: at},
	}
}

// reap waits for the process and writes its end into the pod's status.
func (n *Node) reap(ctx context.Context, pod *corev1.Pod, p *podProc, c corev1.Container, started metav1.Time) {
	err := p.cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	} else if err != nil {
		code = 128
	}
	n.mu.Lock()
	p.exited = true
	if p.killTimer != nil {
		p.killTimer.Stop()
	}
	deleting := p.deleting
	n.mu.Unlock()
	close(p.done)
	finished := metav1.Now()
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	n.setStatus(ctx, pod.Name, pod.UID, func(s *corev1.PodStatus) {
		s.Phase = corev1.PodSucceeded
		if code != 0 {
			s.Phase = corev1.PodFailed
		}
		s.Conditions = conditions(corev1.ConditionFalse, finished)
		f := false
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: c.Name, Image: c.Image, ImageID: c.Image, Started: &f,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: reason, StartedAt: started, FinishedAt: finished}}}}
	})
	if deleting {
		n.finalDelete(ctx, pod.Name, pod.UID)
	}
	n.release(p)
}

// terminate sends SIGTERM once and SIGKILL when the grace period is over.
func (n *Node) terminate(p *podProc, pod *corev1.Pod) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p.deleting = true
	if p.termSent || p.exited {
		return
	}
	p.termSent = true
	grace := time.Duration(30) * time.Second
	if g := pod.DeletionGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.killTimer = time.AfterFunc(grace, func() { p.cmd.Process.Kill() })
}

// kill ends a pod's process at once (its object is gone).
func (n *Node) kill(p *podProc) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p.cmd != nil && !p.exited {
		p.cmd.Process.Kill()
	}
}

// finalDelete removes a pod object whose containers have ended.
func (n *Node) finalDelete(ctx context.Context, name string, uid types.UID) {
	zero := int64(0)
	err := n.client.CoreV1().Pods(n.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
		n.cfg.Logger.Warn("kubetest: delete pod", "pod", name, "err", err)
	}
}

// setStatus updates the status of pod name/uid with f, retrying conflicts.
func (n *Node) setStatus(ctx context.Context, name string, uid types.UID, f func(*corev1.PodStatus)) {
	pods := n.client.CoreV1().Pods(n.cfg.Namespace)
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pod.UID != uid {
			return apierrors.NewNotFound(corev1.Resource("pods"), name)
		}
		f(&pod.Status)
		_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		n.cfg.Logger.Warn("kubetest: pod status", "pod", name, "err", err)
	}
}

// baseEnv is what a container image would set.
var baseEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}

// environment builds a container's environment as a kubelet does: envFrom
// first, then env in order, with $(VAR) references to what came before.
func (n *Node) environment(ctx context.Context, pod *corev1.Pod, c corev1.Container, ip string) ([]string, error) {
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, kv := range baseEnv {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	set("HOSTNAME", pod.Name)
	secrets := map[string]*corev1.Secret{}
	secret := func(name string) (*corev1.Secret, error) {
		if s, ok := secrets[name]; ok {
			return s, nil
		}
		s, err := n.client.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("secret %s: %w", name, err)
		}
		secrets[name] = s
		return s, nil
	}
	for _, from := range c.EnvFrom {
		if from.SecretRef == nil {
			return nil, errors.New("only secretRef is supported in envFrom")
		}
		s, err := secret(from.SecretRef.Name)
		if err != nil {
			return nil, err
		}
		for k, v := range s.Data {
			set(from.Prefix+k, string(v))
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vals))
			continue
		}
		switch {
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "status.podIP":
				set(e.Name, ip)
			case "status.hostIP":
				set(e.Name, "127.0.0.1")
			case "metadata.name":
				set(e.Name, pod.Name)
			case "metadata.namespace":
				set(e.Name, pod.Namespace)
			case "spec.nodeName":
				set(e.Name, n.cfg.Name)
			default:
				return nil, fmt.Errorf("field %s is not supported", e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			s, err := secret(e.ValueFrom.SecretKeyRef.Name)
			if err != nil {
				return nil, err
			}
			set(e.Name, string(s.Data[e.ValueFrom.SecretKeyRef.Key]))
		default:
			return nil, fmt.Errorf("env %s: only fieldRef and secretKeyRef are supported", e.Name)
		}
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vals[k])
	}
	return env, nil
}

// expand replaces $(VAR) with the value of VAR when it is defined, and $$
// with $, as Kubernetes expands env values.
func expand(s string, vals map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteByte('$')
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := vals[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
