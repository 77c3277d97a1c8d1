package controlplane

import "context"

// Backend starts and stops processes. Implementations: backend/local (OS
// processes on this host) and, later, Kubernetes pods.
//
// Musts:
//   - Start returns once the process was launched, not once it serves: the
//     runtime registers itself with the control plane over the internal API.
//   - Start calls onExit (given to the backend at construction) exactly once
//     when a process it launched ends, for whatever reason, with its handle.
//   - Stop asks the process to shut down gracefully (it drains, and swaps
//     where configured), waits for it to end until ctx is done, then kills it.
//     Stop of a process that already ended returns nil.
//   - Stop works for handles of processes launched by an earlier run of the
//     control plane (after a restart the control plane re-adopts processes).
type Backend interface {
	Start(ctx context.Context, spec Spec) (handle string, err error)
	Stop(ctx context.Context, handle string) error
	// Kill ends the process at once, without draining.
	Kill(handle string) error
}

// Spec describes a process to launch.
type Spec struct {
	App, PID string
	Instance string
	// Image is "builtin" or the path of an image binary.
	Image string
	// Env is the runtime's configuration, as KEY=VALUE pairs.
	Env []string
}
