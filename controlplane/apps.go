package controlplane

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// appView is an application as the API shows it: without its secret.
type appView struct {
	Name      string    `json:"name"`
	Image     string    `json:"image"`
	Epoch     uint64    `json:"epoch"`
	CreatedAt time.Time `json:"created_at"`
}

func viewApp(a store.App) appView {
	return appView{Name: a.Name, Image: a.Image, Epoch: a.Epoch, CreatedAt: a.CreatedAt}
}

// BuiltinImage names the demo image compiled into the praas binary.
const BuiltinImage = "builtin"

// checkImage accepts "builtin" or the absolute path of an executable file.
func checkImage(image string) (string, error) {
	if image == "" || image == BuiltinImage {
		return BuiltinImage, nil
	}
	if !filepath.IsAbs(image) {
		return "", fmt.Errorf("%w: image %q: give %q or an absolute path to an image binary", errs.ErrInvalidArgument, image, BuiltinImage)
	}
	fi, err := os.Stat(image)
	if err != nil {
		return "", fmt.Errorf("%w: image %q: %v", errs.ErrInvalidArgument, image, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%w: image %q is not an executable file", errs.ErrInvalidArgument, image)
	}
	return image, nil
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name  string `json:"name"`
		Image string `json:"image"`
	}
	if err := readJSON(r, &req, false); err != nil {
		writeError(w, s.log, err)
		return
	}
	if err := validName("app name", req.Name); err != nil {
		writeError(w, s.log, err)
		return
	}
	image, err := checkImage(req.Image)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	app := store.App{Name: req.Name, Image: image, Secret: randomHex(32), CreatedAt: time.Now().UTC()}
	if err := s.cfg.Metadata.CreateApp(r.Context(), app); err != nil {
		writeError(w, s.log, err)
		return
	}
	s.log.Info("app created", "app", app.Name, "image", app.Image)
	writeJSON(w, http.StatusCreated, viewApp(app))
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	apps, err := s.cfg.Metadata.ListApps(r.Context())
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	views := make([]appView, 0, len(apps))
	for _, a := range apps {
		views = append(views, viewApp(a))
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
			writeError(w, s.log, err)
			return
		}
	}
	if err := s.cfg.Metadata.DeleteApp(r.Context(), app.Name); err != nil {
		writeError(w, s.log, err)
		return
	}
	s.log.Info("app deleted", "app", app.Name)
	w.WriteHeader(http.StatusNoContent)
}
