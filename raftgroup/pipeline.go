package raftgroup

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Quiet appends. A hashicorp/raft leader's pipeline sends every follower an
// AppendEntries each commit timeout, entries or not, so that the follower
// learns the commit index. In an idle group that request is the same every
// time (same term, same previous entry, same commit index): the follower
// learns nothing from it, and the leader learns only that the follower is
// alive, which the heartbeats already tell it. With 101 groups those
// requests were a fifth of an idle node's CPU (a write, a read and a
// msgpack round on both sides each).
//
// quietPipeline does not send such a request, and hands raft no answer for
// it (raft ignores the future a pipelined send returns, and there is nothing
// in the follower's answer for it), when all of these hold:
//   - it carries no entries, and the newest request answered (nothing is in
//     flight) succeeded and was the same: term, previous entry and its term,
//     commit index;
//   - this group's heartbeats to the follower were acknowledged in the term
//     within the last contactFresh;
//   - the batched heartbeats still use the connection they used when that
//     answer came: a follower that restarted has forgotten the commit index,
//     and its new connection makes the next request go out.
//
// Anything else goes to the follower as before, so a request that carries
// news (a commit index, a new term, entries) is never held back.

// quietAppend is what a pipeline remembers of the newest answered request.
type quietAppend struct {
	term, prev, prevTerm, commit uint64
	gen                          uint64 // the heartbeat connection's generation then
}

type quietPipeline struct {
	inner  raft.AppendPipeline
	t      *leaseTransport
	id     raft.ServerID
	target raft.ServerAddress
	out    chan raft.AppendFuture
	done   chan struct{}
	wg     sync.WaitGroup
	close  sync.Once

	mu       sync.Mutex
	inflight int // requests sent and not yet handed to the consumer
	last     quietAppend
	lastOK   bool
}

func newQuietPipeline(t *leaseTransport, id raft.ServerID, target raft.ServerAddress, inner raft.AppendPipeline) *quietPipeline {
	p := &quietPipeline{
		inner: inner, t: t, id: id, target: target,
		out:  make(chan raft.AppendFuture, cap(inner.Consumer())),
		done: make(chan struct{}),
	}
	p.wg.Add(1)
	go p.forward()
	return p
}

// forward hands the network's answers to raft in order, remembering the
// newest.
func (p *quietPipeline) forward() {
	defer p.wg.Done()
	in := p.inner.Consumer()
	for {
		var f raft.AppendFuture
		select {
		case f = <-in:
		case <-p.done:
			return
		}
		req, resp := f.Request(), f.Response()
		ok := f.Error() == nil && resp.Success && resp.Term == req.Term && len(req.Entries) == 0
		var gen uint64
		if ok { // not for answers to entries: the heartbeats' lock stays off the write path
			gen, _ = p.t.hb.peerGen(p.target)
		}
		p.mu.Lock()
		p.lastOK = ok
		if ok {
			p.last = quietAppend{term: req.Term, prev: req.PrevLogEntry, prevTerm: req.PrevLogTerm, commit: req.LeaderCommitIndex, gen: gen}
		}
		p.mu.Unlock()
		select {
		case p.out <- f:
		case <-p.done:
			return
		}
		p.mu.Lock()
		p.inflight--
		p.mu.Unlock()
	}
}

// AppendEntries implements raft.AppendPipeline. raft calls it from one
// goroutine per follower.
func (p *quietPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if len(args.Entries) == 0 && p.canAnswer(args) {
		p.t.quietAppends.Add(1)
		// raft ignores the future a pipelined send returns and learns
		// only from the consumer; an answer without news need not reach
		// it (and wake its decoder).
		return &quietFuture{start: time.Now(), req: args, resp: resp}, nil
	}
	p.mu.Lock()
	p.inflight++
	p.mu.Unlock()
	f, err := p.inner.AppendEntries(args, resp)
	if err != nil {
		p.mu.Lock()
		p.inflight--
		p.lastOK = false
		p.mu.Unlock()
	}
	return f, err
}

func (p *quietPipeline) canAnswer(args *raft.AppendEntriesRequest) bool {
	gen, ok := p.t.hb.peerGen(p.target)
	if !ok || !p.t.freshContact(p.id, args.Term) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.last
	return p.inflight == 0 && p.lastOK && l.gen == gen && l.term == args.Term &&
		l.prev == args.PrevLogEntry && l.prevTerm == args.PrevLogTerm && l.commit == args.LeaderCommitIndex
}

// Consumer implements raft.AppendPipeline.
func (p *quietPipeline) Consumer() <-chan raft.AppendFuture { return p.out }

// Close implements raft.AppendPipeline.
func (p *quietPipeline) Close() error {
	err := p.inner.Close()
	p.close.Do(func() { close(p.done) })
	p.wg.Wait()
	return err
}

// quietFuture is an answer given without the network; raft never sees it.
type quietFuture struct {
	start time.Time
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
}

func (f *quietFuture) Error() error                          { return nil }
func (f *quietFuture) Start() time.Time                      { return f.start }
func (f *quietFuture) Request() *raft.AppendEntriesRequest   { return f.req }
func (f *quietFuture) Response() *raft.AppendEntriesResponse { return f.resp }
