package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/backend/backendtest"
	"github.com/praas-dev/praas/backend/kubernetes"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/kubetest"
)

// envRole makes the test binary act as the test image in the node agent's
// processes.
const envRole = "PRAAS_KUBETEST_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(envRole) == "image" {
		backendtest.ImageMain()
	}
	os.Exit(m.Run())
}

// testImage is the container image the node agent runs as this test binary.
const testImage = "praas.test/backendtest:v1"

type env struct {
	client k8s.Interface
	ns     string
	node   *kubetest.Node
}

func setup(t *testing.T) env {
	t.Helper()
	client, _ := kubetest.Client(t)
	ns := kubetest.Namespace(t, client, "praas-bt")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	node := kubetest.StartNode(t, kubetest.Config{
		Client: client, Namespace: ns, LogDir: t.TempDir(),
		Images: map[string][]string{testImage: {self}},
	})
	return env{client: client, ns: ns, node: node}
}

func (e env) backend(t *testing.T) *kubernetes.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b, err := kubernetes.New(ctx, kubernetes.Config{Client: e.client, Namespace: e.ns, BuiltinImage: "praas.test/praas:v1"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

func splitID(t *testing.T, id string) (string, types.UID) {
	name, uid, ok := strings.Cut(id, "@")
	if !ok {
		t.Fatalf("handle ID %q is not NAME@UID", id)
	}
	return name, types.UID(uid)
}

func TestConformance(t *testing.T) {
	e := setup(t)
	backendtest.Run(t, backendtest.Harness{
		New:  func(t *testing.T) backend.Backend { return e.backend(t) },
		Spec: backend.Spec{Image: testImage, Env: []string{envRole + "=image", "GORACE=atexit_sleep_ms=0"}},
		Output: func(h backend.Handle) ([]byte, error) {
			name, uid, ok := strings.Cut(h.ID, "@")
			if !ok {
				return nil, fmt.Errorf("bad ID %q", h.ID)
			}
			return os.ReadFile(e.node.LogPath(name, types.UID(uid)))
		},
		BadImages: []string{"UPPER/case", "name:", "/abs/path", "a b"},
		Stale: func(t *testing.T, h backend.Handle) backend.Handle {
			name, _ := splitID(t, h.ID)
			h.ID = name + "@00000000-0000-0000-0000-000000000000"
			return h
		},
	})
}

// TestPodShape checks what a process pod looks like: labels, credentials
// only in a Secret the pod owns, the runtime's addresses from the pod IP,
// resources; and that the Secret goes with the pod.
func TestPodShape(t *testing.T) {
	e := setup(t)
	b := e.backend(t)
	ctx := t.Context()
	h, err := b.Start(ctx, backend.Spec{
		App: "Shop_1", PID: "p.1", Generation: 42, Image: testImage,
		Env:       []string{envRole + "=image", "PLAIN=$(NOT_EXPANDED)"},
		Secrets:   []string{"PRAAS_PROCESS_TOKEN=tok3n"},
		Resources: backend.Resources{MilliCPU: 250, MemoryBytes: 64 << 20},
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { b.Kill(context.Background(), h) })
	name, uid := splitID(t, h.ID)
	pod, err := e.client.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{kubernetes.LabelApp: "Shop_1", kubernetes.LabelPID: "p.1", kubernetes.LabelGeneration: "42", kubernetes.LabelProcess: "true"} {
		if got := pod.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	c := pod.Spec.Containers[0]
	for _, ev := range c.Env {
		if strings.Contains(ev.Value, "tok3n") || ev.Name == "PRAAS_PROCESS_TOKEN" {
			t.Errorf("the credential is in the pod spec: %+v", ev)
		}
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef == nil || c.EnvFrom[0].SecretRef.Name != name {
		t.Errorf("envFrom = %+v, want the Secret %s", c.EnvFrom, name)
	}
	if got := c.Resources.Limits.Cpu().MilliValue(); got != 250 {
		t.Errorf("cpu limit %dm, want 250m", got)
	}
	if got := c.Resources.Limits.Memory().Value(); got != 64<<20 {
		t.Errorf("memory limit %d, want %d", got, 64<<20)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restart policy %q, want Never", pod.Spec.RestartPolicy)
	}
	sec, err := e.client.CoreV1().Secrets(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the pod's Secret: %v", err)
	}
	if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != uid {
		t.Errorf("Secret owners %+v, want the pod %s", sec.OwnerReferences, uid)
	}

	// The runtime sees its credential and its own address.
	var addr string
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok bool
		if addr, ok = b.Address(h); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pod never became ready with an IP")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ip := strings.TrimSuffix(addr, fmt.Sprintf(":%d", kubernetes.DefaultPort))
	out := waitLog(t, e.node, name, uid, "backendtest ready")
	for _, want := range []string{
		`"PRAAS_PROCESS_TOKEN=tok3n"`,
		fmt.Sprintf(`"PRAAS_LISTEN=%s"`, addr),
		fmt.Sprintf(`"PRAAS_ADVERTISE=%s"`, ip),
		`"PLAIN=$(NOT_EXPANDED)"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the runtime's environment lacks %s:\n%s", want, out)
		}
	}

	if err := b.Stop(ctx, h); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	waitGone(t, func() error {
		_, err := e.client.CoreV1().Secrets(e.ns).Get(ctx, name, metav1.GetOptions{})
		return err
	}, "the Secret of a stopped pod")
	waitGone(t, func() error {
		_, err := e.client.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
		return err
	}, "a stopped pod")
}

// TestEndedPodRemoved: a pod whose runtime exits on its own is removed with
// its Secret; its exit status reaches Wait.
func TestEndedPodRemoved(t *testing.T) {
	e := setup(t)
	b := e.backend(t)
	ctx := t.Context()
	h, err := b.Start(ctx, backend.Spec{App: "a", PID: "p", Generation: 1, Image: testImage,
		Env: []string{envRole + "=image", backendtest.EnvExit + "=7"}, Secrets: []string{"S=1"}})
	if err != nil {
		t.Fatal(err)
	}
	exit, err := b.Wait(ctx, h)
	if err != nil || exit.Code != 7 {
		t.Errorf("Wait = %+v, %v; want status 7", exit, err)
	}
	name, _ := splitID(t, h.ID)
	waitGone(t, func() error {
		_, err := e.client.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
		return err
	}, "the ended pod")
	waitGone(t, func() error {
		_, err := e.client.CoreV1().Secrets(e.ns).Get(ctx, name, metav1.GetOptions{})
		return err
	}, "the ended pod's Secret")
}

func TestCheckImageBuiltin(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b, err := kubernetes.New(ctx, kubernetes.Config{Client: e.client, Namespace: e.ns})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CheckImage(ctx, "builtin"); !errors.Is(err, errs.ErrInvalidArgument) {
		t.Errorf("builtin without a praas image: %v, want ErrInvalidArgument", err)
	}
	for _, ok := range []string{"registry.example:5000/team/fn:v1.2", "fn", "ghcr.io/a/b@sha256:" + strings.Repeat("a", 64)} {
		if got, err := b.CheckImage(ctx, ok); err != nil || got != ok {
			t.Errorf("CheckImage(%q) = %q, %v", ok, got, err)
		}
	}
}

func waitLog(t *testing.T, n *kubetest.Node, name string, uid types.UID, line string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(n.LogPath(name, uid))
		if strings.Contains(string(b), line) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s never wrote %q; its output:\n%s", name, line, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitGone(t *testing.T, get func() error, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := get()
		if err != nil && strings.Contains(err.Error(), "not found") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still there after 30s (%v)", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
