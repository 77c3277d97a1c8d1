package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
)

// Requests that change a process's life cycle (swap, delete) are the
// owner's to carry out; a replica that gets one for a process another
// replica owns forwards it there, once: a forwarded request is never
// forwarded again, so two replicas that disagree cannot loop.

// headerForwarded marks a request forwarded by another replica.
const headerForwarded = "Praas-Forwarded-By"

// replicaClient carries requests between replicas.
var replicaClient = &http.Client{Timeout: 2 * time.Minute}

// forward proxies r to the owner in peer, or answers 503 if r was forwarded
// to this replica already. It reports whether it answered.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, err error) bool {
	var peer *errOwnedByPeer
	if !errors.As(err, &peer) {
		return false
	}
	if by := r.Header.Get(headerForwarded); by != "" || peer.owner.URL == "" {
		writeError(w, s.log, fmt.Errorf("%w: %w (forwarded by %q)", errs.ErrUnavailable, err, by))
		return true
	}
	target, perr := url.Parse(peer.owner.URL)
	if perr != nil {
		writeError(w, s.log, fmt.Errorf("%w: owner replica URL %q: %v", errs.ErrInternal, peer.owner.URL, perr))
		return true
	}
	proxy := &httputil.ReverseProxy{
		Transport: s.replicaHTTP.Transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(headerForwarded, s.id)
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			writeError(w, s.log, fmt.Errorf("%w: forward to owner replica %s: %v", errs.ErrUnavailable, peer.owner.ID, err))
		},
	}
	s.log.Debug("forwarding to owner", "method", r.Method, "path", r.URL.Path, "owner", peer.owner.ID)
	proxy.ServeHTTP(w, r)
	return true
}

// peerConn returns a data-plane connection to process app/pid at addr,
// which another replica owns, shared by every request of this replica.
func (s *Server) peerConn(ctx context.Context, addr, app, pid string) (*client.DataConn, error) {
	key := addr + " " + liveKey(app, pid) // an address may serve another process later
	s.mu.Lock()
	dc := s.peers[key]
	s.mu.Unlock()
	if dc != nil && dc.Usable() {
		return dc, nil
	}
	dc, err := client.Dial(ctx, addr, s.planeToken(app, pid), s.dialOptions())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.peers[key]; old != nil && old.Usable() {
		dc.Close() // another request won the race
		return old, nil
	}
	s.peers[key] = dc
	return dc, nil
}

func (s *Server) closePeers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, dc := range s.peers {
		dc.Close()
		delete(s.peers, key)
	}
}
