package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

// An application at its process limit gets 429, with Retry-After, for one
// more process, whether created or picked by an invoke without a pid; its
// existing processes are unaffected.
func TestProcessesPerAppLimit(t *testing.T) {
	startControlPlane(t, t.TempDir(), "--max-processes-per-app", "2")
	base := os.Getenv(EnvEndpoint)
	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p2")
	mustPraas(t, "", "process", "swap", "demo", "p2")

	post := func(path, body string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+path, bytes.NewBufferString(body))
		req.Header.Set("Authorization", "Bearer "+token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var e struct{ Code string }
		_ = json.Unmarshal(raw, &e)
		return resp.StatusCode, e.Code, resp.Header.Get("Retry-After")
	}
	for _, tc := range []struct{ name, path, body string }{
		{"create", "/v1/apps/demo/processes", `{"pid":"p3"}`},
		{"create without pid", "/v1/apps/demo/processes", ``},
	} {
		if status, code, retry := post(tc.path, tc.body); status != http.StatusTooManyRequests || code != "resource_exhausted" || retry == "" {
			t.Fatalf("%s: %d %s Retry-After %q, want 429 resource_exhausted with Retry-After", tc.name, status, code, retry)
		}
	}
	// An invoke without a pid goes to the running p1 rather than a new one.
	expect(t, "fine", "invoke", "demo", "echo", "--data", "fine")
	// p2 is not new: it comes back.
	mustPraas(t, "", "process", "create", "demo", "--pid", "p2")
	mustPraas(t, "", "process", "delete", "demo", "p2")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p3")
}

// A process at --max-state-bytes refuses a change that grows its state:
// SetState fails with resource_exhausted, which the function returns, so
// the invoke fails as function_failed (HTTP 422: it ran; resource_exhausted
// would tell the caller it did not), and the state keeps what it had,
// through a swap.
func TestStateLimitThroughCLI(t *testing.T) {
	startControlPlane(t, t.TempDir(), "--max-state-bytes", "10000")
	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")
	first := mustPraas(t, "", "invoke", "demo", "state-fill", "--pid", "p1", "--data", "a 6000 1")
	_, errOut, code := runCLI(t, "", "invoke", "demo", "state-fill", "--pid", "p1", "--data", "b 6000 2")
	if code == 0 || !strings.Contains(errOut, "resource exhausted") {
		t.Fatalf("state past its limit: exit %d: %s", code, errOut)
	}
	req, _ := http.NewRequest("POST", os.Getenv(EnvEndpoint)+"/v1/apps/demo/invoke/state-fill?pid=p1", strings.NewReader("c 9000 3"))
	req.Header.Set("Authorization", "Bearer "+token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("REST invoke past the state limit: %s, want 422", resp.Status)
	}
	mustPraas(t, "", "process", "swap", "demo", "p1")
	if got := mustPraas(t, "", "invoke", "demo", "state-digest", "--pid", "p1", "--data", "a"); strings.TrimSpace(got) != strings.TrimSpace(first) {
		t.Fatalf("state a after the refusals and a swap: %q, want %q", got, first)
	}
	if _, errOut, code := runCLI(t, "", "invoke", "demo", "state-get", "--pid", "p1", "--data", "b"); code == 0 || !strings.Contains(errOut, "is not set") {
		t.Fatalf("state b, refused: exit %d: %s", code, errOut)
	}
}

// Resources are checked where they are given: the CLI refuses what is not a
// positive quantity, the REST API negative amounts; an app keeps what it
// was given.
func TestResourcesAreChecked(t *testing.T) {
	startControlPlane(t, t.TempDir())
	for _, args := range [][]string{
		{"app", "create", "bad", "--cpu", "lots"},
		{"app", "create", "bad", "--memory", "-1Gi"},
	} {
		if _, errOut, code := runCLI(t, "", args...); code == 0 || !strings.Contains(errOut, "positive quantity") {
			t.Fatalf("praas %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
	}
	req, _ := http.NewRequest("POST", os.Getenv(EnvEndpoint)+"/v1/apps", strings.NewReader(`{"name":"neg","resources":{"milli_cpu":-5}}`))
	req.Header.Set("Authorization", "Bearer "+token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("negative resources: %s, want 400", resp.Status)
	}
	mustPraas(t, "", "app", "create", "sized", "--cpu", "0.5", "--memory", "256Mi")
	var app struct {
		Resources struct {
			MilliCPU    int64 `json:"milli_cpu"`
			MemoryBytes int64 `json:"memory_bytes"`
		} `json:"resources"`
	}
	if err := json.Unmarshal([]byte(mustPraas(t, "", "app", "get", "sized", "--json")), &app); err != nil {
		t.Fatal(err)
	}
	if app.Resources.MilliCPU != 500 || app.Resources.MemoryBytes != 256<<20 {
		t.Fatalf("app resources %+v, want 500m and 256Mi", app.Resources)
	}
}
