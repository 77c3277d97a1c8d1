package workers_test

import (
	"os/exec"
	"testing"

	"github.com/praas-dev/praas/internal/testenv"
)

// TestPythonSDKUnit runs the Python SDK's own unit tests (unittest, against
// a fake runtime), and mypy --strict on the SDK where mypy is installed.
func TestPythonSDKUnit(t *testing.T) {
	python := testenv.Python(t)
	cmd := exec.Command(python, "-m", "unittest", "discover", "-s", "../../sdk/python/tests")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python unit tests: %v\n%s", err, out)
	}
	if exec.Command(python, "-m", "mypy", "--version").Run() != nil {
		t.Log("mypy is not installed: the SDK's types are not checked")
		return
	}
	cmd = exec.Command(python, "-m", "mypy", "--strict", "praas")
	cmd.Dir = "../../sdk/python"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mypy --strict: %v\n%s", err, out)
	}
}
