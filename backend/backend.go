// Package backend declares what the control plane needs from the engine that
// runs processes: start one from an image, learn when it ends, stop it
// gracefully or kill it, and list what runs now, so that a restarted or a
// new control-plane replica recovers its processes without guessing.
//
// Implementations: backend/local (OS processes on this host) and
// backend/kubernetes (pods). Every implementation passes the conformance
// suite in backend/backendtest.
package backend

import (
	"context"
	"time"
)

// BuiltinImage names the demo image compiled into the praas binary.
const BuiltinImage = "builtin"

// Resources bound what a process may use; zero means the backend's default.
type Resources struct {
	MilliCPU    int64 `json:"milli_cpu,omitempty"`
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
}

// Spec describes a process to launch.
type Spec struct {
	App, PID string
	// Generation is the activation this start is: it travels in the
	// process's environment and comes back in its Handle.
	Generation uint64
	// Image is as CheckImage returned it.
	Image string
	// Env is the runtime's configuration, as KEY=VALUE pairs.
	Env []string
	// Secrets are KEY=VALUE pairs the runtime reads like Env but which are
	// credentials: a backend keeps them out of places others can read
	// (a Kubernetes Secret rather than the pod spec).
	Secrets   []string
	Resources Resources
}

// Handle identifies one started process for as long as it runs. ID is the
// backend's own identity of it and never names another process, even after
// the first one ended (an OS pid alone would not do: the kernel reuses them).
type Handle struct {
	ID         string `json:"id"`
	App        string `json:"app"`
	PID        string `json:"pid"`
	Generation uint64 `json:"generation"`
}

// Exit is how a process ended.
type Exit struct {
	// Code is the exit status, or -1 if it was killed by a signal or is
	// not known.
	Code int
	// Reason says why, for logs ("exited with status 1", "killed", ...).
	Reason string
	At     time.Time
}

// Backend starts and stops processes.
//
// Musts, checked by backendtest:
//   - Start returns once the process was launched, not once it serves: the
//     runtime registers itself with the control plane.
//   - Wait returns once the process of h has ended, at once if it already
//     has (or never existed on this backend); it works for processes that an
//     earlier run of the control plane, or another replica sharing the
//     backend, started. It returns ctx.Err() if ctx ends first.
//   - Stop asks the process to shut down gracefully (it drains and swaps
//     out), waits for it to end until ctx is done, then kills it. Stop and
//     Kill of a process that already ended return nil.
//   - List returns every process of this backend that runs now, with the
//     app, pid and generation it was started with.
//   - CheckImage accepts what Start can run and returns it in canonical
//     form; anything else is an error wrapping errs.ErrInvalidArgument.
//   - All methods are safe for concurrent use.
type Backend interface {
	CheckImage(ctx context.Context, image string) (string, error)
	Start(ctx context.Context, spec Spec) (Handle, error)
	Wait(ctx context.Context, h Handle) (Exit, error)
	Stop(ctx context.Context, h Handle) error
	Kill(ctx context.Context, h Handle) error
	List(ctx context.Context) ([]Handle, error)
}
