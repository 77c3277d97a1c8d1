package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
)

var pythonNotice sync.Once

// Python returns the python3 the worker tests run: /usr/bin/python3 (the
// one a sandboxed process sees), else python3 from PATH. Without one it
// fails the test under CI and skips it (with a notice) otherwise.
func Python(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	if p, err := exec.LookPath("python3"); err == nil {
		return p
	}
	if InCI() {
		t.Fatal("python3 is not installed, and CI must not skip the Python tests; apt-get install python3")
		return ""
	}
	msg := fmt.Sprintf("SKIPPING Python tests in %s: python3 is not installed (apt-get install python3)", callerPackage())
	pythonNotice.Do(func() {
		w, done := noticeOut()
		fmt.Fprintln(w, msg)
		done()
	})
	t.Skip(msg)
	return ""
}
