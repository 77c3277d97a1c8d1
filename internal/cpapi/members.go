package cpapi

// Query parameters of the members long poll (PathMembers) besides app, pid
// and epoch:
//
//   - QueryFresh=1 asks for the membership as the replica knows it now,
//     read from the store if its cached copy is older than the newest epoch
//     it has seen (a runtime that looks up a peer it does not know).
//     Without it, epoch=0 is answered from the cache at once.
//   - QueryDelta=1 says the runtime takes a MembersUpdate that may be a
//     delta; QueryView names the view its epoch came from. A runtime that
//     does not send QueryDelta gets a whole Membership, as before.
//
// Runtimes that send epoch=0 without QueryFresh or QueryDelta (those built
// before these existed) are answered as if QueryFresh were set.
const (
	QueryFresh = "fresh"
	QueryDelta = "delta"
	QueryView  = "view"
)

// MembersUpdate answers a members long poll that allowed deltas. With Since
// zero it is the whole membership at Epoch. Otherwise it turns the
// membership at epoch Since of View into the one at Epoch: Members are the
// processes added or changed since, Removed the pids deleted since, and
// every other member is as it was.
//
// View names one replica's sequence of memberships of the app (a replica
// instance and app); a delta is given only against an epoch the runtime had
// from the same view, so two replicas that read the store at different
// moments never mix.
type MembersUpdate struct {
	Membership
	View    string   `json:"view,omitempty"`
	Since   uint64   `json:"since,omitempty"`
	Removed []string `json:"removed,omitempty"`
}
