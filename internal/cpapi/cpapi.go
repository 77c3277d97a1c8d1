// Package cpapi holds the messages of the internal API between process
// runtimes and the control plane: registration, heartbeats with usage, and
// membership. Processes call it over HTTP; it is not part of the public /v1 API.
package cpapi

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/praas-dev/praas/internal/names"
	"github.com/praas-dev/praas/internal/proclog"
	"github.com/praas-dev/praas/internal/procmetrics"
	"github.com/praas-dev/praas/store"
)

// Paths of the internal API.
const (
	PathRegister  = "/internal/v1/register"
	PathHeartbeat = "/internal/v1/heartbeat"
	PathMembers   = "/internal/v1/members" // long poll: ?app=&pid=&epoch=
	PathSnapshot  = "/internal/v1/snapshot"
	// PathMessages takes a message for a process that is not active (raw
	// body; ?app=&src=&dest=&key=): the control plane queues it durably.
	PathMessages = "/internal/v1/messages"
	// PathFlush asks the replica that owns a process to deliver its backup
	// queue (?app=&pid=): another replica queued a message for it.
	PathFlush = "/internal/v1/flush"
	// PathInvoke runs an invocation a process makes of a peer that is not
	// active (?app=&pid=&function=, raw input in, raw output out): what the
	// REST invoke does for clients, for a process's own credential.
	PathInvoke = "/internal/v1/invoke"
	// PathSnapshotAccess grants a process access to one of its own
	// snapshots: SnapshotAccessRequest in, SnapshotAccess out.
	PathSnapshotAccess = "/internal/v1/snapshot-access"
	// PathSnapshotData streams a snapshot between a process and a swap store
	// that cannot presign URLs (PUT or GET ?app=&pid=&generation=&key=): the
	// URL a SnapshotAccess names for such a store.
	PathSnapshotData = "/internal/v1/snapshot-data"
	// PathLogs takes a batch of a process's log lines (Logs): the lines
	// its runtime captured from its stdout and stderr.
	PathLogs = "/internal/v1/logs"
)

// Env variables through which a backend configures a process runtime.
const (
	EnvControlPlane  = "PRAAS_CONTROL_PLANE"
	EnvControlPlanes = "PRAAS_CONTROL_PLANES" // comma-separated URLs of the other replicas, to fail over to
	EnvApp           = "PRAAS_APP"
	EnvPID           = "PRAAS_PID"
	EnvGeneration    = "PRAAS_GENERATION" // the activation the process is: its fencing token

	// EnvToken is the process's own credential (internal/token: App, PID
	// "*", Sub the pid, its generation, ops invoke|send|internal), for the
	// internal API. A secret; heartbeat replies renew it.
	EnvToken = "PRAAS_PROCESS_TOKEN"
	// EnvPeerToken is what the process presents to its peers on the data
	// plane: the same claims without internal, so a peer cannot replay it
	// to the control plane. A secret; heartbeat replies renew it.
	EnvPeerToken = "PRAAS_PEER_TOKEN"
	// EnvPublicKey is the control plane's token-verifying key(s),
	// comma-separated (token.EncodePublic).
	EnvPublicKey = "PRAAS_CP_PUBLIC_KEY"

	EnvListen         = "PRAAS_LISTEN"
	EnvAdvertise      = "PRAAS_ADVERTISE" // host to advertise if the listen host is unspecified
	EnvMaxConcurrency = "PRAAS_MAX_CONCURRENCY"
	EnvMaxPayload     = "PRAAS_MAX_PAYLOAD"
	// EnvMaxMailbox and EnvMaxMailboxBytes bound a process's unread
	// messages and their bytes.
	EnvMaxMailbox      = "PRAAS_MAX_MAILBOX"
	EnvMaxMailboxBytes = "PRAAS_MAX_MAILBOX_BYTES"
	// EnvMaxState bounds the bytes of a process's state.
	EnvMaxState = "PRAAS_MAX_STATE_BYTES"
	// EnvMaxInflight bounds the invocations a process has taken and not
	// finished; EnvMaxConnInflight and EnvMaxConnInflightBytes bound one
	// data-plane connection's unanswered invocations (reading pauses);
	// EnvWriteTimeout (a time.Duration) is how long a client may leave an
	// answer unread before its connection is closed.
	EnvMaxInflight          = "PRAAS_MAX_INFLIGHT"
	EnvMaxConnInflight      = "PRAAS_MAX_CONN_INFLIGHT"
	EnvMaxConnInflightBytes = "PRAAS_MAX_CONN_INFLIGHT_BYTES"
	EnvWriteTimeout         = "PRAAS_WRITE_TIMEOUT"
	EnvHeartbeat            = "PRAAS_HEARTBEAT" // a time.Duration
	EnvSwap                 = "PRAAS_SWAP"      // swap store URL, for a runtime without a control plane only
	EnvRestore              = "PRAAS_RESTORE"   // swap-store key of the snapshot to restore before serving
	EnvCheckpoint           = "PRAAS_CHECKPOINT_INTERVAL"
	EnvOrphanTimeout        = "PRAAS_ORPHAN_TIMEOUT" // a time.Duration
	// EnvMetrics "false" turns the runtime's invocation metrics off
	// (praas up --metrics=false); they are on by default.
	EnvMetrics = "PRAAS_METRICS"
	// EnvOTLPEndpoint is the OTLP/HTTP traces URL a process exports its
	// spans to (unset: tracing off); EnvTraceSampleRatio the fraction of
	// traces it starts that it samples (see internal/tracing).
	EnvOTLPEndpoint     = "PRAAS_OTLP_ENDPOINT"
	EnvTraceSampleRatio = "PRAAS_TRACE_SAMPLE_RATIO"

	// TLS (see docs/security.md). EnvTLSCA is the PEM of the CA that signed
	// the control planes' certificates, to reach their https:// URLs;
	// EnvTLSDataCA the data-plane CA's certificate, to dial peers;
	// EnvTLSCert and EnvTLSKey (secrets) the process's own data-plane
	// certificate and key. Without them everything is plain.
	EnvTLSCA     = "PRAAS_TLS_CA"
	EnvTLSDataCA = "PRAAS_TLS_DATA_CA"
	EnvTLSCert   = "PRAAS_TLS_CERT"
	EnvTLSKey    = "PRAAS_TLS_KEY"
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

// Register is sent by a runtime once it serves its data plane, and again to
// whichever replica it reaches when its owner went away.
type Register struct {
	App        string `json:"app"`
	PID        string `json:"pid"`
	Generation uint64 `json:"generation"` // reports of older generations are refused
	Address    string `json:"address"`
	// RestoredBytes is the size of the snapshot the runtime restored
	// before serving (0 for none), for the swap-in metrics.
	RestoredBytes int64 `json:"restored_bytes,omitempty"`
}

// Heartbeat reports liveness and cumulative usage since the start.
type Heartbeat struct {
	App        string      `json:"app"`
	PID        string      `json:"pid"`
	Generation uint64      `json:"generation"`
	Usage      store.Usage `json:"usage"`
	// IdleNanos is how long the data plane has been idle (no invocation
	// running, none received), for the scale-down policy.
	IdleNanos int64 `json:"idle_ns"`
	// OrphanNanos is how long from now the runtime may still need to write
	// its orphan snapshot (its orphan timeout, drain time and a margin): the
	// reply's Orphan URL should stay valid that long.
	OrphanNanos int64 `json:"orphan_ns,omitempty"`
	// CertNotAfter is when the runtime's data-plane certificate expires
	// (unix seconds; 0 without TLS): the reply renews it past half its life.
	CertNotAfter int64 `json:"cert_not_after,omitempty"`
	// Metrics are the generation's invocation counters and gauges, for the
	// control plane's Prometheus endpoint; nil with metrics off.
	Metrics *procmetrics.Report `json:"metrics,omitempty"`
}

// HeartbeatReply tells the runtime the current epoch; Membership is set when
// it differs from the epoch the runtime reported knowing.
type HeartbeatReply struct {
	Epoch uint64 `json:"epoch"`
	// IntervalNanos, when longer than the runtime's own heartbeat interval,
	// is how often the control plane wants heartbeats from now on: a
	// replica with many processes spaces them out (see the control plane's
	// heartbeat budget).
	IntervalNanos int64 `json:"interval_ns,omitempty"`
	// Owner, when set, is the URL of the replica that owns the process:
	// the runtime sends its reports there from now on.
	Owner string `json:"owner,omitempty"`
	// Replicas are the URLs of the live control-plane replicas, for the
	// runtime to try when the one it reports to stops answering.
	Replicas []string `json:"replicas,omitempty"`
	// Token and PeerToken, when set, replace the runtime's own credential
	// and peer token (see EnvToken, EnvPeerToken) before they expire.
	Token     string `json:"token,omitempty"`
	PeerToken string `json:"peer_token,omitempty"`
	// TLSCert and TLSKey, when set, replace the runtime's data-plane
	// certificate and key (PEM; see EnvTLSCert) before it expires.
	TLSCert string `json:"tls_cert,omitempty"`
	TLSKey  string `json:"tls_key,omitempty"`
	// Orphan, in a heartbeat reply, is a pre-issued PUT of the orphan key
	// of the process's generation (OrphanSeq), for the final snapshot of a
	// runtime that no control plane answers any more. Only stores that
	// presign URLs have one; each reply renews it.
	Orphan *SnapshotAccess `json:"orphan,omitempty"`
}

// Logs carries log lines of a process, oldest first, each sent once. Where
// the runtime had to drop lines (its buffer full while no control plane
// took them), a line of stream proclog.StreamPraas says how many.
type Logs struct {
	App        string         `json:"app"`
	PID        string         `json:"pid"`
	Generation uint64         `json:"generation"`
	Lines      []proclog.Line `json:"lines"`
}

// A Logs message holds at most MaxLogsBatch lines of at most
// MaxLogsBatchBytes of text (and at least one line); the control plane
// refuses bodies over MaxLogsBytes (JSON may escape a byte as six).
const (
	MaxLogsBatch      = 1024
	MaxLogsBatchBytes = 1 << 20
	MaxLogsBytes      = 8 << 20
)

// Snapshot access operations.
const (
	SnapshotPut = "put"
	SnapshotGet = "get"
)

// SnapshotAccessRequest asks for access to one of the caller's snapshots.
// Put: the key SnapshotKey(App, PID, Generation, Seq), which the control
// plane grants only to the record's current generation while a live replica
// owns it. Get: the snapshot the record names (Key, if set, must be it), to
// the same generation.
type SnapshotAccessRequest struct {
	App        string `json:"app"`
	PID        string `json:"pid"`
	Generation uint64 `json:"generation"`
	Op         string `json:"op"`             // SnapshotPut or SnapshotGet
	Seq        uint64 `json:"seq,omitempty"`  // put: the snapshot's number, >= 1
	Size       int64  `json:"size,omitempty"` // put: its exact length
	Key        string `json:"key,omitempty"`  // get: the key the runtime means to restore
}

// SnapshotAccess is one transfer a process may make: Method (PUT or GET) on
// URL with Headers, before Expires. A PUT carries Content-Length. When Auth
// is set the URL is the control plane's own (for stores that presign no
// URLs) and the process sends its internal-API credentials with it, as with
// every internal call; otherwise the URL carries its own authorization and
// the request must carry none.
type SnapshotAccess struct {
	Key     string            `json:"key"`
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Headers map[string]string `json:"headers,omitempty"`
	Auth    bool              `json:"auth,omitempty"`
	Expires time.Time         `json:"expires"`
}

// Snapshot reports a snapshot the runtime wrote. Final marks the swap-out:
// the process exits right after.
type Snapshot struct {
	App        string `json:"app"`
	PID        string `json:"pid"`
	Generation uint64 `json:"generation"`
	Key        string `json:"key"`
	Bytes      int64  `json:"bytes"`
	Final      bool   `json:"final"`
	// Usage is the generation's cumulative usage when the snapshot was
	// taken, as in Heartbeat. The final report's is the generation's total
	// (every invocation has ended): it carries what happened since the last
	// heartbeat, and the control plane records it before the record ends
	// swapped. Nil from runtimes that predate it.
	Usage *store.Usage `json:"usage,omitempty"`
	// Queued is the highest backup-queue sequence the snapshot holds (the
	// process consumed every queued message up to it): once the snapshot is
	// recorded, the control plane trims the queue up to it. Until then the
	// messages stay queued, so a crash that restores an older snapshot gets
	// them again (and drops those it holds).
	Queued uint64 `json:"queued,omitempty"`
	// Metrics, as in Heartbeat: the final report's are the generation's
	// totals, so nothing after the last heartbeat is lost at a swap-out.
	Metrics *procmetrics.Report `json:"metrics,omitempty"`
}

// SnapshotKey is where the seq-th snapshot that generation gen of app/pid
// writes goes in the swap store. Every write has a key of its own, and the
// process record names the one to restore: a late write of a process
// presumed dead lands beside the newer snapshots, never over them.
func SnapshotKey(app, pid string, gen, seq uint64) string {
	return fmt.Sprintf("%s%d-%d", SnapshotPrefix(app, pid), gen, seq)
}

// OrphanSeq numbers the final snapshot of a runtime that lost every control
// plane: no report names it, so a replica looks for it under this fixed
// key of the record's generation before it starts the process anew.
const OrphanSeq = 1 << 62

// SnapshotPrefix starts the keys of every snapshot of app/pid.
func SnapshotPrefix(app, pid string) string { return "snapshots/" + app + "/" + pid + "/" }

// ParseSnapshotKey returns the generation and sequence number of a key that
// SnapshotKey made for app/pid.
func ParseSnapshotKey(app, pid, key string) (gen, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(key, SnapshotPrefix(app, pid))
	if !found {
		return 0, 0, false
	}
	g, q, found := strings.Cut(rest, "-")
	if !found {
		return 0, 0, false
	}
	gen, err1 := strconv.ParseUint(g, 10, 64)
	seq, err2 := strconv.ParseUint(q, 10, 64)
	return gen, seq, err1 == nil && err2 == nil
}

// KeyControlPlane is the message key of the control message a replica that
// took a process over sends it over the data plane: the body is the
// replica's URL, then other replicas' URLs, one a line. Keys with this
// prefix are the control plane's alone (see internal/names).
const KeyControlPlane = names.ControlPrefix + "control-plane"
