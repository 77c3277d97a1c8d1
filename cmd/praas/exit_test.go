package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
)

// serveErrors starts a control plane that answers GET of process PID with
// the error whose code PID names, as the real one would (status and JSON
// body); "too_large" is a payload over its limit (413), "hang" never
// answers.
func serveErrors(t *testing.T) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		if name == "hang" {
			<-r.Context().Done()
			return
		}
		var err error = errs.New(errs.ParseCode(name), "it went wrong: "+name)
		if name == "too_large" {
			err = errs.ErrTooLarge
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(errs.HTTPStatusOf(err))
		w.Write([]byte(`{"error":"` + err.Error() + `","code":"` + errs.CodeOf(err).String() + `"}`))
	}))
	t.Cleanup(srv.Close)
	t.Setenv(EnvEndpoint, srv.URL)
}

// The exit code tells the control plane's error code apart, as docs/cli.md
// lists them, and the message is one line on stderr.
func TestExitCodes(t *testing.T) {
	serveErrors(t)
	for _, tc := range []struct {
		code string
		want int
	}{
		{"not_found", exitNotFound},
		{"already_exists", exitConflict},
		{"failed_precondition", exitConflict},
		{"invalid_argument", exitInvalid},
		{"too_large", exitInvalid},
		{"unauthenticated", exitDenied},
		{"permission_denied", exitDenied},
		{"unavailable", exitRetryable},
		{"resource_exhausted", exitRetryable},
		{"function_failed", exitFunctionFailed},
		{"outcome_unknown", exitOutcomeUnknown},
		{"deadline_exceeded", exitOutcomeUnknown},
		{"internal", exitFailure},
		{"unknown", exitFailure},
	} {
		t.Run(tc.code, func(t *testing.T) {
			out, errOut, code := runTerm(t, untouchedStdin{t}, false, "process", "get", "demo", tc.code)
			if code != tc.want || out != "" || !strings.HasPrefix(errOut, "praas: ") || strings.Count(errOut, "\n") != 1 {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and one line praas: ...", code, out, errOut, tc.want)
			}
		})
	}

	t.Run("interrupted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		var out, errOut syncBuffer
		if code := runIn(ctx, untouchedStdin{t}, &out, &errOut, false, "process", "get", "demo", "hang"); code != exitInterrupted {
			t.Errorf("exit %d (stderr %q), want %d", code, errOut.String(), exitInterrupted)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		addr := freeAddr(t)
		t.Setenv(EnvEndpoint, "http://"+addr)
		if _, errOut, code := runTerm(t, untouchedStdin{t}, false, "app", "list"); code != exitRetryable ||
			errOut != "praas: no control plane at http://"+addr+": connection refused (is praas up running? $PRAAS_ENDPOINT names another)\n" {
			t.Errorf("exit %d (stderr %q), want %d and where it looked", code, errOut, exitRetryable)
		}
	})
}

// A command line that does not say what to do exits with exitUsage and one
// line that points to the command's --help, before anything is sent.
func TestUsageErrors(t *testing.T) {
	fake := startFakeControlPlane(t)
	for _, tc := range []struct {
		args []string
		help string // the command whose help the message names
	}{
		{[]string{"frob"}, "praas"},
		{[]string{"aap", "list"}, "praas"},
		{[]string{"app", "frob"}, "praas app"},
		{[]string{"app", "list", "--bogus"}, "praas app list"},
		{[]string{"--bogus"}, "praas"},
		{[]string{"app", "get"}, "praas app get"},
		{[]string{"process", "get", "demo"}, "praas process get"},
		{[]string{"invoke", "demo"}, "praas invoke"},
		{[]string{"invoke", "demo", "echo", "--data", "x", "--file", "y"}, "praas invoke"},
		{[]string{"key", "list"}, "praas key list"},
		{[]string{"key", "revoke", "--admin", "a", "b"}, "praas key revoke"},
		{[]string{"app", "create", "x", "--cpu", "lots"}, "praas app create"},
		{[]string{"completion", "tcsh"}, "praas completion"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := runTerm(t, untouchedStdin{t}, false, tc.args...)
			if code != exitUsage || out != "" || !strings.HasPrefix(errOut, "praas: ") || strings.Count(errOut, "\n") != 1 ||
				!strings.Contains(errOut, "see "+tc.help+" --help") {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and one line pointing to %s --help", code, out, errOut, exitUsage, tc.help)
			}
		})
	}
	if path, _ := fake.last(); path != "" {
		t.Errorf("a usage error reached the control plane: %s", path)
	}
	// A group of commands alone shows its help and succeeds.
	if out, errOut, code := runTerm(t, untouchedStdin{t}, false, "app"); code != exitOK || !strings.Contains(out, "Available Commands") {
		t.Errorf("praas app: exit %d, stdout %q, stderr %q; want its help", code, out, errOut)
	}
}
