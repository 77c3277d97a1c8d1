package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// serveJSON starts a control plane that answers GET of each path with its
// JSON body and 404 otherwise.
func serveJSON(t *testing.T, bodies map[string]string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := bodies[r.URL.Path]
		if r.Method == http.MethodDelete && ok {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.Method != http.MethodGet || !ok {
			w.WriteHeader(http.StatusNotFound)
			body = `{"error":"no such thing","code":"not_found"}`
		}
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	t.Setenv(EnvEndpoint, srv.URL)
}

const (
	sampleApp     = `{"name":"demo","image":"builtin","resources":{"milli_cpu":250},"epoch":3,"created_at":"2026-11-22T07:00:00Z"}`
	sampleProcess = `{"app":"demo","pid":"p1","status":"active","address":"127.0.0.1:4000","token":"tok","handle":"123",` +
		`"usage":{"invocations":5,"busy_ns":1000,"bytes_in":2,"bytes_out":3},"resources":{},` +
		`"created_at":"2026-11-22T07:00:00Z","updated_at":"2026-11-22T07:00:01Z","last_active":"2026-11-22T07:00:02Z","generation":2,"owner":"r1",` +
		`"snapshot":"demo/p1/2","snapshot_bytes":2048,"swapped_at":"2026-11-22T07:00:03Z","revision":9}`
	sampleKey          = `{"id":"k1","app":"demo","name":"ci","created_at":"2026-11-22T07:00:00Z"}`
	sampleUsageFigures = `"invocations":5,"compute_seconds":0.000001,"state_gib_seconds":2,"bytes_in":2,"bytes_out":3,` +
		`"swap_bytes_held":4096,"swap_gib_seconds":0,"compute_ns":1000,"state_byte_seconds":2147483648,"swap_byte_seconds":0`
	sampleUsage = `{"app":"demo","since":"2026-11-22T07:00:00Z","until":"2026-11-22T08:00:00Z","bucket_seconds":60,"windowed":false,` +
		`"totals":{` + sampleUsageFigures + `},"processes":[{"pid":"p1","status":"swapped",` + sampleUsageFigures + `}]}`
)

// Every read command prints, with --json, the API's objects with the API's
// field names as one JSON document and a newline; without, a human view.
func TestReadCommandsJSON(t *testing.T) {
	serveJSON(t, map[string]string{
		"/v1/apps":                   `{"apps":[` + sampleApp + `]}`,
		"/v1/apps/demo":              sampleApp,
		"/v1/apps/demo/processes":    `{"processes":[` + sampleProcess + `]}`,
		"/v1/apps/demo/processes/p1": sampleProcess,
		"/v1/apps/demo/keys":         `{"keys":[` + sampleKey + `]}`,
		"/v1/apps/demo/usage":        sampleUsage,
		"/v1/apps/empty/processes":   `{"processes":[]}`,
		"/v1/apps/nothing/processes": `{}`,
	})
	tests := []struct {
		args  []string
		want  string // the JSON the command must print, as the API has it
		human string // a piece of the human view
	}{
		{[]string{"app", "list"}, `[` + sampleApp + `]`, "NAME"},
		{[]string{"app", "get", "demo"}, sampleApp, "cpu 250m"},
		{[]string{"process", "list", "demo"}, `[` + sampleProcess + `]`, "127.0.0.1:4000"},
		{[]string{"process", "get", "demo", "p1"}, sampleProcess, "5 invocations"},
		{[]string{"key", "list", "demo"}, `[` + sampleKey + `]`, "ci"},
		{[]string{"usage", "demo"}, sampleUsage, "TOTAL"},
		{[]string{"process", "list", "empty"}, `[]`, "PID"},
		{[]string{"process", "list", "nothing"}, `[]`, "PID"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := runTerm(t, untouchedStdin{t}, false, append(tc.args, "--json")...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if !strings.HasSuffix(out, "}\n") && !strings.HasSuffix(out, "]\n") {
				t.Errorf("--json output does not end with a newline after the document: %q", out)
			}
			dec := json.NewDecoder(strings.NewReader(out))
			var got, want any
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("--json output is not JSON: %v\n%s", err, out)
			}
			if dec.More() {
				t.Fatalf("--json output holds more than one document:\n%s", out)
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("--json printed\n%s\nwant the API's\n%s", out, tc.want)
			}

			out, errOut, code = runTerm(t, untouchedStdin{t}, false, tc.args...)
			if code != 0 || !strings.Contains(out, tc.human) || strings.Contains(out, "{") {
				t.Errorf("without --json: exit %d, stdout %q (stderr %q); want a human view with %q", code, out, errOut, tc.human)
			}
		})
	}
}

// A deletion says so in a line for people, and prints nothing with --json:
// there is no object, and stdout stays valid (empty) JSON input.
func TestDeleteOutput(t *testing.T) {
	serveJSON(t, map[string]string{"/v1/apps/demo": sampleApp})
	if out, errOut, code := runTerm(t, untouchedStdin{t}, false, "app", "delete", "demo"); code != 0 || out != "app demo deleted\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, errOut, code := runTerm(t, untouchedStdin{t}, false, "app", "delete", "demo", "--json"); code != 0 || out != "" {
		t.Errorf("--json: exit %d, stdout %q, stderr %q; want nothing", code, out, errOut)
	}
}
