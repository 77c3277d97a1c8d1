// Package cpapi holds the messages of the internal API between process
// runtimes and the control plane: registration, heartbeats with usage, and
// membership. Processes call it over HTTP; it is not part of the public /v1 API.
package cpapi

import "github.com/praas-dev/praas/store"

// Paths of the internal API.
const (
	PathRegister  = "/internal/v1/register"
	PathHeartbeat = "/internal/v1/heartbeat"
	PathMembers   = "/internal/v1/members" // long poll: ?app=&pid=&epoch=
	PathSnapshot  = "/internal/v1/snapshot"
	// PathMessages takes a message for a process that is not active (raw
	// body; ?app=&src=&dest=&key=): the control plane queues it durably.
	PathMessages = "/internal/v1/messages"
)

// Env variables through which a backend configures a process runtime.
const (
	EnvControlPlane   = "PRAAS_CONTROL_PLANE"
	EnvApp            = "PRAAS_APP"
	EnvPID            = "PRAAS_PID"
	EnvInstance       = "PRAAS_INSTANCE"
	EnvSecret         = "PRAAS_SECRET"
	EnvListen         = "PRAAS_LISTEN"
	EnvAdvertise      = "PRAAS_ADVERTISE" // host to advertise if the listen host is unspecified
	EnvMaxConcurrency = "PRAAS_MAX_CONCURRENCY"
	EnvMaxPayload     = "PRAAS_MAX_PAYLOAD"
	EnvHeartbeat      = "PRAAS_HEARTBEAT" // a time.Duration
	EnvSwap           = "PRAAS_SWAP"      // swap store URL
	EnvRestore        = "PRAAS_RESTORE"   // "1": restore from the snapshot before serving
	EnvCheckpoint     = "PRAAS_CHECKPOINT_INTERVAL"
	EnvOrphanTimeout  = "PRAAS_ORPHAN_TIMEOUT" // a time.Duration
)

// Member is one process as the members of an application see it.
type Member struct {
	PID     string `json:"pid"`
	Status  string `json:"status"`
	Address string `json:"address,omitempty"`
}

// Membership is an application's process list at an epoch.
type Membership struct {
	Epoch   uint64   `json:"epoch"`
	Members []Member `json:"members"`
}

// Register is sent by a runtime once it serves its data plane.
type Register struct {
	App      string `json:"app"`
	PID      string `json:"pid"`
	Instance string `json:"instance"` // unique per start, so stale reports are told apart
	Address  string `json:"address"`
}

// Heartbeat reports liveness and cumulative usage since the start.
type Heartbeat struct {
	App      string      `json:"app"`
	PID      string      `json:"pid"`
	Instance string      `json:"instance"`
	Usage    store.Usage `json:"usage"`
	// IdleNanos is how long the data plane has been idle (no invocation
	// running, none received), for the scale-down policy.
	IdleNanos int64 `json:"idle_ns"`
}

// HeartbeatReply tells the runtime the current epoch; Membership is set when
// it differs from the epoch the runtime reported knowing.
type HeartbeatReply struct {
	Epoch uint64 `json:"epoch"`
}

// Snapshot reports a snapshot the runtime wrote. Final marks the swap-out:
// the process exits right after.
type Snapshot struct {
	App      string `json:"app"`
	PID      string `json:"pid"`
	Instance string `json:"instance"`
	Key      string `json:"key"`
	Bytes    int64  `json:"bytes"`
	Final    bool   `json:"final"`
}

// SnapshotKey is where the snapshot of app/pid lives in the swap store.
func SnapshotKey(app, pid string) string { return "snapshots/" + app + "/" + pid }
