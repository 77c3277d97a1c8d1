package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// The REST API answers bad input with a fitting status and a JSON error.
func TestRESTErrors(t *testing.T) {
	startControlPlane(t, t.TempDir(), "--max-payload", "1024")
	base := os.Getenv(EnvEndpoint)
	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")

	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"bad JSON", "POST", "/v1/apps", `{"name":`, 400, "invalid_argument"},
		{"unknown field", "POST", "/v1/apps", `{"name":"x","color":"red"}`, 400, "invalid_argument"},
		{"trailing JSON", "POST", "/v1/apps", `{"name":"x"} {}`, 400, "invalid_argument"},
		{"bad name", "POST", "/v1/apps", `{"name":"../etc"}`, 400, "invalid_argument"},
		{"relative image", "POST", "/v1/apps", `{"name":"x","image":"bin/app"}`, 400, "invalid_argument"},
		{"missing image", "POST", "/v1/apps", `{"name":"x","image":"/no/such/binary"}`, 400, "invalid_argument"},
		{"duplicate app", "POST", "/v1/apps", `{"name":"demo"}`, 409, "already_exists"},
		{"unknown app", "GET", "/v1/apps/nope", "", 404, "not_found"},
		{"unknown app processes", "GET", "/v1/apps/nope/processes", "", 404, "not_found"},
		{"duplicate pid", "POST", "/v1/apps/demo/processes", `{"pid":"p1"}`, 409, "already_exists"},
		{"bad pid", "POST", "/v1/apps/demo/processes", `{"pid":"a b"}`, 400, "invalid_argument"},
		{"unknown pid", "GET", "/v1/apps/demo/processes/nope", "", 404, "not_found"},
		{"swap unknown pid", "POST", "/v1/apps/demo/processes/nope/swap", "", 404, "not_found"},
		{"message to unknown pid", "POST", "/v1/apps/demo/processes/nope/messages/k", "x", 404, "not_found"},
		{"unknown function", "POST", "/v1/apps/demo/invoke/nosuch?pid=p1", "", 404, "not_found"},
		{"oversized input", "POST", "/v1/apps/demo/invoke/echo?pid=p1", strings.Repeat("x", 2048), 413, "resource_exhausted"},
		{"function error", "POST", "/v1/apps/demo/invoke/state-set?pid=p1", "no equals sign", 400, "invalid_argument"},
		{"unknown route", "GET", "/v2/apps", "", 404, "not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, bytes.NewBufferString(tc.body))
			req.Header.Set("Authorization", "Bearer "+token())
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			var body struct{ Error, Code string }
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatalf("status %d, body %q is not JSON", resp.StatusCode, raw)
			}
			if resp.StatusCode != tc.status || body.Code != tc.code || body.Error == "" {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
		})
	}
	// Nothing above hurt the process or the control plane.
	expect(t, "still fine", "invoke", "demo", "echo", "--pid", "p1", "--data", "still fine")
}

// Processes report usage; it accumulates across swaps.
func TestUsageReported(t *testing.T) {
	startControlPlane(t, t.TempDir())
	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")
	for range 5 {
		mustPraas(t, "abc", "invoke", "demo", "echo", "--pid", "p1", "--data", "-")
	}
	waitFor(t, 5*time.Second, "usage of 5 invocations", func() bool {
		u := processStatus(t, "demo", "p1").Usage
		return u.Invocations == 5 && u.BytesIn == 15 && u.BytesOut == 15 && u.BusyNanos > 0
	})
	mustPraas(t, "", "process", "swap", "demo", "p1")
	mustPraas(t, "abc", "invoke", "demo", "echo", "--pid", "p1", "--data", "-")
	waitFor(t, 5*time.Second, "usage across a swap", func() bool {
		return processStatus(t, "demo", "p1").Usage.Invocations == 6
	})
}
