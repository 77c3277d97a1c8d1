package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"testing"
)

// REST sends the control plane relays to an active process are held to its
// mailbox limit like any other: past it they get 429 resource_exhausted with
// Retry-After, and the process keeps every message it acknowledged.
func TestRESTSendMailboxLimit(t *testing.T) {
	startControlPlane(t, t.TempDir(), "--max-mailbox", "3")
	mustPraas(t, "", "app", "create", "demo")
	mustPraas(t, "", "process", "create", "demo", "--pid", "p1")
	expect(t, "x", "invoke", "demo", "echo", "--pid", "p1", "--data", "x") // active: sends are relayed live
	send := func(data string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", os.Getenv(EnvEndpoint)+"/v1/apps/demo/processes/p1/messages/k", bytes.NewBufferString(data))
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
	for _, m := range []string{"m1", "m2", "m3"} {
		if status, code, _ := send(m); status != http.StatusNoContent {
			t.Fatalf("send %s: %d %s", m, status, code)
		}
	}
	if status, code, retry := send("m4"); status != http.StatusTooManyRequests || code != "resource_exhausted" || retry == "" {
		t.Fatalf("send past the mailbox limit: %d %s Retry-After %q, want 429 resource_exhausted with Retry-After", status, code, retry)
	}
	for _, want := range []string{"m1", "m2", "m3"} {
		expect(t, want, "invoke", "demo", "recv", "--pid", "p1", "--data", "ANY k 1000")
	}
}
