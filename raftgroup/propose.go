package raftgroup

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/ldcd/ldcd/store"
)

// proposer coalesces the commands proposed to one group concurrently into
// batch entries (store.EncodeBatch). A group keeps at most inFlight entries
// proposed and not yet applied; a command that arrives while that many are
// out waits in the queue, and the next entry carries the whole queue (up to
// maxBatch commands). With one writer nothing waits: its command goes out
// at once, in an entry of its own. Under load each entry, and so each
// fsync, AppendEntries, apply and change record, carries many writes.
//
// After an entry of more than one command is applied, the next waits
// (lingers) until as many commands have queued as that entry carried, or
// for twice as long as that entry took, at most maxLinger. Closed-loop
// writers answered by the entry come back within that window and share
// the next entry with those that queued meanwhile, instead of taking
// turns with them entry by entry; the window is bounded by twice the
// entry's own duration, so it grows only with the latency writes already
// see. A lone writer never lingers.
//
// Commands that touch a key already in the batch being built wait for the
// next entry, so no two commands of a batch share a key and every key's
// versions stay distinct.
type proposer struct {
	g         *Group
	inFlight  int
	maxBatch  int
	maxLinger time.Duration // 0: no lingering

	mu    sync.Mutex
	queue []*proposal
	out   int           // entries proposed and not yet answered
	want  int           // a lingering run waits for this many queued
	wake  chan struct{} // closed when they are
}

// proposal is one command waiting in a proposer.
type proposal struct {
	cmd      *store.Command
	data     []byte
	deadline time.Time // zero: none
	done     chan struct{}
	proposed bool // guarded by proposer.mu
	res      *store.Result
	err      error
}

// propose queues cmd (data is its encoding) and waits for its outcome, as
// Group.propose does for an entry of its own.
func (p *proposer) propose(ctx context.Context, cmd *store.Command, data []byte) (*store.Result, error) {
	pr := &proposal{cmd: cmd, data: data, done: make(chan struct{})}
	pr.deadline, _ = ctx.Deadline()
	p.mu.Lock()
	p.enqueueLocked(pr)
	batch := p.takeLocked()
	p.mu.Unlock()
	if batch != nil {
		go p.run(batch)
	}
	select {
	case <-pr.done:
		return pr.res, pr.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	if !pr.proposed {
		if i := slices.Index(p.queue, pr); i >= 0 {
			// slices.Delete clears the freed tail slot, as takeLocked
			// does, so the queue holds no dropped proposal.
			p.queue = slices.Delete(p.queue, i, i+1)
		}
		p.mu.Unlock()
		return nil, fmt.Errorf("raftgroup: %s: %w", p.g.id, context.DeadlineExceeded)
	}
	p.mu.Unlock()
	return nil, fmt.Errorf("%w: %s: %w", ErrIndeterminate, p.g.id, ctx.Err())
}

// enqueueLocked queues pr and wakes a lingering run that waits for it. The
// caller holds mu.
func (p *proposer) enqueueLocked(pr *proposal) {
	p.queue = append(p.queue, pr)
	if p.wake != nil && len(p.queue) >= p.want {
		close(p.wake)
		p.wake = nil
	}
}

// takeLocked takes the next batch off the queue if an entry may go out now,
// counting it as out. The caller holds mu.
func (p *proposer) takeLocked() []*proposal {
	if len(p.queue) == 0 || p.out >= p.inFlight {
		return nil
	}
	n := 1
	if len(p.queue) > 1 {
		seen := make(map[string]struct{}, 2*len(p.queue))
		clash := false
		for n = 0; n < len(p.queue) && n < p.maxBatch && !clash; n++ {
			p.queue[n].cmd.Keys(func(k []byte) {
				if _, ok := seen[string(k)]; ok {
					clash = true
				}
			})
			if clash {
				break
			}
			p.queue[n].cmd.Keys(func(k []byte) { seen[string(k)] = struct{}{} })
		}
	}
	batch := make([]*proposal, n)
	copy(batch, p.queue)
	rest := copy(p.queue, p.queue[n:])
	clear(p.queue[rest:])
	p.queue = p.queue[:rest]
	for _, pr := range batch {
		pr.proposed = true
	}
	p.out++
	return batch
}

// run proposes batch, hands out its outcome, and goes on with the next
// batch while the queue has one that may go out.
func (p *proposer) run(batch []*proposal) {
	for batch != nil {
		start := time.Now()
		p.apply(batch)
		if p.maxLinger > 0 && len(batch) > 1 {
			p.linger(len(batch), min(2*time.Since(start), p.maxLinger))
		}
		p.mu.Lock()
		p.out--
		batch = p.takeLocked()
		p.mu.Unlock()
	}
}

// linger waits until n commands queue or d passes. The entry slot stays
// taken meanwhile, so no write starts an entry of its own.
func (p *proposer) linger(n int, d time.Duration) {
	p.mu.Lock()
	if len(p.queue) >= n {
		p.mu.Unlock()
		return
	}
	wake := make(chan struct{})
	p.want, p.wake = n, wake
	p.mu.Unlock()
	t := time.NewTimer(d)
	select {
	case <-wake:
	case <-t.C:
	}
	t.Stop()
	p.mu.Lock()
	p.want, p.wake = 0, nil
	p.mu.Unlock()
}

// apply proposes one entry for batch and waits for it.
func (p *proposer) apply(batch []*proposal) {
	g := p.g
	finish := func(err error) {
		for _, pr := range batch {
			pr.err = err
			close(pr.done)
		}
	}
	if g.raft.State() != raft.Leader {
		finish(g.notLeader())
		return
	}
	data := batch[0].data
	if len(batch) > 1 {
		cmds := make([][]byte, len(batch))
		for i, pr := range batch {
			cmds[i] = pr.data
		}
		data = store.EncodeBatch(cmds)
	}
	// raft's enqueue timeout: the latest deadline of the batch, so no
	// command's own deadline is cut short (a proposer whose context ends
	// first reports its write as indeterminate).
	var timeout time.Duration
	for _, pr := range batch {
		if pr.deadline.IsZero() {
			timeout = 0
			break
		}
		t := time.Until(pr.deadline)
		if t <= 0 {
			t = time.Millisecond
		}
		timeout = max(timeout, t)
	}
	f := g.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		finish(g.proposeError(err))
		return
	}
	resp := f.Response()
	if br, ok := resp.(store.BatchResult); ok && len(br) == len(batch) {
		for i, pr := range batch {
			pr.res, pr.err = result(g, br[i])
			close(pr.done)
		}
		return
	}
	if len(batch) == 1 {
		batch[0].res, batch[0].err = result(g, resp)
		close(batch[0].done)
		return
	}
	finish(fmt.Errorf("%w: %s: a batch of %d got %T", ErrIndeterminate, g.id, len(batch), resp))
}

// result turns what the state machine answered for one command into
// Apply's return values.
func result(g *Group, r interface{}) (*store.Result, error) {
	switch r := r.(type) {
	case *store.Result:
		return r, nil
	case error:
		return nil, r
	default:
		return nil, fmt.Errorf("%w: %s: no result", ErrIndeterminate, g.id)
	}
}
