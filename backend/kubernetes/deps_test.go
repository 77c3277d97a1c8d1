package kubernetes_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The process runtime and the function SDK never import the Kubernetes
// client: an image of the user's functions stays small, and a process
// cannot reach the API server through praas code.
func TestRuntimeDoesNotImportClient(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/praas-dev/praas", "github.com/praas-dev/praas/process").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "k8s.io/") {
			t.Errorf("the runtime depends on %s", pkg)
		}
	}
}
