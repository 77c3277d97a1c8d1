package controlplane

import (
	"net/http"

	"github.com/praas-dev/praas/controlplane/ui"
)

// uiRoutes serves the web dashboard (package ui) at /ui. Its files are
// public: they hold no data, and the page reads the API with the key its
// user gives it.
func (s *Server) uiRoutes(m *http.ServeMux) {
	h := ui.Handler()
	m.Handle("GET /ui", h)
	m.Handle("GET /ui/", h)
}
