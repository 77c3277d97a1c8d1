package kubetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/praas-dev/praas/internal/testenv"
)

// Client returns a client of the test API server named by
// PRAAS_TEST_KUBECONFIG (see testenv.Kubeconfig: without one the test fails
// under CI and is skipped otherwise), and its REST config.
func Client(t testing.TB) (k8s.Interface, *rest.Config) {
	t.Helper()
	path := testenv.Kubeconfig(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", path, err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kubernetes client: %v", err)
	}
	return c, cfg
}

// Namespace creates a namespace of its own for the test, named after
// prefix, and deletes it when the test ends.
func Namespace(t testing.TB, c k8s.Interface, prefix string) string {
	t.Helper()
	var b [3]byte
	rand.Read(b[:])
	name := strings.ToLower(prefix) + "-" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// No controller manager empties it: delete what tests leave first.
		zero := int64(0)
		c.CoreV1().Pods(name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		c.CoreV1().Secrets(name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		c.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		c.CoreV1().Nodes().Delete(ctx, "node-"+name, metav1.DeleteOptions{})
	})
	return name
}

// StartNode starts a node agent for the test's namespace and closes it when
// the test ends.
func StartNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("node agent: %v", err)
	}
	t.Cleanup(n.Close)
	return n
}
