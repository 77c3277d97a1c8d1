package controlplane

import (
	"net/http"
	"time"

	"github.com/praas-dev/praas/internal/names"
	"github.com/praas-dev/praas/store"
)

// appView is an application as the API shows it: without its secret.
type appView struct {
	Name      string          `json:"name"`
	Image     string          `json:"image"`
	Resources store.Resources `json:"resources"`
	Epoch     uint64          `json:"epoch"`
	CreatedAt time.Time       `json:"created_at"`
}

func viewApp(a store.App) appView {
	return appView{Name: a.Name, Image: a.Image, Resources: a.Resources, Epoch: a.Epoch, CreatedAt: a.CreatedAt}
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name      string          `json:"name"`
		Image     string          `json:"image"`
		Resources store.Resources `json:"resources"`
	}
	if err := readJSON(r, &req, false); err != nil {
		writeError(w, s.log, err)
		return
	}
	if err := names.App(req.Name); err != nil {
		writeError(w, s.log, err)
		return
	}
	if err := req.Resources.Validate(); err != nil {
		writeError(w, s.log, err)
		return
	}
	image, err := s.cfg.Backend.CheckImage(r.Context(), req.Image)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	app := store.App{Name: req.Name, Image: image, Resources: req.Resources, Secret: randomHex(32), CreatedAt: time.Now().UTC()}
	if err := s.cfg.Metadata.CreateApp(r.Context(), app); err != nil {
		writeError(w, s.log, err)
		return
	}
	s.log.Info("app created", "app", app.Name, "image", app.Image)
	s.emit(Event{Type: EventAppCreated, App: app.Name})
	writeJSON(w, http.StatusCreated, viewApp(app))
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	apps, err := s.cfg.Metadata.ListApps(r.Context())
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	views := make([]appView, 0, len(apps))
	c := callerOf(r)
	for _, a := range apps {
		if c.may(a.Name) { // an app's key sees its own app only
			views = append(views, viewApp(a))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"apps": views})
}

// app loads the app named in the path, answering 404 itself if absent.
func (s *Server) app(w http.ResponseWriter, r *http.Request) (store.App, bool) {
	app, err := s.cfg.Metadata.GetApp(r.Context(), r.PathValue("app"))
	if err != nil {
		writeError(w, s.log, err)
		return app, false
	}
	return app, true
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request) {
	if app, ok := s.app(w, r); ok {
		writeJSON(w, http.StatusOK, viewApp(app))
	}
}

func (s *Server) deleteApp(w http.ResponseWriter, r *http.Request) {
	app, ok := s.app(w, r)
	if !ok {
		return
	}
	procs, err := s.cfg.Metadata.ListProcesses(r.Context(), app.Name)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	for _, p := range procs {
		if err := s.removeProcess(r.Context(), p); err != nil {
			if !s.forward(w, r, err) {
				writeError(w, s.log, err)
			}
			return
		}
	}
	if err := s.cfg.Metadata.DeleteApp(r.Context(), app.Name); err != nil {
		writeError(w, s.log, err)
		return
	}
	s.metrics.forgetApp(app.Name)
	s.log.Info("app deleted", "app", app.Name)
	s.emit(Event{Type: EventAppDeleted, App: app.Name})
	w.WriteHeader(http.StatusNoContent)
}
