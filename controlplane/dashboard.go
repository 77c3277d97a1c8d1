package controlplane

import (
	"github.com/praas-dev/praas/controlplane/ui"
)

// uiRoutes serves the web dashboard (package ui): the page at /ui and
// /ui/, its files at /ui/{file}. They are public: they hold no data, and
// the page reads the API with the key its user gives it.
func (s *Server) uiRoutes(m *routeMux) {
	h := ui.Handler()
	m.Handle("GET /ui", h)
	m.Handle("GET /ui/{file...}", h)
}
