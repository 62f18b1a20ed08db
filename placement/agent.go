package placement

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Local is what the agent needs of its node. Its methods are called from the
// agent's goroutine only.
type Local interface {
	// Node returns this node's name.
	Node() string
	// LocalGroups returns the ids of the groups with a replica here.
	LocalGroups() []string
	// StartReplica starts a replica of group id here; bootstrap says to
	// create the group's first configuration with this node alone.
	StartReplica(id string, bootstrap bool) error
	// StopReplica stops the replica of group id here and deletes its data.
	StopReplica(id string) error
	// LeaderMembers returns group id's configuration if this node leads it.
	LeaderMembers(id string) ([]Member, bool)
	// AddLearner adds node to group id as a nonvoter.
	AddLearner(ctx context.Context, id, node string) error
	// Promote makes a nonvoter of group id a voter.
	Promote(ctx context.Context, id, node string) error
	// RemoveMember removes node from group id.
	RemoveMember(ctx context.Context, id, node string) error
	// TransferLeadership hands group id's leadership to another voter.
	TransferLeadership(ctx context.Context, id string) error
}

// Agent reconciles the replicas of its node to the desired placement: it
// starts and stops local replicas, and, for the groups this node leads,
// changes the Raft configuration one step at a time toward the desired one.
type Agent struct {
	l      Local
	logger *slog.Logger

	mu     sync.Mutex // guards latest
	latest *Placement
	kick   chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartAgent starts an agent that reconciles on every update and at least
// every interval.
func StartAgent(l Local, interval time.Duration, logger *slog.Logger) *Agent {
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{l: l, logger: logger, kick: make(chan struct{}, 1), cancel: cancel}
	a.wg.Add(1)
	go a.run(ctx, interval)
	return a
}

// Update hands the agent a newer placement. Older versions are ignored.
func (a *Agent) Update(p *Placement) {
	a.mu.Lock()
	if a.latest != nil && p.Version <= a.latest.Version {
		a.mu.Unlock()
		return
	}
	a.latest = p
	a.mu.Unlock()
	a.Kick()
}

// Kick asks for a reconcile now.
func (a *Agent) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Close stops the agent and waits for it.
func (a *Agent) Close() {
	a.cancel()
	a.wg.Wait()
}

func (a *Agent) run(ctx context.Context, interval time.Duration) {
	defer a.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.kick:
		}
		a.mu.Lock()
		p := a.latest
		a.mu.Unlock()
		if p == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		for _, err := range Reconcile(rctx, a.l, p) {
			if ctx.Err() == nil {
				a.logger.Warn("reconcile", "error", err)
			}
		}
		cancel()
	}
}

// Action kinds, as returned by Actions.
const (
	ActStart    = "start"     // start a local replica
	ActBoot     = "bootstrap" // start a local replica and bootstrap the group
	ActStop     = "stop"      // stop a local replica and delete its data
	ActLearner  = "add-learner"
	ActPromote  = "promote"
	ActRemove   = "remove"
	ActTransfer = "transfer-leadership"
)

// Action is one thing the agent does.
type Action struct {
	Kind  string
	Group string
	Node  string // the member concerned, for configuration changes
}

// Actions returns what node me must do to move toward p, given the groups it
// hosts and the configurations of the groups it leads. It is pure: the agent
// carries the actions out.
func Actions(me string, local []string, leading map[string][]Member, p *Placement) []Action {
	var out []Action
	have := map[string]bool{}
	for _, id := range local {
		have[id] = true
	}
	for _, g := range p.Groups {
		if _, mine := g.Replica(me); !mine || have[g.ID] {
			continue
		}
		kind := ActStart
		if g.Bootstrap == me && len(g.Replicas) == 1 {
			kind = ActBoot
		}
		out = append(out, Action{Kind: kind, Group: g.ID})
	}
	for _, id := range local {
		if g, ok := p.Group(id); ok {
			if _, mine := g.Replica(me); mine {
				continue
			}
			if _, lead := leading[id]; lead {
				continue // hand leadership away first (below), stop next round
			}
		}
		out = append(out, Action{Kind: ActStop, Group: id})
	}
	for _, g := range p.Groups {
		if members, ok := leading[g.ID]; ok {
			if a, ok := step(me, &g, members); ok {
				out = append(out, a)
			}
		}
	}
	return out
}

// step returns the one Raft configuration change that moves a group this
// node leads toward g, if one is needed: add missing replicas as learners,
// then promote, then remove (handing leadership away before removing itself).
func step(me string, g *GroupPlacement, members []Member) (Action, bool) {
	have := map[string]Member{}
	for _, m := range members {
		have[m.Node] = m
	}
	for _, r := range g.Replicas {
		if _, ok := have[r.Node]; !ok {
			return Action{Kind: ActLearner, Group: g.ID, Node: r.Node}, true
		}
	}
	for _, r := range g.Replicas {
		if r.Voter && !have[r.Node].Voter {
			return Action{Kind: ActPromote, Group: g.ID, Node: r.Node}, true
		}
	}
	for _, m := range members {
		if _, ok := g.Replica(m.Node); ok {
			continue
		}
		if m.Node == me {
			return Action{Kind: ActTransfer, Group: g.ID}, true
		}
		return Action{Kind: ActRemove, Group: g.ID, Node: m.Node}, true
	}
	return Action{}, false
}

// Reconcile computes the actions for p and carries them out, returning what
// failed.
func Reconcile(ctx context.Context, l Local, p *Placement) []error {
	local := l.LocalGroups()
	leading := map[string][]Member{}
	for _, id := range local {
		if m, ok := l.LeaderMembers(id); ok {
			leading[id] = m
		}
	}
	var errs []error
	for _, a := range Actions(l.Node(), local, leading, p) {
		var err error
		switch a.Kind {
		case ActStart, ActBoot:
			err = l.StartReplica(a.Group, a.Kind == ActBoot)
		case ActStop:
			err = l.StopReplica(a.Group)
		case ActLearner:
			err = l.AddLearner(ctx, a.Group, a.Node)
		case ActPromote:
			err = l.Promote(ctx, a.Group, a.Node)
		case ActRemove:
			err = l.RemoveMember(ctx, a.Group, a.Node)
		case ActTransfer:
			err = l.TransferLeadership(ctx, a.Group)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s %s: %w", a.Kind, a.Group, a.Node, err))
		}
	}
	return errs
}
