package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// Authentication of the REST API. Every /v1 route needs
// "Authorization: Bearer praas_ID_SECRET": an admin key acts on everything,
// an application's key only on that application (403 elsewhere). Keys live
// in the metadata store, shared by the replicas, as a SHA-256 of their
// secret: the secrets are random and long, so a slow hash would add nothing.

// keyPrefix starts every API key.
const keyPrefix = "praas_"

// keyCacheTTL bounds how long a verified key is trusted without a store
// read, and so how long a revoked key keeps working on a replica.
const keyCacheTTL = 5 * time.Second

// caller is who made a REST request.
type caller struct {
	admin bool
	app   string // the application an app key acts for
	keyID string
}

// may reports whether the caller may act on app.
func (c caller) may(app string) bool { return c.admin || (app != "" && c.app == app) }

type cachedKey struct {
	key     store.Key
	checked time.Time
}

// keyCache remembers keys recently read from the store.
type keyCache struct {
	mu   sync.Mutex
	byID map[string]cachedKey
}

// NewKey makes a new API key for app ("" for an admin key): the record to
// store and the token to give its holder, once.
func NewKey(app, name string) (store.Key, string, error) {
	id := make([]byte, 6)
	secret := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return store.Key{}, "", err
	}
	if _, err := rand.Read(secret); err != nil {
		return store.Key{}, "", err
	}
	k := store.Key{ID: hex.EncodeToString(id), App: app, Name: name, CreatedAt: time.Now().UTC()}
	sec := base64.RawURLEncoding.EncodeToString(secret)
	k.Hash = hashSecret(sec)
	return k, keyPrefix + k.ID + "_" + sec, nil
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// parseKey splits a token into its key ID and secret.
func parseKey(token string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(token, keyPrefix)
	if !found {
		return "", "", false
	}
	id, secret, found = strings.Cut(rest, "_")
	return id, secret, found && id != "" && secret != ""
}

// EnsureAdminKey makes sure the store holds an admin key. given, if set, is
// an admin key the operator chose: it is stored if absent. Without one, the
// first start makes a key up and returns its token for the caller to show
// once; later starts return "".
func EnsureAdminKey(ctx context.Context, meta store.Metadata, given string) (string, error) {
	if given != "" {
		id, secret, ok := parseKey(given)
		if !ok {
			return "", fmt.Errorf("%w: an admin key has the form praas_ID_SECRET", errs.ErrInvalidArgument)
		}
		k, err := meta.GetKey(ctx, id)
		switch {
		case errors.Is(err, errs.ErrNotFound):
			return "", meta.CreateKey(ctx, store.Key{ID: id, Hash: hashSecret(secret), Name: "admin", CreatedAt: time.Now().UTC()})
		case err != nil:
			return "", err
		case k.App != "" || subtle.ConstantTimeCompare([]byte(k.Hash), []byte(hashSecret(secret))) != 1:
			return "", fmt.Errorf("%w: key %s exists and is another key", errs.ErrAlreadyExists, id)
		}
		return "", nil
	}
	admins, err := meta.ListKeys(ctx, "")
	if err != nil || len(admins) > 0 {
		return "", err
	}
	k, token, err := NewKey("", "admin")
	if err != nil {
		return "", err
	}
	if err := meta.CreateKey(ctx, k); err != nil {
		if errors.Is(err, errs.ErrAlreadyExists) {
			return "", nil // another replica made one first
		}
		return "", err
	}
	return token, nil
}

// authenticate finds the caller of r from its Bearer key.
func (s *Server) authenticate(r *http.Request) (caller, error) {
	if s.cfg.NoAuth {
		return caller{admin: true}, nil
	}
	h := r.Header.Get("Authorization")
	token, found := strings.CutPrefix(h, "Bearer ")
	if !found || token == "" {
		return caller{}, fmt.Errorf("%w: this API needs an Authorization: Bearer key (PRAAS_TOKEN for the CLI)", errs.ErrUnauthenticated)
	}
	id, secret, ok := parseKey(token)
	if !ok {
		return caller{}, fmt.Errorf("%w: malformed API key", errs.ErrUnauthenticated)
	}
	k, err := s.lookupKey(r.Context(), id)
	if err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return caller{}, fmt.Errorf("%w: unknown or revoked API key", errs.ErrUnauthenticated)
		}
		return caller{}, err
	}
	if subtle.ConstantTimeCompare([]byte(k.Hash), []byte(hashSecret(secret))) != 1 {
		return caller{}, fmt.Errorf("%w: wrong API key", errs.ErrUnauthenticated)
	}
	return caller{admin: k.App == "", app: k.App, keyID: k.ID}, nil
}

func (s *Server) lookupKey(ctx context.Context, id string) (store.Key, error) {
	s.keys.mu.Lock()
	c, ok := s.keys.byID[id]
	s.keys.mu.Unlock()
	if ok && time.Since(c.checked) < keyCacheTTL {
		return c.key, nil
	}
	k, err := s.cfg.Metadata.GetKey(ctx, id)
	if err != nil {
		return k, err
	}
	s.keys.mu.Lock()
	if len(s.keys.byID) > 10000 {
		clear(s.keys.byID) // bounded: a flood of keys only costs store reads
	}
	s.keys.byID[id] = cachedKey{key: k, checked: time.Now()}
	s.keys.mu.Unlock()
	return k, nil
}

// forgetKey drops a key from this replica's cache at once (revocation).
func (s *Server) forgetKey(id string) {
	s.keys.mu.Lock()
	delete(s.keys.byID, id)
	s.keys.mu.Unlock()
}

// scope is what a route needs of its caller.
type scope int

const (
	adminOnly scope = iota // e.g. create an app, admin keys
	ofApp                  // the app in the path: admin or that app's key
	anyCaller              // any valid key; the handler filters
)

type callerKey struct{}

// authed wraps a /v1 handler: 401 without a valid key, 403 when the key may
// not act on the route's app.
func (s *Server) authed(need scope, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticate(r)
		if err != nil {
			writeError(w, s.log, err)
			return
		}
		switch {
		case need == adminOnly && !c.admin:
			writeError(w, s.log, fmt.Errorf("%w: this needs an admin key", errs.ErrPermissionDenied))
			return
		case need == ofApp && !c.may(r.PathValue("app")):
			writeError(w, s.log, fmt.Errorf("%w: the key of app %s may not act on app %s", errs.ErrPermissionDenied, c.app, r.PathValue("app")))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	}
}

func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

// keyView is a key as the API shows it; Token only when it was just made.
type keyView struct {
	ID        string    `json:"id"`
	App       string    `json:"app,omitempty"`
	Name      string    `json:"name,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Token     string    `json:"token,omitempty"`
}

func viewKey(k store.Key, token string) keyView {
	return keyView{ID: k.ID, App: k.App, Name: k.Name, CreatedAt: k.CreatedAt, Token: token}
}

// createKey makes a key for the app in the path, or an admin key on
// /v1/keys; its token is shown in this answer only.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := readJSON(r, &req, true); err != nil {
		writeError(w, s.log, err)
		return
	}
	if len(req.Name) > 128 {
		writeError(w, s.log, fmt.Errorf("%w: key name over 128 bytes", errs.ErrInvalidArgument))
		return
	}
	app := r.PathValue("app")
	if app != "" {
		if _, ok := s.app(w, r); !ok {
			return
		}
	}
	k, token, err := NewKey(app, req.Name)
	if err == nil {
		err = s.cfg.Metadata.CreateKey(r.Context(), k)
	}
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	s.log.Info("API key created", "app", app, "key", k.ID, "by", callerOf(r).keyID)
	writeJSON(w, http.StatusCreated, viewKey(k, token))
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	if app != "" {
		if _, ok := s.app(w, r); !ok {
			return
		}
	}
	keys, err := s.cfg.Metadata.ListKeys(r.Context(), app)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	views := make([]keyView, 0, len(keys))
	for _, k := range keys {
		views = append(views, viewKey(k, ""))
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": views})
}

// keyInPath returns the key the path names, if it belongs to the path's app
// (or is an admin key on /v1/keys/{id}).
func (s *Server) keyInPath(w http.ResponseWriter, r *http.Request) (store.Key, bool) {
	k, err := s.cfg.Metadata.GetKey(r.Context(), r.PathValue("id"))
	if err == nil && k.App != r.PathValue("app") {
		err = fmt.Errorf("key %s: %w", r.PathValue("id"), errs.ErrNotFound)
	}
	if err != nil {
		writeError(w, s.log, err)
		return k, false
	}
	return k, true
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	k, ok := s.keyInPath(w, r)
	if !ok {
		return
	}
	if k.App == "" {
		if admins, err := s.cfg.Metadata.ListKeys(r.Context(), ""); err == nil && len(admins) == 1 {
			writeError(w, s.log, fmt.Errorf("%w: key %s is the last admin key", errs.ErrFailedPrecondition, k.ID))
			return
		}
	}
	if err := s.cfg.Metadata.DeleteKey(r.Context(), k.ID); err != nil {
		writeError(w, s.log, err)
		return
	}
	s.forgetKey(k.ID)
	s.log.Info("API key revoked", "app", k.App, "key", k.ID, "by", callerOf(r).keyID)
	w.WriteHeader(http.StatusNoContent)
}

// rotateKey replaces a key with a new one of the same app and name: the
// new token is in the answer, the old one stops working.
func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	old, ok := s.keyInPath(w, r)
	if !ok {
		return
	}
	k, token, err := NewKey(old.App, old.Name)
	if err == nil {
		err = s.cfg.Metadata.CreateKey(r.Context(), k)
	}
	if err == nil {
		err = s.cfg.Metadata.DeleteKey(r.Context(), old.ID)
	}
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	s.forgetKey(old.ID)
	s.log.Info("API key rotated", "app", k.App, "old", old.ID, "new", k.ID, "by", callerOf(r).keyID)
	writeJSON(w, http.StatusCreated, viewKey(k, token))
}
