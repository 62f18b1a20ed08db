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
	// The agent calls it only once Membership has shown that the group's
	// committed configuration no longer lists this node.
	StopReplica(id string) error
	// LocalDamaged returns the groups whose replica here is damaged: not
	// running, to be removed by their leaders, wiped and rebuilt.
	LocalDamaged() []string
	// PeerDamaged reports whether node says its replica of group id is
	// damaged.
	PeerDamaged(id, node string) bool
	// Wipe deletes the damaged replica of group id here. The agent calls it
	// only once Membership has shown that the group's committed
	// configuration no longer lists this node.
	Wipe(id string) error
	// Membership returns group id's committed configuration, as its leader
	// confirms it (an error if no leader does): the authority a replica is
	// destroyed on, never the desired placement alone.
	Membership(ctx context.Context, id string) ([]Member, error)
	// LeaderMembers returns group id's configuration if this node leads it.
	LeaderMembers(id string) ([]Member, bool)
	// AddLearner adds node to group id as a nonvoter.
	AddLearner(ctx context.Context, id, node string) error
	// Promote makes a nonvoter of group id a voter.
	Promote(ctx context.Context, id, node string) error
	// RemoveMember removes node from group id.
	RemoveMember(ctx context.Context, id, node string) error
	// TransferLeadership hands group id's leadership to node ("": any
	// other voter).
	TransferLeadership(ctx context.Context, id, node string) error
	// Zone returns the zone of node as membership knows it ("" if unknown).
	Zone(node string) string
	// Reachable reports whether this node, leading group id, has working
	// heartbeats to node (cheap; negative evidence only).
	Reachable(id, node string) bool
	// ReadyToLead asks node whether its replica of group id is up and caught
	// up with this leader, so that a transfer to it will succeed (and a
	// promotion of it leaves the group a voter that can vote).
	ReadyToLead(ctx context.Context, id, node string) bool
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

	lastTransfer map[string]time.Time // per group; used by the agent goroutine only

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
	a := &Agent{l: l, logger: logger, kick: make(chan struct{}, 1), cancel: cancel, lastTransfer: map[string]time.Time{}}
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
		for _, err := range a.reconcile(rctx, p, time.Now()) {
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
	ActWipe     = "wipe" // delete a damaged local replica its group has removed
)

// Action is one thing the agent does.
type Action struct {
	Kind  string
	Group string
	Node  string // the member concerned, for configuration changes
}

// View is what the agent knows of its node when it decides.
type View struct {
	Me    string
	Zone  string
	Local []string // groups with a replica here
	// Leading holds the configuration of each group this node leads.
	Leading map[string][]Member
	// ZoneOf maps node names to zones.
	ZoneOf map[string]string
	// Unreachable lists, per led group, the peers whose heartbeats fail.
	Unreachable map[string]map[string]bool
	// Removed holds the local groups whose committed configuration, as
	// their leader confirmed it, no longer lists this node.
	Removed map[string]bool
	// Damaged lists the local replicas this node cannot vouch for (not
	// running); PeerDamaged, per led group, the members that say theirs is.
	Damaged     []string
	PeerDamaged map[string]map[string]bool
}

// StopCandidates returns the local replicas the placement no longer wants
// here and that this node does not lead: each is stopped once its group's
// leader confirms that the committed configuration no longer lists it
// (View.Removed).
func StopCandidates(v View, p *Placement) []string {
	var out []string
	for _, id := range v.Local {
		if g, ok := p.Group(id); ok {
			if _, mine := g.Replica(v.Me); mine {
				continue
			}
		}
		if _, lead := v.Leading[id]; lead {
			continue // hand leadership away first (below), stop once removed
		}
		out = append(out, id)
	}
	return out
}

// Actions returns what the node must do to move toward p. It is pure: the
// agent carries the actions out.
func Actions(v View, p *Placement) []Action {
	var out []Action
	have := map[string]bool{}
	for _, id := range v.Local {
		have[id] = true
	}
	for _, id := range v.Damaged {
		have[id] = true // not started again before it is wiped
	}
	for _, g := range p.Groups {
		if _, mine := g.Replica(v.Me); !mine || have[g.ID] {
			continue
		}
		kind := ActStart
		if g.Bootstrap == v.Me && len(g.Replicas) == 1 {
			kind = ActBoot
		}
		out = append(out, Action{Kind: kind, Group: g.ID})
	}
	// Invariant: a replica is destroyed only after its group's committed
	// configuration no longer lists it. One destroyed while it is still a
	// voter leaves the group a voter short for good: the next zone loss
	// takes its quorum, and with it the only leader that could repair it.
	// Until its leader removes it, an unwanted replica keeps running.
	for _, id := range StopCandidates(v, p) {
		if v.Removed[id] {
			out = append(out, Action{Kind: ActStop, Group: id})
		}
	}
	// A damaged replica is wiped under the same rule: once its group's
	// committed configuration no longer lists it (its leader removes it
	// first, below); then it is started afresh and added back as a learner.
	for _, id := range v.Damaged {
		if v.Removed[id] {
			out = append(out, Action{Kind: ActWipe, Group: id})
		}
	}
	for _, g := range p.Groups {
		members, ok := v.Leading[g.ID]
		if !ok {
			continue
		}
		if a, ok := step(v.Me, &g, members, v.PeerDamaged[g.ID]); ok {
			out = append(out, a)
		} else if a, ok := pin(v, p, &g, members); ok {
			out = append(out, a)
		}
	}
	return out
}

// pin returns a leadership transfer to g's preferred leader, if the planner
// chose another node; to a reachable voter in g's serving zone, if this node
// leads g from another zone; or away from this node if it is drained.
func pin(v View, p *Placement, g *GroupPlacement, members []Member) (Action, bool) {
	drained := p.Drained(v.Me, v.Zone)
	// The planner's preferred leader, while it can lead (balanceLeaders).
	if pref := g.Leader; pref != "" && pref != v.Me && !v.Unreachable[g.ID][pref] && !p.Drained(pref, v.ZoneOf[pref]) &&
		(g.ServingZone == "" || v.ZoneOf[pref] == g.ServingZone) {
		for _, m := range members {
			if m.Node == pref && m.Voter {
				return Action{Kind: ActTransfer, Group: g.ID, Node: pref}, true
			}
		}
	}
	if !drained && (g.ServingZone == "" || v.Zone == g.ServingZone) {
		return Action{}, false
	}
	var fallback string
	for _, m := range members {
		if !m.Voter || m.Node == v.Me || v.Unreachable[g.ID][m.Node] || p.Drained(m.Node, v.ZoneOf[m.Node]) {
			continue
		}
		if g.ServingZone == "" || v.ZoneOf[m.Node] == g.ServingZone {
			return Action{Kind: ActTransfer, Group: g.ID, Node: m.Node}, true
		}
		if fallback == "" {
			fallback = m.Node
		}
	}
	if drained && fallback != "" {
		return Action{Kind: ActTransfer, Group: g.ID, Node: fallback}, true
	}
	return Action{}, false
}

// step returns the one Raft configuration change that moves a group this
// node leads toward g, if one is needed: remove a member whose replica is
// damaged (it neither serves nor votes, and is rebuilt once removed), add
// missing replicas as learners (not one still damaged), then promote, then
// remove (handing leadership away before removing itself).
func step(me string, g *GroupPlacement, members []Member, damaged map[string]bool) (Action, bool) {
	have := map[string]Member{}
	for _, m := range members {
		have[m.Node] = m
		if damaged[m.Node] && m.Node != me {
			return Action{Kind: ActRemove, Group: g.ID, Node: m.Node}, true
		}
	}
	for _, r := range g.Replicas {
		if _, ok := have[r.Node]; !ok && !damaged[r.Node] {
			return Action{Kind: ActLearner, Group: g.ID, Node: r.Node}, true
		}
	}
	for _, r := range g.Replicas {
		if m, ok := have[r.Node]; ok && r.Voter && !m.Voter {
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

// transferEvery bounds leadership transfers of one group: a transfer that
// fails (the target lags or just died) pauses the group's writes for up to an
// election timeout, so it is not retried at once.
const transferEvery = 3 * time.Second

// reconcile computes the actions for p and carries them out, returning what
// failed.
func (a *Agent) reconcile(ctx context.Context, p *Placement, now time.Time) []error {
	l := a.l
	v := View{Me: l.Node(), Zone: l.Zone(l.Node()), Local: l.LocalGroups(), Damaged: l.LocalDamaged(),
		Leading: map[string][]Member{}, ZoneOf: map[string]string{}, Unreachable: map[string]map[string]bool{},
		PeerDamaged: map[string]map[string]bool{}}
	for _, id := range v.Local {
		m, ok := l.LeaderMembers(id)
		if !ok {
			continue
		}
		v.Leading[id] = m
		// Damaged replicas among the members and the desired replicas: a
		// member is removed, and a node is not added back before it wiped
		// its damaged replica (it would be listed, and never wiped).
		peers := make([]string, 0, len(m))
		for _, mem := range m {
			peers = append(peers, mem.Node)
		}
		if g, ok := p.Group(id); ok {
			for _, r := range g.Replicas {
				peers = append(peers, r.Node)
			}
		}
		for _, node := range peers {
			if node != v.Me && l.PeerDamaged(id, node) {
				if v.PeerDamaged[id] == nil {
					v.PeerDamaged[id] = map[string]bool{}
				}
				v.PeerDamaged[id][node] = true
			}
		}
		for _, mem := range m {
			v.ZoneOf[mem.Node] = l.Zone(mem.Node)
			if !l.Reachable(id, mem.Node) {
				if v.Unreachable[id] == nil {
					v.Unreachable[id] = map[string]bool{}
				}
				v.Unreachable[id][mem.Node] = true
			}
		}
	}
	var errs []error
	for _, id := range append(StopCandidates(v, p), v.Damaged...) {
		members, err := l.Membership(ctx, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("keeping unwanted replica %s until its removal is confirmed: %w", id, err))
			continue
		}
		listed := false
		for _, m := range members {
			listed = listed || m.Node == v.Me
		}
		if !listed {
			if v.Removed == nil {
				v.Removed = map[string]bool{}
			}
			v.Removed[id] = true
		}
	}
	for _, act := range Actions(v, p) {
		var err error
		switch act.Kind {
		case ActStart, ActBoot:
			err = l.StartReplica(act.Group, act.Kind == ActBoot)
		case ActStop:
			err = l.StopReplica(act.Group)
		case ActWipe:
			err = l.Wipe(act.Group)
		case ActLearner:
			err = l.AddLearner(ctx, act.Group, act.Node)
		case ActPromote:
			// A learner that is down or behind would be a voter that cannot
			// vote: promoting a dead one takes the quorum of a group with
			// one voter (just recovered) or of an even-sized one.
			if !l.ReadyToLead(ctx, act.Group, act.Node) {
				continue
			}
			err = l.Promote(ctx, act.Group, act.Node)
		case ActRemove:
			err = l.RemoveMember(ctx, act.Group, act.Node)
		case ActTransfer:
			if now.Sub(a.lastTransfer[act.Group]) < transferEvery {
				continue
			}
			if act.Node != "" && !l.ReadyToLead(ctx, act.Group, act.Node) {
				continue // a transfer to it would stall writes and fail
			}
			a.lastTransfer[act.Group] = now
			a.logger.Info("transferring leadership", "group", act.Group, "to", act.Node)
			err = l.TransferLeadership(ctx, act.Group, act.Node)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s %s: %w", act.Kind, act.Group, act.Node, err))
		}
	}
	return errs
}
