package raftgroup

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ldcd/ldcd/raftgroup/sharedlog"
)

// Errors returned by the Host and its groups.
var (
	// ErrClosed is returned once the host or group is closed.
	ErrClosed = errors.New("raftgroup: closed")
	// ErrNoGroup is returned for a group this host does not run.
	ErrNoGroup = errors.New("raftgroup: no such group")
	// ErrNotLeader is returned (inside a *NotLeaderError) when an operation
	// needs the group's leader and this replica is not it. The operation did
	// not happen: it is safe to retry at the leader.
	ErrNotLeader = errors.New("raftgroup: not leader")
	// ErrHasLeader is returned by Recover on a replica that leads its group:
	// a group with a leader has its quorum and needs no recovery.
	ErrHasLeader = errors.New("raftgroup: the group has a leader")
	// ErrDamaged is returned by Create for a replica this node cannot vouch
	// for (Damaged): it must be wiped, after its group removed it, first.
	ErrDamaged = errors.New("raftgroup: replica damaged")
	// ErrNotDamaged is returned by Wipe for a replica that is not damaged.
	ErrNotDamaged = errors.New("raftgroup: replica not damaged")
	// ErrNoState is returned by Recover for a replica without any state.
	ErrNoState = errors.New("raftgroup: the replica has no state")
	// ErrIndeterminate is returned when a write was proposed but its outcome
	// is unknown (leadership lost, timeout, shutdown): it may or may not
	// have been applied.
	ErrIndeterminate = errors.New("raftgroup: outcome unknown")
	// ErrBadGroupID is returned for a group id that is not 1-64 characters
	// of [a-z0-9-].
	ErrBadGroupID = errors.New("raftgroup: bad group id")
)

// NotLeaderError says which node leads the group, if known.
type NotLeaderError struct {
	Group      string
	LeaderID   string // empty when no leader is known
	LeaderAddr string // its Raft address
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return fmt.Sprintf("raftgroup: not leader of %s, no leader known", e.Group)
	}
	return fmt.Sprintf("raftgroup: not leader of %s, leader is %s", e.Group, e.LeaderID)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Config configures a Host. Build it with DefaultConfig.
type Config struct {
	// NodeID is this node's Raft server id in every group.
	NodeID string
	// DataDir holds groups/<id>/ for every group.
	DataDir string
	// Listener is the one Raft listener; the host owns and closes it.
	Listener net.Listener
	// Advertise is the address peers dial to reach Listener.
	Advertise string
	Logger    *slog.Logger

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// LeaderHeartbeatTimeout is the heartbeat timeout a group's raft runs
	// with while it leads, when heartbeats are batched (0: HeartbeatTimeout).
	// A leading hashicorp/raft asks each follower for a heartbeat every
	// tenth to fifth of its heartbeat timeout, from a goroutine per group
	// and follower; with batching those asks are answered from the rounds
	// (heartbeat.go), and the rounds, not the asks, keep followers' timers
	// fed. So a leader may ask less often than a follower times out: at
	// most 2.5 times HeartbeatTimeout, and raft's leader lease check needs
	// LeaderLeaseTimeout to be at least twice the longest wait between
	// asks (2/5 of this).
	LeaderHeartbeatTimeout time.Duration
	CommitTimeout          time.Duration
	MaxAppendEntries       int
	SnapshotThreshold      uint64
	SnapshotInterval       time.Duration
	TrailingLogs           uint64
	// LogStore is the kind of log a new group gets: LogShared (the
	// default, "" too), LogWAL or LogBolt. An existing group keeps the
	// kind it has.
	LogStore string
	// SyncState fsyncs every batch the state machine applies. Off by
	// default: the Raft log is synced, a process crash loses nothing, and
	// after a machine crash the state is rebuilt from the newest snapshot
	// and the log (store.Options.NoSync).
	SyncState bool
	// StateCommitDelay lets the batches a group's state machine applies
	// gather for up to this long in one open bbolt transaction before it
	// commits (store.Options.CommitDelay); reads commit them first, or read
	// them where they wait. 0 commits every batch. Not with SyncState.
	StateCommitDelay time.Duration
	// ProposalBatch is the most writes a leader puts in one log entry
	// (propose.go); 1 gives every write an entry of its own. Writes join an
	// entry only while ProposalsInFlight entries of the group are proposed
	// and not yet applied, so a lone writer never waits.
	ProposalBatch int
	// ProposalsInFlight is how many entries of coalesced writes a group's
	// leader keeps proposed and not yet applied before writes queue for
	// the next one.
	ProposalsInFlight int
	// ProposalLinger bounds how long a leader holds back an entry after
	// one of several writes, waiting for as many writes to queue (at most
	// twice as long as that entry took; propose.go). 0: never.
	ProposalLinger time.Duration
	// NoReadLease makes every linearizable read confirm leadership with a
	// round of heartbeats. By default a leader holding a read lease (a
	// quorum acknowledged its heartbeats within half a heartbeat timeout)
	// serves them at once; the lease needs every node's heartbeat timeout
	// to be at least half of any other's (lease.go).
	NoReadLease bool
	// NoHeartbeatBatching sends each group's heartbeats as RPCs of their
	// own, and turns quiet appends off. By default a node sends each peer
	// one frame every 0.15 heartbeat timeouts with the heartbeats of all
	// the groups it leads there (heartbeat.go).
	NoHeartbeatBatching bool
	// SharedConnections carries all of this node's Raft traffic to a peer,
	// every group's, in one TCP connection (yamux streams, mux.go) instead
	// of a connection pool per group and peer.
	SharedConnections bool
	// NoAppendBatching pipelines each group's AppendEntries to a follower
	// over a connection of its own (hashicorp/raft's NetworkTransport).
	// By default the pipelined appends of all of a node's groups to a peer
	// share one connection and its writes (appends.go). A node answers
	// batched appends either way, so nodes may differ in it.
	NoAppendBatching bool
	// PeerIdleTimeout is how long a peer's batched-append or heartbeat
	// connection may wait idle for its next frame before this node closes
	// it (a frame once begun must keep arriving within the lesser of this
	// and 10 s); a node replaces its own idle connections to a peer after
	// half of it, before the peer would close them. Default 2 minutes.
	PeerIdleTimeout time.Duration

	// noPipeline makes replication wait for each AppendEntries answer
	// before sending the next (hashicorp/raft's behaviour when a transport
	// has no pipeline); BenchmarkApply measures pipelining with it.
	noPipeline bool
	// noQuietAppends sends every pipelined AppendEntries to the follower,
	// even one that carries nothing new (pipeline.go).
	noQuietAppends bool

	// OnApply, if set, is called after each batch applied by any group. It
	// runs on that group's apply goroutine and must not block.
	OnApply func(group string, index uint64)
	// ChangeLogCount and ChangeLogAge bound each group's change log (0:
	// the store's defaults).
	ChangeLogCount int
	ChangeLogAge   time.Duration
}

// DefaultConfig returns the defaults: one-second heartbeat and election
// timeouts, snapshots every 8192 entries keeping 10240 trailing entries.
//
// A leader's raft runs with a 2.5 s heartbeat timeout, so its heartbeat
// goroutines ask every 250-500 ms instead of every 100-200 ms; with 100
// groups those asks were the largest part of an idle node's CPU left after
// batching. The leader lease check of raft (when a leader that cannot reach
// a quorum steps down) runs with 1 s to match.
//
// CommitTimeout is 500 ms, not hashicorp/raft's 50 ms: a leader with nothing
// new sends an AppendEntries to every follower of every group each tick, and
// at 50 ms those ticks were a third of an idle node's CPU with 100 groups.
// Writes do not wait for it; it only bounds how late an idle follower learns
// the last commit index (its stale reads and change feed lag by up to twice
// this).
//
// A group's leader keeps one entry of coalesced writes in flight
// (ProposalsInFlight 1, up to 256 writes an entry), and its state machine
// commits its bbolt transaction once a second (StateCommitDelay): under 256
// writing clients each round of fsyncs and AppendEntries then carries
// several times the writes, and each commit writes each dirty page once for
// a second of writes instead of a tenth (docs/PERFORMANCE.md).
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:       1000 * time.Millisecond,
		ElectionTimeout:        1000 * time.Millisecond,
		LeaderLeaseTimeout:     1000 * time.Millisecond,
		LeaderHeartbeatTimeout: 2500 * time.Millisecond,
		CommitTimeout:          500 * time.Millisecond,
		MaxAppendEntries:       64,
		SnapshotThreshold:      8192,
		SnapshotInterval:       30 * time.Second,
		TrailingLogs:           10240,
		LogStore:               LogShared,
		StateCommitDelay:       time.Second,
		ProposalBatch:          256,
		ProposalsInFlight:      1,
		ProposalLinger:         20 * time.Millisecond,
		PeerIdleTimeout:        2 * time.Minute,
	}
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("raftgroup: NodeID is required")
	case c.DataDir == "":
		return errors.New("raftgroup: DataDir is required")
	case c.Listener == nil:
		return errors.New("raftgroup: Listener is required")
	case c.Advertise == "":
		return errors.New("raftgroup: Advertise is required")
	case c.ElectionTimeout <= 0 || c.HeartbeatTimeout <= 0:
		return errors.New("raftgroup: timeouts must be positive")
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("raftgroup: LeaderLeaseTimeout %v is longer than HeartbeatTimeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.LeaderHeartbeatTimeout != 0 && c.LeaderHeartbeatTimeout < c.HeartbeatTimeout:
		return fmt.Errorf("raftgroup: LeaderHeartbeatTimeout %v is shorter than HeartbeatTimeout %v", c.LeaderHeartbeatTimeout, c.HeartbeatTimeout)
	case c.LeaderHeartbeatTimeout*2 > c.HeartbeatTimeout*5:
		return fmt.Errorf("raftgroup: LeaderHeartbeatTimeout %v is more than 2.5 times HeartbeatTimeout %v", c.LeaderHeartbeatTimeout, c.HeartbeatTimeout)
	case c.LeaderHeartbeatTimeout*2/5 > c.LeaderLeaseTimeout:
		return fmt.Errorf("raftgroup: LeaderHeartbeatTimeout %v lets a leader's raft wait up to %v between heartbeats: LeaderLeaseTimeout %v must be at least twice that", c.LeaderHeartbeatTimeout, c.LeaderHeartbeatTimeout/5, c.LeaderLeaseTimeout)
	}
	return nil
}

var groupIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// CheckGroupID reports whether id may name a group.
func CheckGroupID(id string) error {
	if !groupIDPattern.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrBadGroupID, id)
	}
	return nil
}

// Host runs many Raft groups in one process over one listener. Its methods
// may be called concurrently.
type Host struct {
	cfg Config
	mux *mux
	hb  *heartbeats
	ap  *appends

	mu     sync.Mutex // guards groups, damaged and closed
	groups map[string]*Group
	// damaged holds the replicas whose log this node cannot vouch for
	// (why, by group): they are not started, neither serve nor vote, until
	// their group has removed them and Wipe deleted them (see Damaged).
	damaged map[string]string
	closed  bool

	sharedMu sync.Mutex     // guards shared
	shared   *sharedlog.Log // opened with the first group that uses it
}

// sharedLog returns the node's shared log, opening it the first time.
func (h *Host) sharedLog() (*sharedlog.Log, error) {
	h.sharedMu.Lock()
	defer h.sharedMu.Unlock()
	if h.shared == nil {
		l, err := sharedlog.Open(filepath.Join(h.cfg.DataDir, "shared-log"), sharedlog.DefaultSegmentSize)
		if err != nil {
			return nil, err
		}
		h.shared = l
	}
	return h.shared, nil
}

// New starts a host and reopens every group found under DataDir/groups.
func New(cfg Config) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, d := range []string{cfg.DataDir, filepath.Join(cfg.DataDir, "groups")} {
		if err := privateDir(d); err != nil {
			return nil, err
		}
	}
	m, err := newMux(cfg.Listener, cfg.Advertise, cfg.Logger, cfg.SharedConnections)
	if err != nil {
		return nil, err
	}
	h := &Host{cfg: cfg, mux: m, groups: make(map[string]*Group), damaged: map[string]string{}}
	// Batches from peers are answered even when this node sends its own
	// heartbeats one by one, so nodes may differ in NoHeartbeatBatching.
	idle := cfg.PeerIdleTimeout
	if idle <= 0 {
		idle = DefaultConfig().PeerIdleTimeout
	}
	if h.hb, err = newHeartbeats(m, 3*cfg.HeartbeatTimeout/20, cfg.HeartbeatTimeout/4, 4*cfg.LeaderHeartbeatTimeout/5, 10*time.Second, idle); err != nil {
		m.close()
		return nil, err
	}
	if h.ap, err = newAppends(m, 10*time.Second, idle); err != nil {
		h.hb.close()
		m.close()
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(cfg.DataDir, "groups"))
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("raftgroup: %w", err)
	}
	if err := h.checkSharedLog(entries); err != nil {
		h.Close()
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() || CheckGroupID(e.Name()) != nil || h.damaged[e.Name()] != "" {
			continue
		}
		if _, err := h.Create(e.Name(), nil); err != nil {
			h.Close()
			return nil, fmt.Errorf("raftgroup: reopen %s: %w", e.Name(), err)
		}
	}
	return h, nil
}

// checkSharedLog opens the shared log if a group uses it. A log that holds
// damaged data that was synced (sharedlog.ErrCorrupt: not a torn tail) is
// set aside whole, renamed, never truncated or deleted, and every replica
// that kept its log there is marked damaged: the damaged record may be any
// of theirs, and a replica that lost entries or its vote must neither
// serve nor vote ("Protocol-Aware Recovery for Consensus-Based Storage",
// FAST '18). The node starts for its other groups; the damaged replicas are
// rebuilt from their groups' healthy majorities (Damaged, Wipe).
func (h *Host) checkSharedLog(entries []os.DirEntry) error {
	var users []string
	for _, e := range entries {
		if !e.IsDir() || CheckGroupID(e.Name()) != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(h.cfg.DataDir, "groups", e.Name(), sharedMarker)); err == nil {
			users = append(users, e.Name())
		}
	}
	if len(users) == 0 {
		return nil
	}
	_, err := h.sharedLog()
	if err == nil || !errors.Is(err, sharedlog.ErrCorrupt) {
		return err
	}
	dir := filepath.Join(h.cfg.DataDir, "shared-log")
	aside := fmt.Sprintf("%s.corrupt-%d", dir, time.Now().UnixNano())
	if rerr := os.Rename(dir, aside); rerr != nil {
		return errors.Join(err, rerr)
	}
	if serr := syncDir(h.cfg.DataDir); serr != nil {
		return errors.Join(err, serr)
	}
	reason := fmt.Sprintf("the node's shared log is damaged (%v); set aside as %s", err, filepath.Base(aside))
	for _, id := range users {
		h.damaged[id] = reason
	}
	h.cfg.Logger.Error("shared log damaged: its replicas will not serve or vote until they are rebuilt from their groups",
		"error", err, "set_aside", aside, "replicas", strings.Join(users, ","))
	return nil
}

// Damaged returns the replicas this node holds but cannot vouch for, with
// why. They are not running: their groups go on with their other replicas,
// whose leaders remove them; once removed, Wipe deletes them and the group
// adds this node back as a learner, as a replaced disk.
func (h *Host) Damaged() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.damaged)
}

// Wipe deletes the files of damaged replica id and clears the mark, so that
// it can be created afresh. The caller must have confirmed, from the
// group's leader, that the group's committed configuration no longer lists
// this node: a replica wiped while still a voter would come back empty and
// could vote for a leader that lacks acknowledged writes.
func (h *Host) Wipe(id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.damaged[id]; !ok {
		return fmt.Errorf("raftgroup: wipe %s: %w", id, ErrNotDamaged)
	}
	dir := filepath.Join(h.cfg.DataDir, "groups", id)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("raftgroup: wipe %s: %w", id, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	delete(h.damaged, id)
	h.cfg.Logger.Warn("damaged replica wiped; it is rebuilt from its group", "group", id)
	return nil
}

// NodeID returns this node's Raft server id.
func (h *Host) NodeID() string { return h.cfg.NodeID }

// Advertise returns this node's Raft address.
func (h *Host) Advertise() string { return h.cfg.Advertise }

// Create starts group id, reopening its files if they exist. If the group
// has no state yet and bootstrap is not empty, it is bootstrapped with those
// servers as its first configuration. Creating a running group returns it.
func (h *Host) Create(id string, bootstrap []raft.Server) (*Group, error) {
	if err := CheckGroupID(id); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if g, ok := h.groups[id]; ok {
		return g, nil
	}
	if why, ok := h.damaged[id]; ok {
		return nil, fmt.Errorf("raftgroup: %s: %w: %s", id, ErrDamaged, why)
	}
	g, err := openGroup(h, id, bootstrap, nil)
	if err != nil {
		return nil, err
	}
	h.groups[id] = g
	return g, nil
}

// Group returns the running group id.
func (h *Host) Group(id string) (*Group, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g, ok := h.groups[id]
	return g, ok
}

// Groups returns the running groups ordered by id.
func (h *Host) Groups() []*Group {
	h.mu.Lock()
	out := make([]*Group, 0, len(h.groups))
	for _, g := range h.groups {
		out = append(out, g)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// Recover rebuilds group id from this replica alone, for a group that has
// lost a quorum of its voters for good: it stops the replica, makes this
// node the group's only voter (every entry this replica holds counts as
// committed; what only the lost voters had is gone), and starts it again.
// The replica then elects itself and the placement driver adds replicas
// back. Nothing is deleted but the log entries the new snapshot covers.
func (h *Host) Recover(id string) (*Group, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	g, ok := h.groups[id]
	if !ok {
		return nil, ErrNoGroup
	}
	if g.IsLeader() {
		return nil, fmt.Errorf("raftgroup: recover %s: %w", id, ErrHasLeader)
	}
	delete(h.groups, id)
	if err := g.close(); err != nil {
		return nil, fmt.Errorf("raftgroup: recover %s: stopping the replica: %w", id, err)
	}
	self := []raft.Server{{ID: raft.ServerID(h.cfg.NodeID), Address: raft.ServerAddress(h.cfg.Advertise), Suffrage: raft.Voter}}
	ng, err := openGroup(h, id, nil, self)
	if err != nil {
		return nil, err
	}
	h.groups[id] = ng
	return ng, nil
}

// Remove stops group id and deletes its files.
func (h *Host) Remove(id string) error {
	h.mu.Lock()
	g, ok := h.groups[id]
	delete(h.groups, id)
	h.mu.Unlock()
	if !ok {
		return ErrNoGroup
	}
	err := g.close()
	if _, serr := os.Stat(filepath.Join(g.dir, sharedMarker)); serr == nil {
		if l, lerr := h.sharedLog(); lerr != nil {
			err = errors.Join(err, lerr)
		} else if derr := l.Drop(id); derr != nil {
			err = errors.Join(err, derr)
		}
	}
	if rerr := os.RemoveAll(g.dir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// Close stops every group and the listener. It is idempotent.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	groups := h.groups
	h.groups = map[string]*Group{}
	h.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.close(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	h.ap.close()
	h.hb.close()
	h.mux.close()
	h.sharedMu.Lock()
	if h.shared != nil {
		if err := h.shared.Close(); err != nil {
			errs = append(errs, err)
		}
		h.shared = nil
	}
	h.sharedMu.Unlock()
	return errors.Join(errs...)
}
