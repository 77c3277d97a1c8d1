package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// completions runs `praas __complete ARGS...` (what the shell scripts call)
// and returns the offered words with their descriptions, and the exit code.
func completions(t *testing.T, args ...string) ([]string, int) {
	t.Helper()
	out, errOut, code := runTerm(t, untouchedStdin{t}, false, append([]string{"__complete"}, args...)...)
	var words []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" && !strings.HasPrefix(line, ":") { // ":4" is the directive
			words = append(words, line)
		}
	}
	if code != 0 {
		t.Logf("stderr: %s", errOut)
	}
	return words, code
}

// APP and PID arguments and --pid complete with what the control plane has.
func TestDynamicCompletion(t *testing.T) {
	serveJSON(t, map[string]string{
		"/v1/apps":                `{"apps":[` + sampleApp + `,{"name":"other","image":"builtin","resources":{},"epoch":0,"created_at":"2026-11-22T07:00:00Z"}]}`,
		"/v1/apps/demo/processes": `{"processes":[` + sampleProcess + `,{"app":"demo","pid":"q7","status":"swapped","usage":{},"resources":{}}]}`,
		"/v1/apps/demo/keys":      `{"keys":[` + sampleKey + `]}`,
		"/v1/keys":                `{"keys":[{"id":"adm1","name":"root","created_at":"2026-11-22T07:00:00Z"}]}`,
	})
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"app", "get", ""}, []string{"demo\timage builtin", "other\timage builtin"}},
		{[]string{"app", "get", "ot"}, []string{"other\timage builtin"}},
		{[]string{"app", "get", "demo", ""}, nil}, // one argument only
		{[]string{"process", "list", ""}, []string{"demo\timage builtin", "other\timage builtin"}},
		{[]string{"process", "get", "demo", ""}, []string{"p1\tactive", "q7\tswapped"}},
		{[]string{"process", "swap", "demo", "q"}, []string{"q7\tswapped"}},
		{[]string{"send", "demo", "p", ""}, nil},
		{[]string{"send", "demo", ""}, []string{"p1\tactive", "q7\tswapped"}},
		{[]string{"invoke", "demo", "echo", "--pid", ""}, []string{"p1\tactive", "q7\tswapped"}},
		{[]string{"invoke", "d"}, []string{"demo\timage builtin"}},
		{[]string{"key", "revoke", "demo", ""}, []string{"k1\tci"}},
		{[]string{"key", "rotate", "--admin", ""}, []string{"adm1\troot"}},
		{[]string{"process", "get", "nosuch", ""}, nil}, // the 404 is not shown
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got, code := completions(t, tc.args...)
			if code != 0 || strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("exit %d, completions %q, want %q", code, got, tc.want)
			}
		})
	}
}

// A control plane that does not answer makes completion offer nothing
// after completionTimeout, without an error.
func TestCompletionGivesUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(srv.Close)
	t.Setenv(EnvEndpoint, srv.URL)
	start := time.Now()
	got, code := completions(t, "app", "get", "")
	if code != 0 || len(got) != 0 {
		t.Errorf("exit %d, completions %q; want none, silently", code, got)
	}
	if d := time.Since(start); d > completionTimeout+3*time.Second {
		t.Errorf("completion took %v, over its timeout %v", d, completionTimeout)
	}
}
