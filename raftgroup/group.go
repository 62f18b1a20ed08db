package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/ldcd/ldcd/store"
)

// Group is one Raft group hosted by a Host: a hashicorp/raft instance with its
// own log, state machine, snapshots and transport. Its methods may be called
// concurrently.
type Group struct {
	id     string
	dir    string
	host   *Host
	logger *slog.Logger

	raft  *raft.Raft
	fsm   *store.Store
	logs  logStore
	trans *leaseTransport
	lease *readLease // nil when read leases are off

	readyTerm atomic.Uint64 // the term in which a read barrier completed
	barrierCh chan struct{} // one barrier at a time (a lock that honours ctx)
	verify    verifier
	prop      *proposer // nil: every write an entry of its own

	peerMu  sync.Mutex      // guards failing
	failing map[string]bool // peers whose heartbeats fail, as this leader sees them

	notifyCh chan bool
	done     chan struct{}
	wg       sync.WaitGroup
	closeMu  sync.Mutex // guards closed
	closed   bool
}

// logCacheSize is how many recent log entries each group keeps in memory.
const logCacheSize = 512

// openGroup opens (or creates) group id. bootstrap, for a fresh group, is
// its first configuration; recover, for a group with state, replaces its
// configuration before raft starts (Host.Recover).
func openGroup(h *Host, id string, bootstrap, recover []raft.Server) (g *Group, err error) {
	dir := filepath.Join(h.cfg.DataDir, "groups", id)
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	logger := h.cfg.Logger.With("group", id)
	g = &Group{
		id: id, dir: dir, host: h, logger: logger,
		barrierCh: make(chan struct{}, 1),
		failing:   map[string]bool{},
		notifyCh:  make(chan bool, 8),
		done:      make(chan struct{}),
	}
	g.verify.g = g
	if n := min(h.cfg.ProposalBatch, store.MaxBatchCommands); n > 1 {
		g.prop = &proposer{g: g, maxBatch: n, inFlight: max(h.cfg.ProposalsInFlight, 1), maxLinger: h.cfg.ProposalLinger}
	}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	var onApply func(uint64)
	if h.cfg.OnApply != nil {
		onApply = func(index uint64) { h.cfg.OnApply(id, index) }
	}
	g.fsm, err = store.Open(filepath.Join(dir, "state.db"), store.Options{OnApply: onApply, ChangeLogCount: h.cfg.ChangeLogCount, ChangeLogAge: h.cfg.ChangeLogAge, NoSync: !h.cfg.SyncState, CommitDelay: h.cfg.StateCommitDelay})
	if err != nil {
		return nil, err
	}
	if g.fsm.Discarded {
		logger.Warn("state machine was open at a machine crash and may be torn: set aside as state.db.torn, rebuilding from the newest snapshot and the log")
	}
	closers = append(closers, g.fsm.Close)
	g.logs, err = openLogStore(h, id, dir, h.cfg.LogStore, HCLog(logger, "wal"))
	if err != nil {
		return nil, err
	}
	closers = append(closers, g.logs.Close)
	hlog := HCLog(logger, "raft")
	snaps, err := newPrivateSnapshots(dir, 2, hlog)
	if err != nil {
		return nil, fmt.Errorf("raftgroup: snapshot store: %w", err)
	}
	if err := g.catchUpFromSnapshot(snaps.FileSnapshotStore); err != nil {
		return nil, err
	}
	layer, err := h.mux.layer(id)
	if err != nil {
		return nil, err
	}
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hlog,
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(h.cfg.NodeID)
	rc.Logger = hlog
	rc.HeartbeatTimeout = h.cfg.HeartbeatTimeout
	rc.ElectionTimeout = h.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = h.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = h.cfg.CommitTimeout
	rc.MaxAppendEntries = h.cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = h.cfg.SnapshotThreshold
	rc.SnapshotInterval = h.cfg.SnapshotInterval
	rc.TrailingLogs = h.cfg.TrailingLogs
	rc.NoSnapshotRestoreOnStart = true // the bbolt state survives restarts
	rc.NotifyCh = g.notifyCh

	fresh, err := raft.HasExistingState(g.logs, g.logs, snaps)
	if err != nil {
		return nil, fmt.Errorf("raftgroup: %w", err)
	}
	fresh = !fresh
	// The acknowledgements a lease is made of are recorded either way:
	// quiet appends ask them whether a follower is in touch.
	acks := newReadLease(h.cfg.HeartbeatTimeout / 2)
	if !h.cfg.NoReadLease {
		g.lease = acks
	}
	// A replica with state may have acknowledged a leader that now holds a
	// lease on it: it does not vote for a heartbeat timeout (lease.go).
	var quiet time.Duration
	if !fresh {
		quiet = h.cfg.HeartbeatTimeout
	}
	g.trans = newLeaseTransport(nt, id, h.hb, !h.cfg.NoHeartbeatBatching, acks, quiet, h.cfg.noPipeline)
	g.trans.ap = h.ap
	g.trans.batchAppends = !h.cfg.NoAppendBatching
	h.ap.register(id, g.trans)
	g.trans.leaseReads = g.lease != nil
	if !h.cfg.noQuietAppends {
		// Heartbeat rounds go every 150 ms at the default 1 s timeout: a
		// live follower acknowledged one sent within 300 ms.
		g.trans.contactFresh = 3 * h.cfg.HeartbeatTimeout / 10
	}
	closers = append(closers, g.trans.Close)
	// Recent entries stay in memory: the leader reads each entry back to
	// replicate it, and without the cache every read is a pread.
	logs, err := raft.NewLogCache(logCacheSize, g.logs)
	if err != nil {
		return nil, fmt.Errorf("raftgroup: %w", err)
	}
	if len(recover) > 0 {
		if fresh {
			return nil, fmt.Errorf("raftgroup: recover %s: %w", id, ErrNoState)
		}
		// Every entry this replica holds is applied, committed or not, and
		// the configuration is set to recover in a new snapshot; the log
		// before it is deleted (raft.RecoverCluster).
		if err := raft.RecoverCluster(rc, recoveryFSM{g.fsm}, logs, g.logs, snaps, g.trans, raft.Configuration{Servers: recover}); err != nil {
			return nil, fmt.Errorf("raftgroup: recover %s: %w", id, err)
		}
		logger.Warn("group recovered with a new configuration", "servers", fmt.Sprint(recover), "applied_index", g.fsm.AppliedIndex())
	}
	g.raft, err = raft.NewRaft(rc, g.fsm, logs, g.logs, snaps, g.trans)
	if err != nil {
		return nil, fmt.Errorf("raftgroup: start raft: %w", err)
	}
	leader := func() raft.ServerID { _, id := g.raft.LeaderWithID(); return id }
	g.trans.leader.Store(&leader)
	leading := func(term uint64) bool { return g.raft.State() == raft.Leader && g.raft.CurrentTerm() == term }
	g.trans.leading.Store(&leading)
	if fresh && len(bootstrap) > 0 {
		if err := g.raft.BootstrapCluster(raft.Configuration{Servers: bootstrap}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			g.raft.Shutdown().Error()
			return nil, fmt.Errorf("raftgroup: bootstrap %s: %w", id, err)
		}
	}
	// Track which peers this leader cannot reach, from raft's heartbeat
	// observations; the filter runs inline and forwards nothing.
	g.raft.RegisterObserver(raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		switch d := o.Data.(type) {
		case raft.FailedHeartbeatObservation:
			g.peerMu.Lock()
			g.failing[string(d.PeerID)] = true
			g.peerMu.Unlock()
		case raft.ResumedHeartbeatObservation:
			g.peerMu.Lock()
			delete(g.failing, string(d.PeerID))
			g.peerMu.Unlock()
		case raft.PeerObservation:
			// Replication to the peer started or stopped: a peer removed
			// while failing and added again starts with a clean slate (no
			// "resumed" observation would ever clear it).
			g.peerMu.Lock()
			delete(g.failing, string(d.Peer.ID))
			g.peerMu.Unlock()
		case raft.LeaderObservation:
			g.peerMu.Lock()
			clear(g.failing)
			g.peerMu.Unlock()
		}
		return false
	}))
	g.wg.Add(1)
	go g.watchLeadership()
	logger.Info("group opened", "fresh", fresh, "applied_index", g.fsm.AppliedIndex())
	return g, nil
}

// recoveryFSM gives raft.RecoverCluster snapshots that release themselves
// once persisted: RecoverCluster never calls Release, and a store snapshot
// holds a read transaction until it is released (Close would wait for it
// forever).
type recoveryFSM struct{ raft.FSM }

func (f recoveryFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.FSM.Snapshot()
	if err != nil {
		return nil, err
	}
	return releasingSnapshot{s}, nil
}

type releasingSnapshot struct{ raft.FSMSnapshot }

func (s releasingSnapshot) Persist(sink raft.SnapshotSink) error {
	defer s.FSMSnapshot.Release()
	return s.FSMSnapshot.Persist(sink)
}

// catchUpFromSnapshot restores the state machine from the newest snapshot if
// the state machine is behind it (its file was lost or replaced). Raft replays
// only the entries after the snapshot, so without this they would be applied
// to a state that lacks what came before.
func (g *Group) catchUpFromSnapshot(snaps *raft.FileSnapshotStore) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	if list[0].Index <= g.fsm.AppliedIndex() {
		return nil
	}
	g.logger.Warn("state machine is behind the newest snapshot, restoring it", "applied_index", g.fsm.AppliedIndex(), "snapshot_index", list[0].Index)
	_, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("raftgroup: open snapshot: %w", err)
	}
	return g.fsm.Restore(rc)
}

// watchLeadership starts a read barrier as soon as this replica becomes
// leader, so that the first linearizable read of a term does not wait for it.
// hashicorp/raft blocks on NotifyCh, so the channel is drained at once and the
// barrier runs on a goroutine of its own.
func (g *Group) watchLeadership() {
	defer g.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kick := make(chan struct{}, 1)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
			bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
			if err := g.readBarrier(bctx); err != nil && !errors.Is(err, ErrNotLeader) && ctx.Err() == nil {
				g.logger.Warn("read barrier failed", "error", err)
			}
			bcancel()
		}
	}()
	for {
		select {
		case <-g.done:
			return
		case leader := <-g.notifyCh:
			g.paceHeartbeats(leader)
			if !leader {
				g.logger.Info("lost leadership")
				continue
			}
			g.logger.Info("became leader", "term", g.raft.CurrentTerm())
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
}

// paceHeartbeats sets the heartbeat timeout raft runs with: the leader's
// (Config.LeaderHeartbeatTimeout) while it leads and its heartbeats are
// batched, the configured one otherwise. Only watchLeadership calls it, in
// the order raft reports leadership, so the last report wins.
//
// Lowering it when leadership is lost makes raft's follower loop check for
// contact at once: a replica that stepped down for want of a quorum may so
// start a pre-vote sooner, which disturbs no leader (pre-vote is on).
func (g *Group) paceHeartbeats(leading bool) {
	cfg := g.host.cfg
	ht := cfg.HeartbeatTimeout
	if leading && g.trans.batch && cfg.LeaderHeartbeatTimeout > ht {
		ht = cfg.LeaderHeartbeatTimeout
	}
	rc := g.raft.ReloadableConfig()
	if rc.HeartbeatTimeout == ht {
		return
	}
	rc.HeartbeatTimeout = ht
	rc.ElectionTimeout = max(cfg.ElectionTimeout, ht)
	if err := g.raft.ReloadConfig(rc); err != nil {
		g.logger.Warn("cannot set the heartbeat timeout", "heartbeat_timeout", ht, "error", err)
	}
}

// ID returns the group id.
func (g *Group) ID() string { return g.id }

// Store returns the group's state machine, for local (stale) reads.
func (g *Group) Store() *store.Store { return g.fsm }

// Raft returns the underlying raft instance. Callers must not shut it down.
func (g *Group) Raft() *raft.Raft { return g.raft }

func (g *Group) close() error {
	g.closeMu.Lock()
	defer g.closeMu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	close(g.done)
	err := g.raft.Shutdown().Error()
	g.wg.Wait()
	err = errors.Join(err, g.trans.Close(), g.logs.Close(), g.fsm.Close())
	g.logger.Info("group closed")
	return err
}

func (g *Group) notLeader() error {
	addr, id := g.raft.LeaderWithID()
	return &NotLeaderError{Group: g.id, LeaderID: string(id), LeaderAddr: string(addr)}
}

// wait waits for f, or for ctx to end.
func wait(ctx context.Context, f raft.Future) error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// timeoutOf converts ctx's deadline into a hashicorp/raft enqueue timeout.
func timeoutOf(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if t := time.Until(d); t > 0 {
			return t
		}
		return time.Millisecond
	}
	return 0
}

// Apply proposes cmd and waits for it to be applied. A *NotLeaderError means
// it was not proposed; an error wrapping ErrIndeterminate means it may or may
// not have been applied; a *store.MovedError means the group refused it (a
// shard it touches has moved to another group).
func (g *Group) Apply(ctx context.Context, cmd *store.Command) (*store.Result, error) {
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	data := cmd.Encode()
	if g.prop == nil {
		return g.propose(ctx, data)
	}
	if g.raft.State() != raft.Leader {
		return nil, g.notLeader()
	}
	return g.prop.propose(ctx, cmd, data)
}

// ApplyAdmin proposes an admin command (a split step) and waits for it.
// An invalid one (store.Admin.Validate) is refused before it is proposed.
func (g *Group) ApplyAdmin(ctx context.Context, a *store.Admin) (*store.Result, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return g.propose(ctx, a.Encode())
}

func (g *Group) propose(ctx context.Context, data []byte) (*store.Result, error) {
	if g.raft.State() != raft.Leader {
		return nil, g.notLeader()
	}
	f := g.raft.Apply(data, timeoutOf(ctx))
	if err := wait(ctx, f); err != nil {
		return nil, g.proposeError(err)
	}
	return result(g, f.Response())
}

// proposeError turns what a proposal's future (or its wait) failed with
// into Apply's error: not proposed (*NotLeaderError, a deadline before the
// entry was enqueued) or ErrIndeterminate.
func (g *Group) proposeError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return g.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		// Not enqueued, so never proposed.
		return fmt.Errorf("raftgroup: %s: %w", g.id, context.DeadlineExceeded)
	default:
		return fmt.Errorf("%w: %s: %w", ErrIndeterminate, g.id, err)
	}
}

// ReadBarrier returns nil once the local state machine may serve a
// linearizable read: this replica is the leader, has applied a barrier in its
// current term, and has confirmed its leadership with a quorum after the call
// began. Concurrent callers share one confirmation.
func (g *Group) ReadBarrier(ctx context.Context) error {
	if err := g.readBarrier(ctx); err != nil {
		return err
	}
	if g.leased() {
		return nil
	}
	return g.verify.wait(ctx)
}

// leased reports whether this replica is the leader and holds the read lease
// of its current term (lease.go).
func (g *Group) leased() bool {
	if g.lease == nil || g.raft.State() != raft.Leader {
		return false
	}
	term := g.raft.CurrentTerm()
	cfg := g.raft.GetConfiguration().Configuration()
	return g.lease.valid(term, raft.ServerID(g.host.cfg.NodeID), cfg, time.Now()) && g.raft.State() == raft.Leader
}

// readBarrier makes sure a barrier was applied in the current term.
func (g *Group) readBarrier(ctx context.Context) error {
	if g.raft.State() != raft.Leader {
		return g.notLeader()
	}
	term := g.raft.CurrentTerm()
	if g.readyTerm.Load() == term {
		return nil
	}
	select {
	case g.barrierCh <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-g.barrierCh }()
	if g.readyTerm.Load() == term {
		return nil
	}
	if err := wait(ctx, g.raft.Barrier(timeoutOf(ctx))); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return g.notLeader()
		}
		return fmt.Errorf("raftgroup: %s: barrier: %w", g.id, err)
	}
	g.readyTerm.Store(term)
	return nil
}

// verifier shares one VerifyLeader among concurrent readers. A reader joins
// the next round, never one already in flight, because a round that began
// before the read cannot vouch for it.
type verifier struct {
	g       *Group
	mu      sync.Mutex // guards waiting and running
	waiting []chan error
	running bool
	rounds  atomic.Uint64 // VerifyLeader rounds run, for tests
}

func (v *verifier) wait(ctx context.Context) error {
	ch := make(chan error, 1)
	v.mu.Lock()
	v.waiting = append(v.waiting, ch)
	if !v.running {
		v.running = true
		go v.run()
	}
	v.mu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (v *verifier) run() {
	for {
		v.mu.Lock()
		batch := v.waiting
		v.waiting = nil
		if len(batch) == 0 {
			v.running = false
			v.mu.Unlock()
			return
		}
		v.mu.Unlock()
		v.rounds.Add(1)
		v.g.trans.verifying.Add(1) // its heartbeats start a round at once and take no stored answer
		err := v.g.raft.VerifyLeader().Error()
		v.g.trans.verifying.Add(-1)
		if err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				err = v.g.notLeader()
			} else {
				err = fmt.Errorf("raftgroup: %s: verify leader: %w", v.g.id, err)
			}
		}
		for _, ch := range batch {
			ch <- err
		}
	}
}

// PeerReachable reports whether this replica, as leader, has no failing
// heartbeats to peer id.
func (g *Group) PeerReachable(id string) bool {
	g.peerMu.Lock()
	defer g.peerMu.Unlock()
	return !g.failing[id]
}

// Server is one member of a group's configuration.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// Status is a point-in-time view of a group on this replica.
type Status struct {
	ID           string   `json:"id"`
	State        string   `json:"state"` // Leader, Follower, Candidate, Shutdown
	Term         uint64   `json:"term"`
	LastIndex    uint64   `json:"last_index"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	Leader       string   `json:"leader"`
	LeaderAddr   string   `json:"leader_addr"`
	Servers      []Server `json:"servers"`
	// LastContactMs is how long ago a follower last heard from its leader.
	LastContactMs int64 `json:"last_contact_ms"`
}

// InTouch reports whether this replica's data is current: it is the
// leader, or a follower that has been replicated to since it started and
// heard from its leader within a heartbeat timeout. A replica that restarted
// and has not been caught up yet, or is cut off from its leader, is not, and
// must not present its data as current (a change feed source, for one).
func (g *Group) InTouch() error {
	if g.raft.State() == raft.Leader {
		return nil
	}
	if g.raft.CommitIndex() == 0 {
		return fmt.Errorf("raftgroup: %s: this replica has not been replicated to since it started", g.id)
	}
	lc := g.raft.LastContact()
	if lc.IsZero() {
		return fmt.Errorf("raftgroup: %s: this replica has not heard from a leader since it started", g.id)
	}
	if ago := time.Since(lc); ago > g.host.cfg.HeartbeatTimeout {
		return fmt.Errorf("raftgroup: %s: this replica last heard from its leader %v ago", g.id, ago.Round(time.Millisecond))
	}
	return nil
}

// IsLeader reports whether this replica is the group's leader now.
func (g *Group) IsLeader() bool { return g.raft.State() == raft.Leader }

// Leader returns the id and Raft address of the group's leader as this
// replica knows it (empty if unknown).
func (g *Group) Leader() (id, addr string) {
	a, i := g.raft.LeaderWithID()
	return string(i), string(a)
}

// Servers returns the group's latest configuration.
func (g *Group) Servers() ([]Server, error) {
	f := g.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// CommittedServers returns the group's configuration as committed: only the
// leader answers (a *NotLeaderError otherwise). It reads the leader's latest
// configuration, then commits a barrier entry behind it; once the barrier is
// committed, so is every entry before it, the configuration included, and
// this replica was the leader of a quorum when it was. hashicorp/raft's own
// GetConfiguration returns the latest configuration, committed or not, and
// an uncommitted one may be undone by the next leader: a replica must never
// be destroyed on its word (see placement.Local.Membership).
func (g *Group) CommittedServers(ctx context.Context) ([]Server, error) {
	if !g.IsLeader() {
		return nil, g.notLeader()
	}
	servers, err := g.Servers()
	if err != nil {
		return nil, err
	}
	if err := wait(ctx, g.raft.Barrier(timeoutOf(ctx))); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return nil, g.notLeader()
		}
		return nil, fmt.Errorf("raftgroup: %s: confirming the configuration: %w", g.id, err)
	}
	return servers, nil
}

// Status returns the group's status on this replica.
func (g *Group) Status() Status {
	lid, laddr := g.Leader()
	st := Status{
		ID:           g.id,
		State:        g.raft.State().String(),
		Term:         g.raft.CurrentTerm(),
		LastIndex:    g.raft.LastIndex(),
		CommitIndex:  g.raft.CommitIndex(),
		AppliedIndex: g.fsm.AppliedIndex(),
		Leader:       lid,
		LeaderAddr:   laddr,
	}
	if st.State != raft.Leader.String() {
		if lc := g.raft.LastContact(); !lc.IsZero() {
			st.LastContactMs = time.Since(lc).Milliseconds()
		}
	}
	st.Servers, _ = g.Servers()
	return st
}

func (g *Group) change(ctx context.Context, f raft.IndexFuture) error {
	if err := wait(ctx, f); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return g.notLeader()
		}
		return fmt.Errorf("raftgroup: %s: configuration change: %w", g.id, err)
	}
	return nil
}

// AddNonvoter adds a replica that receives the log but does not vote. It is
// a no-op for a server that is already a member.
func (g *Group) AddNonvoter(ctx context.Context, id, addr string) error {
	return g.change(ctx, g.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx)))
}

// AddVoter adds a voter or promotes a nonvoter.
func (g *Group) AddVoter(ctx context.Context, id, addr string) error {
	return g.change(ctx, g.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx)))
}

// RemoveServer removes a member from the group.
func (g *Group) RemoveServer(ctx context.Context, id string) error {
	return g.change(ctx, g.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx)))
}

// TransferLeadership hands leadership to server id (any voter if id is
// empty).
func (g *Group) TransferLeadership(ctx context.Context, id, addr string) error {
	// The target will be elected without waiting out the followers'
	// heartbeat timeouts, so the lease ends now, not when it would expire.
	if g.lease != nil {
		g.lease.disable(g.raft.CurrentTerm())
	}
	var f raft.Future
	if id == "" {
		f = g.raft.LeadershipTransfer()
	} else {
		f = g.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	if err := wait(ctx, f); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return g.notLeader()
		}
		return fmt.Errorf("raftgroup: %s: leadership transfer: %w", g.id, err)
	}
	return nil
}
