// Package kubernetes is the praas backend that runs every process as a pod
// in one Kubernetes namespace, through client-go.
//
// A process is one pod (restart policy Never) built from the app's
// container image; the builtin image is the praas image itself, run as
// `praas run-process`. The runtime's configuration (control-plane address,
// app, pid, generation, limits) is in the pod's env; its credentials
// (Spec.Secrets) are in a Secret of the same name, which the pod reads with
// envFrom and which is owned by the pod (so the cluster's garbage collector
// removes it with the pod) and also deleted by the backend whenever it
// removes the pod. The runtime listens on the pod IP and Config.Port, and
// advertises that address; the pod IP comes from the downward API.
//
// Labels: LabelProcess on every pod and Secret of the backend, LabelApp,
// LabelPID and LabelGeneration (label-safe forms; the exact app and pid are
// in annotations). A Handle's ID is "PODNAME@UID": a pod of the same name
// but another UID is another incarnation, and is never deleted through the
// handle (deletes carry a UID precondition).
//
// Each Backend runs one pod informer on the namespace (a watch, not
// polling) that tells readiness, pod IP and exits; Wait returns on its
// events. A pod that ended on its own is deleted, with its Secret, by the
// first instance that sees it (its exit status is kept for Wait). List
// reads the API server, so a fresh replica recovers the pods that run.
//
// Stop deletes the pod with a grace period (the kubelet sends SIGTERM, the
// runtime drains and swaps out, and exits), waits for it to end until the
// context is done, and then deletes it with a zero grace period, which is
// what Kill does: the pod object goes at once and the kubelet kills the
// container. A runtime may so outlive its pod object for a few seconds on a
// real node; the generation fences whatever it still reports.
//
// The backend does not set spec.nodeName: the cluster's scheduler places
// pods.
package kubernetes

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
)

// Labels and annotations on the backend's pods and Secrets.
const (
	LabelProcess    = "praas.dev/process" // "true" on everything the backend makes
	LabelApp        = "praas.dev/app"
	LabelPID        = "praas.dev/pid"
	LabelGeneration = "praas.dev/generation"

	AnnotationApp = "praas.dev/app"
	AnnotationPID = "praas.dev/pid"
)

// ContainerName is the name of the runtime's container in a process pod.
const ContainerName = "process"

// DefaultPort is the data-plane port of the runtime in its pod.
const DefaultPort = 7420

// EnvPodIP is the env variable (from the downward API) that holds the
// pod's IP; PRAAS_LISTEN and PRAAS_ADVERTISE refer to it.
const EnvPodIP = "PRAAS_POD_IP"

// keepExits is how long an observed exit stays known to Wait.
const keepExits = 10 * time.Minute

// killWait bounds how long Stop and Kill wait for a pod deleted with no
// grace period to be gone.
const killWait = 10 * time.Second

// Config configures the backend.
type Config struct {
	// Client talks to the API server (required).
	Client k8s.Interface
	// Namespace holds the process pods (required).
	Namespace string
	// BuiltinImage is the container image of the praas binary, which runs
	// the builtin image (required to run it).
	BuiltinImage string
	// Port is the runtime's data-plane port in its pod (default DefaultPort).
	Port int
	// ServiceAccount the pods run as; empty: the namespace's default, with
	// no API token mounted either way (processes never talk to the API
	// server).
	ServiceAccount string
	// ImagePullPolicy for process containers (default: the cluster's).
	ImagePullPolicy corev1.PullPolicy
	// DefaultResources apply when a Spec has none.
	DefaultResources backend.Resources
	// StopGrace is the termination grace period Stop asks for when its
	// context has no deadline (default 60s).
	StopGrace time.Duration
	// RunAsUser is the uid (and gid) of process containers (default
	// 65532, distroless's nonroot): the pods require a non-root user.
	RunAsUser int64
	// Labels are added to every pod (the NetworkPolicy may select them).
	Labels map[string]string
	Logger *slog.Logger
}

// Backend runs processes as pods.
type Backend struct {
	cfg      Config
	client   k8s.Interface
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	stop     context.CancelFunc

	mu      sync.Mutex
	changed chan struct{}         // closed and replaced on every pod event
	exits   map[types.UID]exitRec // pods seen ending, by UID
}

type exitRec struct {
	exit backend.Exit
	seen time.Time
}

var _ backend.Backend = (*Backend)(nil)

// New returns a backend and starts its pod informer; it returns once the
// informer has synced. Close stops it.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("kubernetes backend: %w: no client", errs.ErrInvalidArgument)
	}
	if msgs := validation.IsDNS1123Label(cfg.Namespace); len(msgs) > 0 {
		return nil, fmt.Errorf("kubernetes backend: %w: namespace %q: %s", errs.ErrInvalidArgument, cfg.Namespace, strings.Join(msgs, "; "))
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("kubernetes backend: %w: port %d", errs.ErrInvalidArgument, cfg.Port)
	}
	if cfg.RunAsUser <= 0 {
		cfg.RunAsUser = 65532
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := &Backend{
		cfg:     cfg,
		client:  cfg.Client,
		changed: make(chan struct{}),
		exits:   make(map[types.UID]exitRec),
	}
	b.factory = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelProcess + "=true" }))
	b.informer = b.factory.Core().V1().Pods().Informer()
	_, err := b.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { b.observe(obj, false) },
		UpdateFunc: func(_, obj any) { b.observe(obj, false) },
		DeleteFunc: func(obj any) { b.observe(obj, true) },
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: %w", err)
	}
	ictx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.stop = cancel
	b.factory.Start(ictx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), b.informer.HasSynced) {
		cancel()
		b.factory.Shutdown()
		return nil, fmt.Errorf("kubernetes backend: pod informer did not sync: %w", cmp.Or(ctx.Err(), errors.New("stopped")))
	}
	return b, nil
}

// Close stops the informer. Pods keep running.
func (b *Backend) Close() {
	b.stop()
	b.factory.Shutdown()
}

// observe records what a pod event tells and wakes waiters.
func (b *Backend) observe(obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	exit, ended := podExit(pod)
	if deleted && !ended {
		exit, ended = backend.Exit{Code: -1, Reason: "pod deleted", At: time.Now()}, true
	}
	b.mu.Lock()
	if ended {
		if _, known := b.exits[pod.UID]; !known {
			b.exits[pod.UID] = exitRec{exit: exit, seen: time.Now()}
		}
	}
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	if ended && !deleted && pod.DeletionTimestamp == nil {
		// It ended on its own: remove it and its credentials.
		go b.remove(context.Background(), pod.Name, pod.UID, 0)
	}
	if deleted {
		go b.deleteSecret(context.Background(), pod.Name, pod.UID)
	}
}

// podExit tells whether a pod's runtime has ended, and how.
func podExit(pod *corev1.Pod) (backend.Exit, bool) {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != ContainerName || cs.State.Terminated == nil {
			continue
		}
		t := cs.State.Terminated
		at := t.FinishedAt.Time
		if at.IsZero() {
			at = time.Now()
		}
		reason := fmt.Sprintf("exited with status %d", t.ExitCode)
		if t.Reason != "" {
			reason += " (" + t.Reason + ")"
		}
		return backend.Exit{Code: int(t.ExitCode), Reason: reason, At: at}, true
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return backend.Exit{Code: -1, Reason: "pod " + strings.ToLower(string(pod.Status.Phase)), At: time.Now()}, true
	}
	return backend.Exit{}, false
}

// imageRE is a container image reference: [host[:port]/]path[:tag][@digest].
var imageRE = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)

// CheckImage accepts "builtin" (or ""), when Config.BuiltinImage is set,
// and container image references. It does not ask a registry: a missing
// image shows when the pod does not start.
func (b *Backend) CheckImage(ctx context.Context, image string) (string, error) {
	if image == "" || image == backend.BuiltinImage {
		if b.cfg.BuiltinImage == "" {
			return "", fmt.Errorf("%w: the builtin image needs the praas container image configured", errs.ErrInvalidArgument)
		}
		return backend.BuiltinImage, nil
	}
	if len(image) > 512 || !imageRE.MatchString(image) {
		return "", fmt.Errorf("%w: image %q is not a container image reference (registry/name:tag)", errs.ErrInvalidArgument, image)
	}
	return image, nil
}

// labelValue returns s if it is a valid label value, else a hash of it.
func labelValue(s string) string {
	if len(validation.IsValidLabelValue(s)) == 0 {
		return s
	}
	return "h-" + shortHash(s)
}

var nameChars = regexp.MustCompile(`[^a-z0-9-]+`)

// podName makes a pod name from app and pid: readable, unique by a random
// suffix, a DNS-1123 label.
func podName(app, pid string, gen uint64) string {
	clean := func(s string, n int) string {
		s = nameChars.ReplaceAllString(strings.ToLower(s), "-")
		if len(s) > n {
			s = s[:n]
		}
		return strings.Trim(s, "-")
	}
	var r [4]byte
	rand.Read(r[:])
	name := fmt.Sprintf("praas-%s-%s-%d", clean(app, 20), clean(pid, 16), gen%1_000_000)
	return nameChars.ReplaceAllString(name, "-") + "-" + hex.EncodeToString(r[:])
}

func shortHash(s string) string {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return strconv.FormatUint(h, 36)
}

// splitEnv turns KEY=VALUE pairs into a map and the keys in first-seen
// order; later pairs win.
func splitEnv(kvs []string) (map[string]string, []string, error) {
	m := make(map[string]string, len(kvs))
	var order []string
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, nil, fmt.Errorf("%w: env entry %q is not KEY=VALUE", errs.ErrInvalidArgument, kv)
		}
		if _, seen := m[k]; !seen {
			order = append(order, k)
		}
		m[k] = v
	}
	return m, order, nil
}

// quoteRefs escapes $( so Kubernetes does not expand it in a value.
func quoteRefs(v string) string { return strings.ReplaceAll(v, "$(", "$$(") }

// Start creates the process's Secret and pod. It returns once both exist;
// the pod is scheduled and started by the cluster.
func (b *Backend) Start(ctx context.Context, spec backend.Spec) (backend.Handle, error) {
	if err := ctx.Err(); err != nil {
		return backend.Handle{}, err
	}
	if spec.App == "" || spec.PID == "" {
		return backend.Handle{}, fmt.Errorf("kubernetes backend: %w: no app or pid", errs.ErrInvalidArgument)
	}
	image, args := spec.Image, []string(nil)
	if image == "" || image == backend.BuiltinImage {
		if b.cfg.BuiltinImage == "" {
			return backend.Handle{}, fmt.Errorf("kubernetes backend: %w: no praas image for the builtin image", errs.ErrInvalidArgument)
		}
		image, args = b.cfg.BuiltinImage, []string{"run-process"}
	}
	envMap, envOrder, err := splitEnv(spec.Env)
	if err != nil {
		return backend.Handle{}, fmt.Errorf("kubernetes backend: %w", err)
	}
	secretMap, _, err := splitEnv(spec.Secrets)
	if err != nil {
		return backend.Handle{}, fmt.Errorf("kubernetes backend: secrets: %w", err)
	}
	name := podName(spec.App, spec.PID, spec.Generation)
	gen := strconv.FormatUint(spec.Generation, 10)
	labels := map[string]string{
		LabelProcess:    "true",
		LabelApp:        labelValue(spec.App),
		LabelPID:        labelValue(spec.PID),
		LabelGeneration: gen,
	}
	podLabels := maps.Clone(b.cfg.Labels)
	if podLabels == nil {
		podLabels = map[string]string{}
	}
	maps.Copy(podLabels, labels)
	annotations := map[string]string{AnnotationApp: spec.App, AnnotationPID: spec.PID}

	// The pod's own address, then the runtime's listen and advertise
	// addresses built from it (dependent env: $(VAR) is expanded).
	env := []corev1.EnvVar{{Name: EnvPodIP, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"},
	}}}
	listen := net.JoinHostPort("$("+EnvPodIP+")", strconv.Itoa(b.cfg.Port))
	for _, k := range envOrder {
		if _, secret := secretMap[k]; secret || k == cpapi.EnvListen || k == cpapi.EnvAdvertise || k == EnvPodIP {
			continue // secrets win, as later entries do on the local backend
		}
		env = append(env, corev1.EnvVar{Name: k, Value: quoteRefs(envMap[k])})
	}
	env = append(env,
		corev1.EnvVar{Name: cpapi.EnvListen, Value: listen},
		corev1.EnvVar{Name: cpapi.EnvAdvertise, Value: "$(" + EnvPodIP + ")"})

	res := spec.Resources
	if res == (backend.Resources{}) {
		res = b.cfg.DefaultResources
	}
	var rr corev1.ResourceRequirements
	if res.MilliCPU > 0 || res.MemoryBytes > 0 {
		rr.Requests, rr.Limits = corev1.ResourceList{}, corev1.ResourceList{}
		if res.MilliCPU > 0 {
			q := *resource.NewMilliQuantity(res.MilliCPU, resource.DecimalSI)
			rr.Requests[corev1.ResourceCPU], rr.Limits[corev1.ResourceCPU] = q, q
		}
		if res.MemoryBytes > 0 {
			q := *resource.NewQuantity(res.MemoryBytes, resource.BinarySI)
			rr.Requests[corev1.ResourceMemory], rr.Limits[corev1.ResourceMemory] = q, q
		}
	}

	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: b.cfg.Namespace, Labels: labels, Annotations: annotations},
		StringData: secretMap,
		Type:       corev1.SecretTypeOpaque,
	}
	secrets := b.client.CoreV1().Secrets(b.cfg.Namespace)
	if _, err := secrets.Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return backend.Handle{}, fmt.Errorf("kubernetes backend: create secret %s: %w", name, err)
	}
	grace := int64(b.cfg.StopGrace / time.Second)
	noToken := false
	nonRoot := true
	noEscalation := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: b.cfg.Namespace, Labels: podLabels, Annotations: annotations},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ServiceAccountName:            b.cfg.ServiceAccount,
			AutomountServiceAccountToken:  &noToken,
			EnableServiceLinks:            &noToken,
			TerminationGracePeriodSeconds: &grace,
			// What the "restricted" Pod Security Standard asks for.
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &nonRoot,
				RunAsUser:      &b.cfg.RunAsUser,
				RunAsGroup:     &b.cfg.RunAsUser,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            ContainerName,
				Image:           image,
				Args:            args,
				Env:             env,
				EnvFrom:         []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}},
				Ports:           []corev1.ContainerPort{{Name: "data-plane", ContainerPort: int32(b.cfg.Port), Protocol: corev1.ProtocolTCP}},
				Resources:       rr,
				ImagePullPolicy: b.cfg.ImagePullPolicy,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &noEscalation,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	created, err := b.client.CoreV1().Pods(b.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killWait)
		b.deleteSecret(dctx, name, "")
		cancel()
		return backend.Handle{}, fmt.Errorf("kubernetes backend: create pod %s: %w", name, err)
	}
	// The Secret goes with its pod wherever a garbage collector runs; the
	// backend deletes it too, for clusters (and tests) without one.
	owner := fmt.Sprintf(`{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Pod","name":%q,"uid":%q}]}}`, name, created.UID)
	if _, err := secrets.Patch(ctx, name, types.StrategicMergePatchType, []byte(owner), metav1.PatchOptions{}); err != nil {
		b.cfg.Logger.Warn("kubernetes backend: make the pod own its secret", "pod", name, "err", err)
	}
	h := backend.Handle{ID: name + "@" + string(created.UID), App: spec.App, PID: spec.PID, Generation: spec.Generation}
	b.cfg.Logger.Debug("process pod created", "app", spec.App, "pid", spec.PID, "generation", spec.Generation, "pod", name, "image", image)
	return h, nil
}

// parseID splits a handle ID into pod name and UID.
func parseID(id string) (name string, uid types.UID, ok bool) {
	n, u, ok := strings.Cut(id, "@")
	if !ok || len(validation.IsDNS1123Subdomain(n)) > 0 || u == "" {
		return "", "", false
	}
	return n, types.UID(u), true
}

// state is what is known of the pod of a handle.
type state struct {
	ended bool
	exit  backend.Exit
	pod   *corev1.Pod // if running
}

// lookup returns the state of the pod name/uid: from the informer's cache
// and the exits it saw, and, when the cache does not have the pod (it may
// not have caught up with a pod just created), from the API server.
func (b *Backend) lookup(ctx context.Context, name string, uid types.UID) (state, error) {
	b.mu.Lock()
	if e, ok := b.exits[uid]; ok {
		b.mu.Unlock()
		return state{ended: true, exit: e.exit}, nil
	}
	b.mu.Unlock()
	obj, exists, err := b.informer.GetStore().GetByKey(b.cfg.Namespace + "/" + name)
	if err == nil && exists {
		if pod, ok := obj.(*corev1.Pod); ok && pod.UID == uid {
			if exit, ended := podExit(pod); ended {
				return state{ended: true, exit: exit}, nil
			}
			return state{pod: pod}, nil
		}
	}
	pod, err := b.client.CoreV1().Pods(b.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && pod.UID != uid) {
		return state{ended: true, exit: goneExit()}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("kubernetes backend: get pod %s: %w", name, err)
	}
	if exit, ended := podExit(pod); ended {
		return state{ended: true, exit: exit}, nil
	}
	return state{pod: pod}, nil
}

// goneExit is the exit of a pod that is gone and whose end was not seen.
func goneExit() backend.Exit { return backend.Exit{Code: -1, Reason: "pod gone", At: time.Now()} }

// Wait returns once the pod of h has ended (or is gone), with its exit
// status if this instance saw it.
func (b *Backend) Wait(ctx context.Context, h backend.Handle) (backend.Exit, error) {
	name, uid, ok := parseID(h.ID)
	if !ok {
		return goneExit(), nil
	}
	for {
		b.mu.Lock()
		changed := b.changed
		b.mu.Unlock()
		st, err := b.lookup(ctx, name, uid)
		if err != nil {
			if ctx.Err() != nil {
				return backend.Exit{}, ctx.Err()
			}
			return backend.Exit{}, err
		}
		if st.ended {
			b.prune()
			return st.exit, nil
		}
		// The informer tells every change of the pod; a pod it has not
		// seen yet (created a moment ago elsewhere) is looked up again
		// now and then, in case it went before the informer listed it.
		var recheck <-chan time.Time
		if st.pod != nil && !b.cached(name, uid) {
			recheck = time.After(time.Second)
		}
		select {
		case <-changed:
		case <-recheck:
		case <-ctx.Done():
			return backend.Exit{}, ctx.Err()
		}
	}
}

// cached reports whether the informer has the pod name/uid.
func (b *Backend) cached(name string, uid types.UID) bool {
	obj, exists, err := b.informer.GetStore().GetByKey(b.cfg.Namespace + "/" + name)
	if err != nil || !exists {
		return false
	}
	pod, ok := obj.(*corev1.Pod)
	return ok && pod.UID == uid
}

func (b *Backend) prune() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for uid, e := range b.exits {
		if time.Since(e.seen) > keepExits {
			delete(b.exits, uid)
		}
	}
}

// remove deletes the pod name (only the incarnation uid) with the grace
// period given, and its Secret if the pod is gone. A pod already gone is no
// error.
func (b *Backend) remove(ctx context.Context, name string, uid types.UID, grace int64) error {
	err := b.client.CoreV1().Pods(b.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{
		GracePeriodSeconds: &grace,
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		err = nil // gone, or another incarnation: not ours to delete
	}
	if err != nil {
		return fmt.Errorf("kubernetes backend: delete pod %s: %w", name, err)
	}
	if grace == 0 {
		b.deleteSecret(ctx, name, uid)
	}
	return nil
}

// deleteSecret deletes the process Secret name, unless it belongs to another
// pod than uid (when uid is set).
func (b *Backend) deleteSecret(ctx context.Context, name string, uid types.UID) {
	secrets := b.client.CoreV1().Secrets(b.cfg.Namespace)
	if uid != "" {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return
		}
		for _, o := range s.OwnerReferences {
			if o.Kind == "Pod" && o.UID != uid {
				return
			}
		}
	}
	err := secrets.Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		b.cfg.Logger.Warn("kubernetes backend: delete secret", "secret", name, "err", err)
	}
}

// Stop deletes the pod with a grace period as long as ctx allows (the
// kubelet sends SIGTERM, then SIGKILL once it ends), waits until it has
// ended, and when ctx ends first, deletes it with no grace period and says
// so in its error.
func (b *Backend) Stop(ctx context.Context, h backend.Handle) error {
	name, uid, ok := parseID(h.ID)
	if !ok {
		return nil
	}
	st, err := b.lookup(ctx, name, uid)
	if err != nil || st.ended {
		return err
	}
	grace := b.cfg.StopGrace
	if dl, ok := ctx.Deadline(); ok {
		// Past the deadline Stop kills it anyway; a little more lets the
		// kill come from here, with a clear error.
		grace = time.Until(dl) + 2*time.Second
	}
	if err := b.remove(ctx, name, uid, max(1, int64((grace+time.Second-1)/time.Second))); err != nil {
		return err
	}
	if _, err := b.Wait(ctx, h); err == nil {
		return nil
	}
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killWait)
	defer cancel()
	if err := b.Kill(kctx, h); err != nil {
		return fmt.Errorf("kubernetes backend: pod %s did not stop in time (%w), and killing it failed: %w", name, ctx.Err(), err)
	}
	return fmt.Errorf("kubernetes backend: pod %s did not stop in time (%w) and was killed", name, ctx.Err())
}

// Kill deletes the pod with no grace period and waits until it is gone.
func (b *Backend) Kill(ctx context.Context, h backend.Handle) error {
	name, uid, ok := parseID(h.ID)
	if !ok {
		return nil
	}
	if err := b.remove(ctx, name, uid, 0); err != nil {
		return err
	}
	_, err := b.Wait(ctx, h)
	return err
}

// List returns the pods of the namespace that run a process now (from the
// API server, not the cache: a fresh replica must see every pod), and
// removes process Secrets whose pod is gone.
func (b *Backend) List(ctx context.Context) ([]backend.Handle, error) {
	pods, err := b.client.CoreV1().Pods(b.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelProcess + "=true"})
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: list pods: %w", err)
	}
	var hs []backend.Handle
	names := make(map[string]bool, len(pods.Items))
	for i := range pods.Items {
		pod := &pods.Items[i]
		names[pod.Name] = true
		if _, ended := podExit(pod); ended {
			continue
		}
		h, ok := handleOf(pod)
		if !ok {
			continue
		}
		b.mu.Lock()
		_, gone := b.exits[pod.UID]
		b.mu.Unlock()
		if !gone {
			hs = append(hs, h)
		}
	}
	b.sweepSecrets(ctx, names)
	slices.SortFunc(hs, func(x, y backend.Handle) int {
		return cmp.Or(strings.Compare(x.App, y.App), strings.Compare(x.PID, y.PID), cmp.Compare(x.Generation, y.Generation))
	})
	return hs, nil
}

// sweepSecrets deletes process Secrets older than a minute whose pod is not
// in pods: left by a Start that failed half-way.
func (b *Backend) sweepSecrets(ctx context.Context, pods map[string]bool) {
	list, err := b.client.CoreV1().Secrets(b.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelProcess + "=true"})
	if err != nil {
		b.cfg.Logger.Warn("kubernetes backend: list secrets", "err", err)
		return
	}
	for _, s := range list.Items {
		if !pods[s.Name] && time.Since(s.CreationTimestamp.Time) > time.Minute {
			b.deleteSecret(ctx, s.Name, "")
		}
	}
}

// handleOf reads a process pod's handle from its annotations and labels.
func handleOf(pod *corev1.Pod) (backend.Handle, bool) {
	app, pid := pod.Annotations[AnnotationApp], pod.Annotations[AnnotationPID]
	gen, err := strconv.ParseUint(pod.Labels[LabelGeneration], 10, 64)
	if app == "" || pid == "" || err != nil {
		return backend.Handle{}, false
	}
	return backend.Handle{ID: pod.Name + "@" + string(pod.UID), App: app, PID: pid, Generation: gen}, true
}

// Address returns the data-plane address of the pod of h (pod IP and the
// runtime's port) once the pod is ready, from the informer.
func (b *Backend) Address(h backend.Handle) (string, bool) {
	name, uid, ok := parseID(h.ID)
	if !ok {
		return "", false
	}
	obj, exists, err := b.informer.GetStore().GetByKey(b.cfg.Namespace + "/" + name)
	if err != nil || !exists {
		return "", false
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.UID != uid || pod.Status.PodIP == "" || !podReady(pod) {
		return "", false
	}
	return net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(b.cfg.Port)), true
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RESTConfig returns the API server's client config: from kubeconfig if
// set, else in-cluster when running in a pod, else from $KUBECONFIG or
// ~/.kube/config.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		} else if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// InClusterNamespace returns the namespace of the pod this runs in, if it
// runs in one.
func InClusterNamespace() (string, bool) {
	b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "", false
	}
	return string(bytes.TrimSpace(b)), true
}
