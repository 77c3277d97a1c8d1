// Package testenv hands tests the real servers they run against (Redis and
// an S3-compatible store), as the URLs in PRAAS_TEST_REDIS and PRAAS_TEST_S3
// that `eval "$(scripts/test-servers.sh start)"` exports.
//
// A test whose server is not configured never passes silently:
//
//   - when CI is set (CI=true, as .ci/run sets it) the test fails, because CI
//     must run every test;
//   - otherwise it is skipped, and once per test binary (that is, per
//     package) a line "SKIPPING Redis tests in PKG: ..." goes to the
//     developer's terminal. `go test ./...` discards everything a passing
//     package writes to stdout and stderr, so the line is written to
//     /dev/tty when there is one, and to stderr when there is not (where
//     `go test -v`, `go test -json` and single-package runs show it).
package testenv

import (
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Environment variables that name the test servers.
const (
	EnvRedis = "PRAAS_TEST_REDIS" // redis://host:port/db
	EnvS3    = "PRAAS_TEST_S3"    // s3://bucket?endpoint=host:port&...
	// EnvKubeconfig names the kubeconfig of the test API server that
	// scripts/kube-test-apiserver.sh starts.
	EnvKubeconfig = "PRAAS_TEST_KUBECONFIG"
)

// StartCommand starts the test servers and exports their URLs.
const StartCommand = `eval "$(scripts/test-servers.sh start)"`

// Redis returns the URL of the test Redis server. Without one it fails the
// test under CI and skips it (with a notice) otherwise.
func Redis(t testing.TB) string {
	t.Helper()
	return redisServer.url(t)
}

// S3 returns the URL of the test S3-compatible store. Without one it fails
// the test under CI and skips it (with a notice) otherwise.
func S3(t testing.TB) string {
	t.Helper()
	return s3Server.url(t)
}

// KubeStartCommand starts the test API server and exports its kubeconfig.
const KubeStartCommand = `eval "$(scripts/kube-test-apiserver.sh start)"`

// Kubeconfig returns the path of the test API server's kubeconfig. Without
// one it fails the test under CI and skips it (with a notice) otherwise.
func Kubeconfig(t testing.TB) string {
	t.Helper()
	return kubeServer.url(t)
}

// InCI reports whether the tests run in CI: the CI environment variable is
// set to a true value (true, 1, ...), as CI systems and .ci/run set it.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

type server struct {
	name   string // as the notice names it
	env    string
	start  string // the command that starts it (default StartCommand)
	notice sync.Once
}

var (
	redisServer = &server{name: "Redis", env: EnvRedis}
	s3Server    = &server{name: "S3", env: EnvS3}
	kubeServer  = &server{name: "Kubernetes", env: EnvKubeconfig, start: KubeStartCommand}
)

// noticeOut opens where the skip notice goes; tests replace it.
var noticeOut = terminalOrStderr

func (s *server) url(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(s.env); u != "" {
		return u
	}
	start := s.start
	if start == "" {
		start = StartCommand
	}
	if InCI() {
		t.Fatalf("%s not set, and CI must not skip the %s tests; run %s first", s.env, s.name, start)
		return ""
	}
	msg := fmt.Sprintf("SKIPPING %s tests in %s: %s not set; run %s", s.name, callerPackage(), s.env, start)
	s.notice.Do(func() {
		w, done := noticeOut()
		fmt.Fprintln(w, msg)
		done()
	})
	t.Skip(msg)
	return ""
}

// terminalOrStderr returns the controlling terminal if there is one, else
// stderr, and a function to call after writing.
func terminalOrStderr() (io.Writer, func()) {
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		return tty, func() { tty.Close() }
	}
	return os.Stderr, func() {}
}

// modulePrefix is the import path of the module with a trailing slash,
// derived from this package's own path.
var modulePrefix = strings.TrimSuffix(reflect.TypeFor[server]().PkgPath(), "internal/testenv")

// callerPackage returns the module-relative path of the package whose test
// called Redis or S3 ("store/redis"), or "this package" if it cannot tell.
func callerPackage() string {
	pcs := make([]uintptr, 16)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	own := modulePrefix + "internal/testenv."
	for {
		f, more := frames.Next()
		if f.Function != "" && (!strings.HasPrefix(f.Function, own) || strings.HasSuffix(f.File, "_test.go")) {
			return packageOf(f.Function)
		}
		if !more {
			return "this package"
		}
	}
}

// packageOf returns the package of a function name such as
// "github.com/praas-dev/praas/store/redis_test.serverURL", relative to the
// module and without a _test suffix: "store/redis".
func packageOf(function string) string {
	slash := strings.LastIndexByte(function, '/') + 1
	pkg := function
	if dot := strings.IndexByte(function[slash:], '.'); dot >= 0 {
		pkg = function[:slash+dot]
	}
	pkg = strings.TrimSuffix(pkg, "_test")
	if rel, ok := strings.CutPrefix(pkg, modulePrefix); ok {
		return rel
	}
	if pkg+"/" == modulePrefix {
		return "."
	}
	return pkg
}
