package ui

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestServesFilesWithTypesAndPolicy(t *testing.T) {
	h := Handler()
	for _, tc := range []struct{ path, contentType, contains string }{
		{"/ui", "text/html; charset=utf-8", "<title>praas dashboard</title>"},
		{"/ui/", "text/html; charset=utf-8", "<title>praas dashboard</title>"},
		{"/ui/index.html", "text/html; charset=utf-8", `src="/ui/app.js"`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "text/event-stream"},
		{"/ui/style.css", "text/css; charset=utf-8", ".status-swapped"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	} {
		resp := get(t, h, tc.path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != tc.contentType {
			t.Fatalf("%s: %d %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(string(body), tc.contains) {
			t.Fatalf("%s does not contain %q", tc.path, tc.contains)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
			t.Fatalf("%s: CSP %q", tc.path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: no nosniff", tc.path)
		}
		// Revalidation: an unchanged file costs a 304.
		if etag := resp.Header.Get("ETag"); etag == "" {
			t.Fatalf("%s: no ETag", tc.path)
		} else if again := get(t, h, tc.path, "If-None-Match", etag); again.StatusCode != http.StatusNotModified {
			t.Fatalf("%s with its ETag: %d, want 304", tc.path, again.StatusCode)
		}
	}
	resp := get(t, h, "/ui/nope.js")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(body), `"code":"not_found"`) {
		t.Fatalf("missing file: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// The policy forbids inline scripts and styles and anything from another
// origin: the files must need none of them, or the page breaks (and would
// not work offline).
func TestFilesNeedNothingThePolicyForbids(t *testing.T) {
	inlineScript := regexp.MustCompile(`(?s)<script[^>]*>\s*[^<\s]`)
	handlerAttr := regexp.MustCompile(`(?i)\son[a-z]+\s*=`)
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := static.ReadFile(p)
		s := string(b)
		if strings.HasSuffix(p, ".html") {
			if inlineScript.MatchString(s) {
				t.Errorf("%s has an inline script", p)
			}
			if handlerAttr.MatchString(s) {
				t.Errorf("%s has an inline event handler", p)
			}
			if strings.Contains(s, "style=") || strings.Contains(s, "<style") {
				t.Errorf("%s has an inline style", p)
			}
		}
		for _, m := range external.FindAllString(s, -1) {
			if m != "http://www.w3.org" { // the SVG namespace, a name, not a fetch
				t.Errorf("%s refers to another origin: %s", p, m)
			}
		}
		if strings.HasSuffix(p, ".js") && (strings.Contains(s, "innerHTML") || strings.Contains(s, "eval(")) {
			t.Errorf("%s writes HTML from strings or evaluates code", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
