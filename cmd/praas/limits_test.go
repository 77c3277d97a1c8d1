package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
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
