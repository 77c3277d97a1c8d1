// Package ui is the control plane's web dashboard: one HTML page, a style
// sheet and a script, embedded in the binary and served at /ui with no
// build step and nothing fetched from elsewhere, so it works offline.
//
// The files hold no data and need no key: the script reads the REST API
// with fetch() (the key, when the control plane asks for one, is kept in
// the tab's sessionStorage and sent as a Bearer header) and follows
// GET /v1/events as a server-sent event stream read through fetch, so no
// token ever goes into a URL.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy is what the page may do: scripts, styles, images
// and requests of its own origin only; no inline script or style, no
// frames, no forms posting elsewhere.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Handler serves the dashboard: the page at /ui and /ui/, its files at
// /ui/NAME. Anything else under /ui/ is a JSON 404.
func Handler() http.Handler {
	assets := make(map[string]asset)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		assets[strings.TrimPrefix(p, "static/")] = asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("ui: embedded files unreadable: " + err.Error()) // a broken build, not a runtime condition
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/ui"), "/")
		if name == "" {
			name = "index.html"
		}
		a, ok := assets[name]
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if !ok {
			// JSON like every other error of the control plane's API.
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "the dashboard has no file " + r.URL.Path, "code": "not_found"})
			return
		}
		// Revalidated on every load, so an upgraded control plane serves
		// its own script at once; unchanged files cost a 304.
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Type", a.contentType)
		h.Set("ETag", a.etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}
