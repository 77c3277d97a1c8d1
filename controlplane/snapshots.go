package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/store"
)

// Processes hold no swap-store credentials. They reach their own snapshots,
// and nothing else of the swap store, through grants of the control plane:
//
//   - POST /internal/v1/snapshot-access asks for one transfer. Put: the key
//     cpapi.SnapshotKey(app, pid, gen, seq) of the caller's own generation,
//     which must be the record's generation while a live replica owns the
//     record. Get: the snapshot the record names, to that generation only.
//   - A store that presigns URLs (S3) answers with a URL for that key and
//     method that expires after snapshotAccessTTL; the transfer goes
//     straight to the store (a put over maxPresignedPut goes through this
//     replica instead).
//   - Any other store (files) is reached through this replica:
//     PUT/GET /internal/v1/snapshot-data, authenticated like every internal
//     call and checked against the same rule again, streams the body into
//     Swap.Put or out of Swap.Get.
//   - Heartbeat replies carry a pre-issued PUT of the generation's orphan
//     key (presigning stores only), for a runtime that loses every control
//     plane (see process/runtime.go).

// snapshotAccessTTL is how long a presigned URL stays usable: long enough to
// start the upload of a large snapshot (S3 checks the expiry when a request
// starts), short enough to be of little use to anyone it leaks to.
const snapshotAccessTTL = 15 * time.Minute

// Bounds of the lifetime of an orphan URL: a runtime asks for its orphan
// timeout plus its drain time; one that names none gets the default.
const (
	defaultOrphanTTL = 7 * time.Minute
	minOrphanTTL     = time.Minute
	maxOrphanTTL     = 24 * time.Hour
)

// snapshotRoutes registers the internal routes through which processes reach
// their own snapshots, and nothing else of the swap store.
func (s *Server) snapshotRoutes(m *routeMux) {
	m.HandleFunc("POST "+cpapi.PathSnapshotAccess, s.snapshotAccess)
	m.HandleFunc("PUT "+cpapi.PathSnapshotData, s.snapshotDataPut)
	m.HandleFunc("GET "+cpapi.PathSnapshotData, s.snapshotDataGet)
}

// snapshotAccess grants one transfer of one of the caller's snapshots.
func (s *Server) snapshotAccess(w http.ResponseWriter, r *http.Request) {
	var req cpapi.SnapshotAccessRequest
	if err := readJSON(r, &req, false); err != nil {
		writeError(w, s.log, err)
		return
	}
	if !s.authSnapshot(w, r, req.App, req.PID, req.Generation) {
		return
	}
	var key string
	switch req.Op {
	case cpapi.SnapshotPut:
		if req.Seq == 0 || req.Size < 0 {
			writeError(w, s.log, fmt.Errorf("%w: a snapshot put needs seq >= 1 and size >= 0", errs.ErrInvalidArgument))
			return
		}
		key = cpapi.SnapshotKey(req.App, req.PID, req.Generation, req.Seq)
	case cpapi.SnapshotGet:
		key = req.Key
	default:
		writeError(w, s.log, fmt.Errorf("%w: snapshot op %q: want %q or %q", errs.ErrInvalidArgument, req.Op, cpapi.SnapshotPut, cpapi.SnapshotGet))
		return
	}
	key, err := s.allowSnapshot(r.Context(), req.App, req.PID, req.Generation, req.Op, key)
	if err != nil {
		s.refuseSnapshot(w, req.App, req.PID, req.Generation, req.Op, err)
		return
	}
	a, err := s.grant(r.Context(), req.App, req.PID, req.Generation, req.Op, key, req.Size, snapshotAccessTTL)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// authSnapshot authenticates a snapshot request of generation gen of
// app/pid as snapshotReport does: against the live process of that
// generation if this replica runs it, against the app's record otherwise.
func (s *Server) authSnapshot(w http.ResponseWriter, r *http.Request, app, pid string, gen uint64) bool {
	if l := s.lookupLive(app, pid); l != nil && l.gen == gen {
		return s.authLive(w, r, l)
	}
	_, ok := s.authApp(w, r, app, pid, gen)
	return ok
}

// errNotCurrent refuses a request of a generation that is not (or no longer)
// the one running: 410, which retires the runtime.
var errNotCurrent = errors.New("not the current generation")

// allowSnapshot is the access rule. Generation gen of app/pid may put a key
// of its own generation, and get the snapshot the record names (key, if
// set, must be that one), as long as gen is the record's generation and a
// replica with a live lease owns the record. It returns the key.
func (s *Server) allowSnapshot(ctx context.Context, app, pid string, gen uint64, op, key string) (string, error) {
	if s.cfg.Swap == nil {
		return "", fmt.Errorf("%w: this control plane has no swap store", errs.ErrFailedPrecondition)
	}
	rec, err := s.cfg.Metadata.GetProcess(ctx, app, pid)
	if errors.Is(err, errs.ErrNotFound) {
		return "", fmt.Errorf("%w: process %s/%s is gone", errNotCurrent, app, pid)
	}
	if err != nil {
		return "", err
	}
	if rec.Generation != gen {
		return "", fmt.Errorf("%w: generation %d of %s/%s, the record's is %d", errNotCurrent, gen, app, pid, rec.Generation)
	}
	switch own, _ := s.ownerOf(ctx, rec); {
	case own == unowned:
		return "", fmt.Errorf("%w: generation %d of %s/%s has ended (%s)", errNotCurrent, gen, app, pid, rec.Status)
	case own == ownerGone, own == ownedHere && !s.holdsLease():
		// A takeover may adopt the process as it is: not a reason to retire.
		return "", fmt.Errorf("%w: the owner of %s/%s has lost its lease", errs.ErrUnavailable, app, pid)
	}
	switch op {
	case cpapi.SnapshotPut:
		g, seq, ok := cpapi.ParseSnapshotKey(app, pid, key)
		if !ok || g != gen || seq == 0 || key != cpapi.SnapshotKey(app, pid, g, seq) {
			return "", fmt.Errorf("%w: %q is not a snapshot key of %s/%s generation %d", errs.ErrPermissionDenied, key, app, pid, gen)
		}
		return key, nil
	case cpapi.SnapshotGet:
		if key != "" && key != rec.Snapshot {
			return "", fmt.Errorf("%w: %q is not the snapshot the record of %s/%s names", errs.ErrPermissionDenied, key, app, pid)
		}
		if rec.Snapshot == "" {
			return "", fmt.Errorf("%w: %s/%s has no snapshot", errs.ErrNotFound, app, pid)
		}
		return rec.Snapshot, nil
	}
	return "", fmt.Errorf("%w: snapshot op %q", errs.ErrInvalidArgument, op)
}

// refuseSnapshot answers a request the access rule refused.
func (s *Server) refuseSnapshot(w http.ResponseWriter, app, pid string, gen uint64, op string, err error) {
	if errors.Is(err, errNotCurrent) {
		s.log.Warn("snapshot access of an old generation refused", "app", app, "pid", pid, "generation", gen, "op", op, "err", err)
		w.WriteHeader(http.StatusGone)
		return
	}
	if errs.CodeOf(err) == errs.PermissionDenied {
		s.log.Warn("snapshot access refused", "app", app, "pid", pid, "generation", gen, "op", op, "err", err)
	}
	writeError(w, s.log, err)
}

// maxPresignedPut is the largest object one presigned PUT can write (S3
// takes 5 GiB in one request). Larger snapshots go through this replica's
// streaming route, whose Swap.Put uploads in parts.
const maxPresignedPut = 5 << 30

// grant makes the access to key: a presigned URL if the store makes them
// (and a put of size bytes fits one request), else this replica's
// streaming route.
func (s *Server) grant(ctx context.Context, app, pid string, gen uint64, op, key string, size int64, ttl time.Duration) (cpapi.SnapshotAccess, error) {
	a := cpapi.SnapshotAccess{Key: key, Method: http.MethodGet, Expires: time.Now().Add(ttl)}
	if op == cpapi.SnapshotPut {
		a.Method = http.MethodPut
	}
	if p, ok := s.cfg.Swap.(store.Presigner); ok && (op != cpapi.SnapshotPut || size <= maxPresignedPut) {
		var u *url.URL
		var err error
		if op == cpapi.SnapshotPut {
			u, err = p.PresignPut(ctx, key, ttl)
		} else {
			u, err = p.PresignGet(ctx, key, ttl)
		}
		if err != nil {
			return a, err
		}
		a.URL = u.String()
		return a, nil
	}
	q := url.Values{"app": {app}, "pid": {pid}, "generation": {strconv.FormatUint(gen, 10)}, "key": {key}}
	a.URL = s.cfg.URL + cpapi.PathSnapshotData + "?" + q.Encode()
	a.Auth = true
	return a, nil
}

// dataRequest authenticates a request of the streaming route and checks it
// against the access rule; it returns the key, or "" once it has answered.
func (s *Server) dataRequest(w http.ResponseWriter, r *http.Request, op string) string {
	q := r.URL.Query()
	app, pid, key := q.Get("app"), q.Get("pid"), q.Get("key")
	gen, err := strconv.ParseUint(q.Get("generation"), 10, 64)
	if err != nil || app == "" || pid == "" || key == "" {
		writeError(w, s.log, fmt.Errorf("%w: want ?app=&pid=&generation=&key=", errs.ErrInvalidArgument))
		return ""
	}
	if !s.authSnapshot(w, r, app, pid, gen) {
		return ""
	}
	key, err = s.allowSnapshot(r.Context(), app, pid, gen, op, key)
	if err != nil {
		s.refuseSnapshot(w, app, pid, gen, op, err)
		return ""
	}
	return key
}

// snapshotDataPut streams a snapshot into the swap store, for stores that
// presign no URLs. The store sees the body as it arrives (and its length
// when the request gives it): nothing buffers the whole snapshot.
func (s *Server) snapshotDataPut(w http.ResponseWriter, r *http.Request) {
	key := s.dataRequest(w, r, cpapi.SnapshotPut)
	if key == "" {
		return
	}
	if err := s.cfg.Swap.Put(r.Context(), key, r.Body, r.ContentLength); err != nil {
		writeError(w, s.log, fmt.Errorf("write snapshot %s: %w", key, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// snapshotDataGet streams a snapshot out of the swap store.
func (s *Server) snapshotDataGet(w http.ResponseWriter, r *http.Request) {
	key := s.dataRequest(w, r, cpapi.SnapshotGet)
	if key == "" {
		return
	}
	rc, err := s.cfg.Swap.Get(r.Context(), key)
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	// A known length lets the process allocate the state at once, and the
	// server send the file without chunking it.
	if st, ok := rc.(interface{ Stat() (fs.FileInfo, error) }); ok {
		if fi, err := st.Stat(); err == nil {
			w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		}
	}
	if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
		// The status is sent: cutting the response short is all that is
		// left, and the snapshot's checksum catches it anyway.
		s.log.Warn("stream snapshot", "key", key, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// orphanAccess is the pre-issued PUT of the orphan key of l's generation
// that a heartbeat reply carries, valid for about want; nil if the store
// presigns no URLs.
func (s *Server) orphanAccess(ctx context.Context, l *live, want time.Duration) *cpapi.SnapshotAccess {
	if _, ok := s.cfg.Swap.(store.Presigner); !ok {
		return nil
	}
	ttl := defaultOrphanTTL
	if want > 0 {
		ttl = min(max(want, minOrphanTTL), maxOrphanTTL)
	}
	key := cpapi.SnapshotKey(l.app, l.pid, l.gen, cpapi.OrphanSeq)
	a, err := s.grant(ctx, l.app, l.pid, l.gen, cpapi.SnapshotPut, key, 0, ttl)
	if err != nil {
		s.log.Warn("presign the orphan key", "app", l.app, "pid", l.pid, "err", err)
		return nil
	}
	return &a
}
