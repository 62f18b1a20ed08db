package client

import (
	"time"

	"github.com/ldcd/ldcd/placement"
)

// The JSON bodies of the HTTP API. The server encodes and decodes these same
// types, so the client and the server cannot drift apart.

// Response headers.
const (
	// HeaderVersion carries a key's version on GET /v1/kv and /v1/global.
	HeaderVersion = "X-Ldc-Version"
	// HeaderAppliedIndex carries the serving replica's applied index on a
	// stale read.
	HeaderAppliedIndex = "X-Ldc-Applied-Index"
	// HeaderLeaderHTTP names the HTTP address of the node that served a
	// request at the group's leader; clients cache it.
	HeaderLeaderHTTP = "X-Ldc-Leader-Http"
	// HeaderGroup names the group that served the request.
	HeaderGroup = "X-Ldc-Group"
	// HeaderHops counts forwards between nodes; it bounds forwarding loops.
	HeaderHops = "X-Ldc-Hops"
	// HeaderLagMs carries, on a read served by a CZone copy, how far
	// behind the global group it may be, in milliseconds.
	HeaderLagMs = "X-Ldc-Lag-Ms"
	// HeaderEpoch carries, on a write, the routing epoch of the range as the
	// client knew it. A write routed by an older epoch than the range's
	// current one is refused with 409 and the current epoch.
	HeaderEpoch = "X-Ldc-Epoch"
)

// WriteResult answers a put or delete.
type WriteResult struct {
	// Version is the Raft index of the write: the key's new version for a
	// put; for a delete, the index at which it was applied.
	Version uint64 `json:"version"`
	// Deleted reports, for a delete, whether the key existed.
	Deleted *bool `json:"deleted,omitempty"`
	// PrevVersion is, for a delete, the version the key had.
	PrevVersion uint64 `json:"prev_version,omitempty"`
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
	// Version is the key's current version, on a failed compare-and-set
	// (412); 0 means the key does not exist.
	Version *uint64 `json:"version,omitempty"`
	// Indeterminate is true when a write's outcome is unknown (504).
	Indeterminate bool `json:"indeterminate,omitempty"`
	// Epoch is the range's current routing epoch, on a stale-epoch refusal
	// (409).
	Epoch uint64 `json:"epoch,omitempty"`
	// Alarm is "nospace" on a write refused because a replica's disk is
	// below its free-space reserve (507).
	Alarm string `json:"alarm,omitempty"`
}

// PlacementRequest is the body of POST /v1/placement/{move,drain,undrain,
// failback,split}.
type PlacementRequest struct {
	// Shards names a range, e.g. "00-24" (move, failback, split).
	Shards string `json:"shards,omitempty"`
	// Zone is the new owner (move) or the zone to drain.
	Zone string `json:"zone,omitempty"`
	// Node is the node to drain.
	Node string `json:"node,omitempty"`
	// At is the first shard of the upper half (split).
	At int `json:"at,omitempty"`
	// Group and Nodes name a group rebuilt by ldcd recover and the nodes
	// that hold it now (recovered).
	Group string   `json:"group,omitempty"`
	Nodes []string `json:"nodes,omitempty"`
	// DryRun asks for the plan without changing anything.
	DryRun bool `json:"dry_run,omitempty"`
}

// PlacementResult answers a placement action.
type PlacementResult struct {
	DryRun  bool   `json:"dry_run"`
	Change  string `json:"change"`
	Version uint64 `json:"version"`
	Epoch   uint64 `json:"epoch"`
	// Decisions are the planner's first steps toward the change; more
	// follow as each is carried out.
	Decisions []placement.Decision `json:"decisions"`
}

// KV is one key of a list or txn answer. Value holds the value when it is
// valid UTF-8; otherwise ValueBase64 holds it.
type KV struct {
	Key         string `json:"key"`
	Value       string `json:"value,omitempty"`
	ValueBase64 string `json:"value_base64,omitempty"`
	Version     uint64 `json:"version"`
}

// ListResult answers GET /v1/kv/{uid}/?prefix=P&limit=N.
type ListResult struct {
	KVs []KV `json:"kvs"`
	// More is true when more keys match than limit allowed.
	More bool `json:"more"`
}

// Compare is one condition of a transaction.
type Compare struct {
	Key string `json:"key"`
	// Target is "version" (default when Value is empty) or "value".
	Target string `json:"target,omitempty"`
	// Op is one of "=" (default), "!=", "<", ">".
	Op      string `json:"op,omitempty"`
	Version uint64 `json:"version,omitempty"`
	Value   string `json:"value,omitempty"`
	// ValueBase64 may carry a binary value instead of Value.
	ValueBase64 string `json:"value_base64,omitempty"`
}

// Op is one operation of a transaction branch.
type Op struct {
	// Op is "put", "delete" or "get".
	Op          string `json:"op"`
	Key         string `json:"key"`
	Value       string `json:"value,omitempty"`
	ValueBase64 string `json:"value_base64,omitempty"`
}

// TxnRequest is the body of POST /v1/txn/{uid}: if every compare holds,
// Then runs, otherwise Else runs, atomically.
type TxnRequest struct {
	Compare []Compare `json:"compare,omitempty"`
	Then    []Op      `json:"then,omitempty"`
	Else    []Op      `json:"else,omitempty"`
}

// OpResult is the outcome of one Op.
type OpResult struct {
	Op          string `json:"op"`
	Key         string `json:"key"`
	Found       bool   `json:"found"`
	Version     uint64 `json:"version"`
	Value       string `json:"value,omitempty"`
	ValueBase64 string `json:"value_base64,omitempty"`
}

// TxnResult answers a transaction.
type TxnResult struct {
	// Succeeded says whether the compares held: true means Then ran.
	Succeeded bool `json:"succeeded"`
	// Version is the Raft index the transaction was applied at: the new
	// version of every key it wrote.
	Version uint64     `json:"version"`
	Results []OpResult `json:"results"`
}

// NodeInfo is one node of GET /v1/cluster.
type NodeInfo struct {
	Name     string `json:"name"`
	Zone     string `json:"zone"`
	City     string `json:"city"`
	Status   string `json:"status"` // alive, failed, left
	HTTPAddr string `json:"http_addr"`
	RaftAddr string `json:"raft_addr"`
	// Alarm is "nospace" while the node's free disk space is below its
	// --min-free-space: the groups with a replica there refuse writes.
	Alarm string `json:"alarm,omitempty"`
}

// GroupInfo is one group of GET /v1/cluster.
type GroupInfo struct {
	ID           string   `json:"id"`
	Shards       string   `json:"shards,omitempty"`
	OwnerZone    string   `json:"owner_zone,omitempty"`
	Leader       string   `json:"leader"`
	LeaderZone   string   `json:"leader_zone"`
	LeaderHTTP   string   `json:"leader_http"`
	Term         uint64   `json:"term"`
	Voters       []string `json:"voters"`
	Nonvoters    []string `json:"nonvoters"`
	AppliedIndex uint64   `json:"applied_index"`
	// Desired lists the replicas placement wants, when they differ from the
	// configuration (a change is in progress).
	Desired []string `json:"desired,omitempty"`
	// ServingZone is the zone whose replica should lead: the owner zone, or
	// the zone that took over after a failover.
	ServingZone string `json:"serving_zone,omitempty"`
	// Pinned reports whether the leader is in the serving zone.
	Pinned bool `json:"pinned"`
	// Epoch is the routing epoch of the group's last ownership change.
	Epoch uint64 `json:"epoch"`
	// Zones maps each member (voter or not) to its zone.
	Zones map[string]string `json:"zones"`
	// Status is "ok" (it has a leader), "no-leader" (an election is under
	// way) or "unavailable" (a majority of its voters has been down for
	// longer than the dead-node timeout: it needs them back, or an
	// operator's `ldcd recover`).
	Status string `json:"status"`
	// LostVoters lists the voters counted as lost while it has no leader.
	LostVoters []string `json:"lost_voters,omitempty"`
	// Damaged lists the nodes whose replica of the group is damaged (its
	// log failed its checksums): not serving or voting, being rebuilt.
	Damaged []string `json:"damaged,omitempty"`
}

// RouteInfo is one range of GET /v1/routing.
type RouteInfo struct {
	Shards      string `json:"shards"`
	Group       string `json:"group"`
	OwnerZone   string `json:"owner_zone"`
	ServingZone string `json:"serving_zone"`
	Epoch       uint64 `json:"epoch"`
	Leader      string `json:"leader"`
	LeaderHTTP  string `json:"leader_http"`
}

// Routing answers GET /v1/routing: where each range is served.
type Routing struct {
	// Epoch increases with every change of a range's owner or serving zone.
	Epoch  uint64      `json:"epoch"`
	Ranges []RouteInfo `json:"ranges"`
}

// ClusterInfo answers GET /v1/cluster.
type ClusterInfo struct {
	Nodes            []NodeInfo  `json:"nodes"`
	Groups           []GroupInfo `json:"groups"`
	PlacementVersion uint64      `json:"placement_version"`
	Epoch            uint64      `json:"epoch"`
	// CDC lists the CZone copies of the global group and their lag.
	CDC []CDCInfo `json:"cdc,omitempty"`
	// Leader is the node that leads the global group and answered.
	Leader string `json:"leader"`
}

// KeyChange is one key changed by a committed entry, as a change feed
// reports it.
type KeyChange struct {
	// Op is "put" or "delete".
	Op string `json:"op"`
	// Space is "user" (UID and Key set), "global" (Key set) or "system"
	// (the cluster's own records, such as "placement").
	Space       string  `json:"space"`
	UID         *uint64 `json:"uid,omitempty"`
	Key         string  `json:"key"`
	Value       string  `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"`
	// Version is the key's version after a put, or before a delete.
	Version uint64 `json:"version"`
}

// ChangeEvent is one line of GET /v1/changes/{group}: the changes of one
// committed entry, or a heartbeat that reports progress on a quiet feed.
type ChangeEvent struct {
	// Index is the entry's Raft index; on a heartbeat, the serving
	// replica's applied index (every change up to it has been sent).
	Index uint64 `json:"index"`
	// Time is when the leader appended the entry (or, on a heartbeat, now).
	Time    time.Time   `json:"time"`
	Changes []KeyChange `json:"changes,omitempty"`
	// Heartbeat marks a progress line; CommitIndex is the group's commit
	// index as the serving replica knows it.
	Heartbeat   bool   `json:"heartbeat,omitempty"`
	CommitIndex uint64 `json:"commit_index,omitempty"`
}

// GoneBody answers 410 Gone: the feed no longer holds changes from the
// requested index; Oldest is the oldest it holds. Start from a snapshot.
type GoneBody struct {
	Error  string `json:"error"`
	Oldest uint64 `json:"oldest"`
}

// SnapshotHeader is the first line of GET /v1/changes/{group}/snapshot;
// KeyChange lines (op "put") follow, then a SnapshotEnd line.
type SnapshotHeader struct {
	Snapshot bool   `json:"snapshot"`
	Index    uint64 `json:"index"`
}

// SnapshotEnd closes a snapshot; a snapshot without it is incomplete.
type SnapshotEnd struct {
	End   bool   `json:"end"`
	Index uint64 `json:"index"`
	Count int    `json:"count"`
}

// CDCInfo is one CZone copy in GET /v1/cluster.
type CDCInfo struct {
	Node         string `json:"node"`
	Zone         string `json:"zone"`
	Group        string `json:"group"`
	Source       string `json:"source"`
	Connected    bool   `json:"connected"`
	AppliedIndex uint64 `json:"applied_index"`
	LagIndex     uint64 `json:"lag_index"`
	LagMs        int64  `json:"lag_ms"`
	// Snapshots counts the times the copy caught up from a snapshot.
	Snapshots int `json:"snapshots"`
}

// RecoverRequest asks POST /v1/placement/recover to rebuild a group that
// lost a quorum of its voters for good from its most up-to-date survivor.
type RecoverRequest struct {
	// Group is the group to rebuild, e.g. "g-00-24" or "global".
	Group string `json:"group"`
	// DryRun asks for the survivors and the plan without changing anything.
	DryRun bool `json:"dry_run,omitempty"`
}

// RecoverSurvivor is one surviving replica of a group being recovered.
type RecoverSurvivor struct {
	Node         string `json:"node"`
	Zone         string `json:"zone"`
	State        string `json:"state"`
	Voter        bool   `json:"voter"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
}

// RecoverResult answers POST /v1/placement/recover.
type RecoverResult struct {
	Group  string `json:"group"`
	DryRun bool   `json:"dry_run"`
	// Voters is the configuration the survivors hold; Lost, the voters
	// that are down or hold no replica.
	Voters    []string          `json:"voters"`
	Lost      []string          `json:"lost"`
	Survivors []RecoverSurvivor `json:"survivors"`
	// Chosen is the survivor the group is rebuilt from: the one with the
	// highest last index. It becomes the group's only voter; the placement
	// driver then adds replicas back.
	Chosen string `json:"chosen"`
	// MayLose says what may be lost: writes acknowledged after the chosen
	// survivor's last index, and, committed now, entries it held that the
	// group had not committed.
	MayLose string `json:"may_lose"`
	// Recovered is true once the chosen survivor was rebuilt (not on a dry
	// run); Leader is the group's leader afterwards, if one was seen.
	Recovered bool   `json:"recovered"`
	Leader    string `json:"leader,omitempty"`
	// Recorded says whether the event was recorded in the global group
	// (under the global key RecordedKey); RecordError says why not.
	// PlacementVersion is the desired placement that lists the rebuilt
	// group on its survivors only (the lost voters replaced next), 0 if it
	// could not be written (PlacementError says why).
	PlacementVersion uint64 `json:"placement_version,omitempty"`
	PlacementError   string `json:"placement_error,omitempty"`
	Recorded         bool   `json:"recorded"`
	RecordedKey      string `json:"recorded_key,omitempty"`
	RecordError      string `json:"record_error,omitempty"`
}
