package raftgroup

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A read lease lets a leader serve linearizable reads from its own state
// without a round of heartbeats per read (what TiKV does by default).
//
// Why it holds. A hashicorp/raft follower that has heard from a leader
// refuses to vote for anyone else until a heartbeat timeout has passed since
// it last did (requestVote's "we have a leader" check; the follower loop
// forgets the leader only after HeartbeatTimeout without contact). So if a
// quorum of voters acknowledged heartbeats this leader sent at or after time
// s in its term, no other server can win an election before s plus a
// heartbeat timeout, and nothing can be committed elsewhere before then. The
// lease runs from the send time for half a heartbeat timeout: a margin for
// clock rates and for peers configured with a shorter timeout (down to half
// of ours).
//
// The three ways hashicorp/raft lets a follower vote sooner are closed here:
//   - a leadership transfer (TimeoutNow makes voters ignore their leader):
//     the leader drops its lease for the rest of the term before it starts
//     one;
//   - a TimeoutNow arriving late, from a server that is no longer the leader
//     (it carries no term): refused unless it comes from the leader this
//     replica follows now;
//   - a follower that restarted has forgotten its leader: a group refuses to
//     vote until a heartbeat timeout after it opened.
//
// A read still needs the term's barrier first (readBarrier), so the leader
// has applied everything committed before it took over, and every write it
// acknowledged since was applied before the acknowledgement.
type readLease struct {
	dur time.Duration

	mu   sync.Mutex
	term uint64                      // the term acks belong to
	acks map[raft.ServerID]time.Time // send time of the newest heartbeat each peer acknowledged in term
	off  uint64                      // a term in which this leader started a leadership transfer
}

func newReadLease(d time.Duration) *readLease {
	return &readLease{dur: d, acks: map[raft.ServerID]time.Time{}}
}

// ack records that peer id acknowledged, as leader of term, a heartbeat or
// append sent at sent.
func (l *readLease) ack(term uint64, id raft.ServerID, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if term > l.term {
		l.term = term
		clear(l.acks)
	}
	if term == l.term && sent.After(l.acks[id]) {
		l.acks[id] = sent
	}
}

// heardFrom reports whether peer id acknowledged, in term, a heartbeat or
// append sent within d before now.
func (l *readLease) heardFrom(term uint64, id raft.ServerID, d time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.acks[id]
	return term == l.term && ok && time.Since(at) < d
}

// disable drops the lease for the rest of term.
func (l *readLease) disable(term uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if term > l.off {
		l.off = term
	}
}

// valid reports whether self, leader of term with configuration cfg, holds
// the lease at now: a quorum of cfg's voters (self included) acknowledged a
// heartbeat sent within the lease duration before now.
func (l *readLease) valid(term uint64, self raft.ServerID, cfg raft.Configuration, now time.Time) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if term == 0 || term != l.term || term <= l.off {
		return false
	}
	voters, fresh := 0, 0
	for _, s := range cfg.Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID == self {
			fresh++
		} else if at, ok := l.acks[s.ID]; ok && now.Sub(at) < l.dur {
			fresh++
		}
	}
	return voters > 0 && fresh > voters/2
}

var (
	errNotVotingYet = errors.New("raftgroup: not voting yet: this replica started less than a heartbeat timeout ago")
	errStaleTimeout = errors.New("raftgroup: TimeoutNow refused: the sender is not the leader this replica follows")
)

// leaseTransport is a group's NetworkTransport seen by hashicorp/raft. It
// feeds the read lease with the heartbeats peers acknowledge, and filters the
// RPCs that would let this replica vote while a leader may hold a lease it
// granted: RequestVote until quietUntil, TimeoutNow from anyone but the
// leader it follows.
// Heartbeats reach raft through the transport's heartbeat handler, not the
// consumer channel, so the filter costs one hand-off per other RPC.
type leaseTransport struct {
	*raft.NetworkTransport
	group string
	hb    *heartbeats // answers batched heartbeats for this group; nil in tests
	ap    *appends    // answers batched appends for this group; nil in tests
	// batchAppends sends this group's pipelined appends through ap.
	batchAppends bool
	batch        bool // send this group's heartbeats through hb
	noPipeline   bool
	lease        *readLease // the acknowledgements; a read lease only where leaseReads
	quietUntil   time.Time
	leader       atomic.Pointer[func() raft.ServerID]   // the leader this replica follows, set once raft runs
	leading      atomic.Pointer[func(term uint64) bool] // whether raft leads in a term, set once raft runs

	heartbeatFn atomic.Pointer[func(raft.RPC)] // raft's heartbeat fast path, for batched heartbeats
	// raft's heartbeat handler runs on the transports' goroutines, which
	// raft's Shutdown does not wait for: each call holds hbMu for reading,
	// and Close takes it to wait them out, so that none still runs (and
	// writes a new term) when the group closes its log store.
	hbMu      sync.RWMutex
	hbClosed  bool
	verifying atomic.Int32 // VerifyLeader rounds in progress: heartbeats are urgent (heartbeat.go)

	// contactFresh > 0 lets the pipeline answer appends that carry nothing
	// new (pipeline.go) while this group's heartbeats to the follower were
	// acknowledged within it.
	contactFresh time.Duration
	quietAppends atomic.Uint64 // appends answered without the network, for tests
	// leaseReads: this group serves reads under its lease, so heartbeats
	// may take stored answers (heartbeat.go); lease records the
	// acknowledgements either way.
	leaseReads bool

	rpcs      chan raft.RPC
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func newLeaseTransport(t *raft.NetworkTransport, group string, hb *heartbeats, batch bool, lease *readLease, quiet time.Duration, noPipeline bool) *leaseTransport {
	lt := &leaseTransport{
		NetworkTransport: t,
		group:            group,
		hb:               hb,
		batch:            batch && hb != nil,
		noPipeline:       noPipeline,
		lease:            lease,
		quietUntil:       time.Now().Add(quiet),
		rpcs:             make(chan raft.RPC),
		done:             make(chan struct{}),
	}
	lt.wg.Add(1)
	go lt.filter()
	if hb != nil {
		hb.register(group, lt)
	}
	return lt
}

// SetHeartbeatHandler implements raft.Transport; batched heartbeats use the
// handler too (heartbeat.go). Either way it runs under hbMu.
func (t *leaseTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		t.heartbeatFn.Store(nil)
		t.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	guarded := func(rpc raft.RPC) {
		t.hbMu.RLock()
		defer t.hbMu.RUnlock()
		if t.hbClosed {
			rpc.Respond(nil, ErrClosed)
			return
		}
		cb(rpc)
	}
	t.heartbeatFn.Store(&guarded)
	t.NetworkTransport.SetHeartbeatHandler(guarded)
}

// Consumer implements raft.Transport.
func (t *leaseTransport) Consumer() <-chan raft.RPC { return t.rpcs }

func (t *leaseTransport) filter() {
	defer t.wg.Done()
	in := t.NetworkTransport.Consumer()
	for {
		var rpc raft.RPC
		select {
		case rpc = <-in:
		case <-t.done:
			return
		}
		switch req := rpc.Command.(type) {
		case *raft.RequestVoteRequest:
			if time.Now().Before(t.quietUntil) {
				rpc.Respond(nil, errNotVotingYet)
				continue
			}
		case *raft.TimeoutNowRequest:
			if f := t.leader.Load(); f == nil || len(req.ID) == 0 || raft.ServerID(req.ID) != (*f)() {
				rpc.Respond(nil, errStaleTimeout)
				continue
			}
		}
		select {
		case t.rpcs <- rpc:
		case <-t.done:
			return
		}
	}
}

// AppendEntries implements raft.Transport: heartbeats (and appends when not
// pipelined) go through it; an acknowledgement in the request's term renews
// the lease from the time the request was sent. A batched heartbeat's
// answer came from a round, which renewed the lease itself (heartbeat.go).
func (t *leaseTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	start := time.Now()
	if t.batch && isHeartbeat(args) {
		// sent is when the round that answered was sent. Without a read
		// lease nothing leans on time: no stored answers.
		sent, err := t.hb.call(id, target, t, args, resp, t.verifying.Load() > 0, t.leaseReads)
		if err == nil && sent.Before(start) && t.verifying.Load() > 0 {
			// A VerifyLeader round began while this call was answered
			// from an older round: raft may count this answer for it, so
			// make it one sent after the round began.
			_, err = t.hb.call(id, target, t, args, resp, true, false)
		}
		return err
	}
	err := t.NetworkTransport.AppendEntries(id, target, args, resp)
	if err == nil && t.lease != nil && resp.Success && resp.Term == args.Term {
		t.lease.ack(args.Term, id, start)
	}
	return err
}

// appendPeer returns the batched-append sender to target, or nil where
// this group's appends go through NetworkTransport.
func (t *leaseTransport) appendPeer(target raft.ServerAddress) *apPeer {
	if t.ap == nil || !t.batchAppends {
		return nil
	}
	return t.ap.peer(target)
}

// leads reports whether this group's raft leads in term.
func (t *leaseTransport) leads(term uint64) bool {
	f := t.leading.Load()
	return f != nil && (*f)(term)
}

// freshContact reports whether follower id acknowledged, in term, a
// heartbeat or append sent within contactFresh.
func (t *leaseTransport) freshContact(id raft.ServerID, term uint64) bool {
	return t.lease != nil && t.lease.heardFrom(term, id, t.contactFresh)
}

// AppendEntriesPipeline implements raft.Transport.
func (t *leaseTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if t.noPipeline {
		return nil, raft.ErrPipelineReplicationNotSupported
	}
	var p raft.AppendPipeline
	var err error
	if peer := t.appendPeer(target); peer != nil {
		p = newAPPipeline(peer, t.group)
	} else {
		p, err = t.NetworkTransport.AppendEntriesPipeline(id, target)
	}
	if err != nil || !t.batch || t.contactFresh <= 0 {
		return p, err
	}
	return newQuietPipeline(t, id, target, p), nil
}

// Close stops the filter and closes the transport.
func (t *leaseTransport) Close() error {
	t.closeOnce.Do(func() {
		close(t.done)
		if t.hb != nil {
			t.hb.unregister(t.group, t)
		}
		if t.ap != nil {
			t.ap.unregister(t.group, t)
		}
		t.hbMu.Lock() // waits for heartbeat handlers still running
		t.hbClosed = true
		t.hbMu.Unlock()
	})
	err := t.NetworkTransport.Close()
	t.wg.Wait()
	return err
}
