package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
)

var chromiumNotice sync.Once

// Chromium returns the headless browser the dashboard tests drive:
// $PRAAS_CHROMIUM if set, else Debian's /usr/bin/chromium, else chromium
// from PATH. Without one it fails the test under CI and skips it (with a
// notice) otherwise.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PRAAS_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if InCI() {
		t.Fatal("chromium is not installed, and CI must not skip the dashboard test; apt-get install chromium")
		return ""
	}
	msg := fmt.Sprintf("SKIPPING the dashboard test in %s: chromium is not installed (apt-get install chromium)", callerPackage())
	chromiumNotice.Do(func() {
		w, done := noticeOut()
		fmt.Fprintln(w, msg)
		done()
	})
	t.Skip(msg)
	return ""
}
