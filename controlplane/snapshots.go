package controlplane

import "net/http"

// snapshotRoutes registers the internal routes through which processes reach
// their own snapshots, and nothing else of the swap store.
func (s *Server) snapshotRoutes(m *http.ServeMux) {}
