package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/praas-dev/praas/client"
)

func TestStatusCommand(t *testing.T) {
	startControlPlane(t, t.TempDir())
	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p2")
	mustPraas(t, "", "process", "swap", "demo", "p2")

	out := mustPraas(t, "", "status")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^replicas +1 live of 1$`),
		regexp.MustCompile(`(?m)^  cp-\S+ +` + regexp.QuoteMeta(endpoint()) + ` +live$`),
		regexp.MustCompile(`(?m)^apps +1$`),
		regexp.MustCompile(`(?m)^processes +2: 1 active, 1 swapped$`),
		regexp.MustCompile(`(?m)^metadata store +ok \(.+\)$`),
		regexp.MustCompile(`(?m)^swap store +ok \(.+\)$`),
	} {
		if !want.MatchString(out) {
			t.Fatalf("praas status lacks %s:\n%s", want, out)
		}
	}
	var st client.Status
	if err := json.Unmarshal([]byte(mustPraas(t, "", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Apps != 1 || st.TotalProcesses != 2 || st.Processes["active"] != 1 || !st.Healthy() || len(st.Replicas) != 1 {
		t.Fatalf("praas status --json: %+v", st)
	}

	// What the commands did is in the replica's events, in order.
	evs, err := testClient().Events(context.Background(), "demo", 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		if e.PID == "" || e.PID == "p2" {
			types = append(types, e.Type)
		}
	}
	want := []string{"app.created", "process.created", "process.started", "process.swapped_out"}
	if !slices.Equal(types, want) {
		t.Fatalf("events of demo and demo/p2: %v, want %v", types, want)
	}
	if after, err := testClient().Events(context.Background(), "demo", evs[len(evs)-1].Seq); err != nil || len(after) != 0 {
		t.Fatalf("events after the last: %v, %v", after, err)
	}
}

// A store that does not answer makes praas status say so and exit 7
// (retryable), with or without --json.
func TestStatusCommandUnhealthy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"version":"v","replica":"cp-a","replicas":[{"id":"cp-a","url":"http://a","live":true},{"id":"cp-b","url":"http://b","live":false}],
			"apps":0,"processes":{},"total_processes":0,
			"metadata_store":{"configured":true,"healthy":true,"latency_ns":1000},
			"swap_store":{"configured":true,"healthy":false,"latency_ns":2000000000,"error":"context deadline exceeded"}}`)
	}))
	defer srv.Close()
	t.Setenv(EnvEndpoint, srv.URL)
	out, errOut, code := runCLI(t, "", "status")
	if code != exitRetryable || !strings.Contains(errOut, "the swap store is unhealthy: context deadline exceeded") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^swap store +UNHEALTHY: context deadline exceeded$`),
		regexp.MustCompile(`(?m)^metadata store +ok \(1µs\)$`),
		regexp.MustCompile(`(?m)^replicas +1 live of 2$`),
		regexp.MustCompile(`(?m)^  cp-b +http://b +expired$`),
		regexp.MustCompile(`(?m)^processes +0$`),
	} {
		if !want.MatchString(out) {
			t.Fatalf("output lacks %s:\n%s", want, out)
		}
	}
	if out, _, code := runCLI(t, "", "status", "--json"); code != exitRetryable || !strings.Contains(out, `"healthy": false`) {
		t.Fatalf("--json: exit %d\n%s", code, out)
	}
}
