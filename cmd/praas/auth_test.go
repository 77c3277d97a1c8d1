package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// apiCall makes one REST call with key (none if empty) and returns the
// status and the error code of the answer.
func apiCall(t *testing.T, method, path, key, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, endpoint()+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e struct{ Code string }
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e.Code
}

func TestAuth(t *testing.T) {
	startControlPlane(t, t.TempDir())
	admin := token()
	mustPraas(t, "", "app", "create", "a")
	mustPraas(t, "", "app", "create", "b")
	mustPraas(t, "", "process", "create", "a", "--pid", "p1")
	mustPraas(t, "", "process", "create", "b", "--pid", "p1")
	var keyA struct{ ID, Token string }
	if err := json.Unmarshal([]byte(mustPraas(t, "", "key", "create", "a", "--name", "ci", "--json")), &keyA); err != nil || keyA.Token == "" {
		t.Fatalf("key create: %v %+v", err, keyA)
	}

	tests := []struct {
		name, method, path, key, body string
		status                        int
		code                          string
	}{
		{"no key", "GET", "/v1/apps", "", "", 401, "unauthenticated"},
		{"malformed key", "GET", "/v1/apps", "not-a-key", "", 401, "unauthenticated"},
		{"unknown key", "GET", "/v1/apps", "praas_000000000000_nope", "", 401, "unauthenticated"},
		{"wrong secret", "GET", "/v1/apps", keyA.Token[:len(keyA.Token)-2] + "xx", "", 401, "unauthenticated"},
		{"no key on invoke", "POST", "/v1/apps/a/invoke/echo?pid=p1", "", "x", 401, "unauthenticated"},
		{"no key on process record", "GET", "/v1/apps/b/processes/p1", "", "", 401, "unauthenticated"},
		{"app key on its app", "GET", "/v1/apps/a/processes/p1", keyA.Token, "", 200, ""},
		{"app key invokes its app", "POST", "/v1/apps/a/invoke/echo?pid=p1", keyA.Token, "x", 200, ""},
		{"app key on another app", "GET", "/v1/apps/b/processes/p1", keyA.Token, "", 403, "permission_denied"},
		{"app key invokes another app", "POST", "/v1/apps/b/invoke/echo?pid=p1", keyA.Token, "x", 403, "permission_denied"},
		{"app key deletes another app", "DELETE", "/v1/apps/b", keyA.Token, "", 403, "permission_denied"},
		{"app key sends to another app", "POST", "/v1/apps/b/processes/p1/messages/k", keyA.Token, "x", 403, "permission_denied"},
		{"app key creates an app", "POST", "/v1/apps", keyA.Token, `{"name":"c"}`, 403, "permission_denied"},
		{"app key creates an app with a host path", "POST", "/v1/apps", keyA.Token, `{"name":"c","image":"/bin/sh"}`, 403, "permission_denied"},
		{"app key makes an admin key", "POST", "/v1/keys", keyA.Token, "", 403, "permission_denied"},
		{"app key makes a key of another app", "POST", "/v1/apps/b/keys", keyA.Token, "", 403, "permission_denied"},
		{"admin anywhere", "GET", "/v1/apps/b/processes/p1", admin, "", 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, code := apiCall(t, tc.method, tc.path, tc.key, tc.body)
			if status != tc.status || code != tc.code {
				t.Fatalf("%s %s: %d %q, want %d %q", tc.method, tc.path, status, code, tc.status, tc.code)
			}
		})
	}

	// An app's key sees its own app only.
	t.Setenv(EnvToken, keyA.Token)
	if out := mustPraas(t, "", "app", "list"); !strings.Contains(out, "a ") || strings.Contains(out, "\nb ") {
		t.Fatalf("app list with a's key:\n%s", out)
	}
	// Rotation: the old token stops working, the new one works.
	var rotated struct{ ID, Token string }
	if err := json.Unmarshal([]byte(mustPraas(t, "", "key", "rotate", "a", keyA.ID, "--json")), &rotated); err != nil {
		t.Fatal(err)
	}
	if status, _ := apiCall(t, "GET", "/v1/apps/a", keyA.Token, ""); status != 401 {
		t.Fatalf("rotated-out key: %d, want 401", status)
	}
	if status, _ := apiCall(t, "GET", "/v1/apps/a", rotated.Token, ""); status != 200 {
		t.Fatalf("rotated key: %d, want 200", status)
	}
	// Revocation.
	t.Setenv(EnvToken, admin)
	mustPraas(t, "", "key", "revoke", "a", rotated.ID)
	if status, _ := apiCall(t, "GET", "/v1/apps/a", rotated.Token, ""); status != 401 {
		t.Fatalf("revoked key: %d, want 401", status)
	}
	// The last admin key cannot be revoked.
	var admins []struct{ ID string }
	_ = json.Unmarshal([]byte(mustPraas(t, "", "key", "list", "--admin", "--json")), &admins)
	if len(admins) != 1 {
		t.Fatalf("admin keys: %+v", admins)
	}
	if _, _, code := runCLI(t, "", "key", "revoke", "--admin", admins[0].ID); code == 0 {
		t.Fatal("revoked the last admin key")
	}
}

// TestFirstStartKey: without an admin key given, the first start makes one,
// shows it once and keeps it for the CLI, which then works as is.
func TestFirstStartKey(t *testing.T) {
	t.Setenv("PRAAS_ADMIN_KEY", "")
	t.Setenv(EnvToken, "")
	t.Setenv(EnvConfig, filepath.Join(t.TempDir(), "config.json"))
	data := t.TempDir()
	start := func() (*exec.Cmd, string, []string) {
		cmd := exec.Command(praasBin, "up", "--data", data, "--listen", "127.0.0.1:0")
		cmd.Env = os.Environ()
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 8)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		first := <-lines
		var ep string
		for _, f := range strings.Fields(first) {
			if strings.HasPrefix(f, "http://") {
				ep = f
			}
		}
		var more []string
		timeout := time.After(time.Second)
	collect:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break collect
				}
				more = append(more, l)
			case <-timeout:
				break collect
			}
		}
		return cmd, ep, more
	}
	cmd, ep, more := start()
	t.Setenv(EnvEndpoint, ep)
	if len(more) != 2 || !strings.HasPrefix(more[1], "praas_") {
		t.Fatalf("first start showed %q, want the admin key", more)
	}
	mustPraas(t, "", "app", "create", "demo") // the CLI found the key in the config file
	stop := func(cmd *exec.Cmd) {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
	stop(cmd)
	cfg, _ := os.ReadFile(os.Getenv(EnvConfig))
	if !bytes.Contains(cfg, []byte(more[1])) {
		t.Fatalf("config file does not hold the key:\n%s", cfg)
	}
	if fi, err := os.Stat(os.Getenv(EnvConfig)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode: %v %v", fi.Mode(), err)
	}
	cmd, _, more = start()
	defer stop(cmd)
	if len(more) != 0 {
		t.Fatalf("a later start showed %q again", more)
	}
}
