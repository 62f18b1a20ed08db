package placement

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// NodeState is what the driver knows of a node, from membership.
type NodeState struct {
	Name string `json:"name"`
	Zone string `json:"zone"`
	City string `json:"city"`
	// Alive reports whether membership sees the node as up.
	Alive bool `json:"alive"`
	// DownSince is when the node was first seen down; zero while alive.
	DownSince time.Time `json:"down_since,omitzero"`
}

// Member is one server of a group's Raft configuration.
type Member struct {
	Node  string `json:"node"`
	Voter bool   `json:"voter"`
}

// GroupState is a group as observed: its configuration and progress as its
// leader reports them, and each replica's applied index.
type GroupState struct {
	ID string
	// Leader is the leader's node name; "" when no leader is known.
	Leader string
	// Members is the configuration the leader holds.
	Members []Member
	// LeaderApplied is the leader's applied index.
	LeaderApplied uint64
	// Applied maps each reporting replica's node to its applied index.
	Applied map[string]uint64
}

// ClusterState is the planner's input besides the placement itself.
type ClusterState struct {
	Now    time.Time
	Nodes  []NodeState
	Groups map[string]GroupState
}

// Options tune the planner.
type Options struct {
	// DeadAfter is how long a node must stay down before its replicas are
	// replaced.
	DeadAfter time.Duration
	// CatchUpLag is how far (in entries) a learner may trail its leader and
	// still be promoted to voter.
	CatchUpLag uint64
}

// DefaultOptions returns the planner defaults.
func DefaultOptions() Options {
	return Options{DeadAfter: 30 * time.Second, CatchUpLag: 64}
}

// Decision kinds.
const (
	DecideCreate  = "create"
	DecideAdd     = "add-learner"
	DecidePromote = "promote"
	DecideRemove  = "remove"
	// DecideRebalance adds a learner on an underloaded node; once it is
	// promoted, the extra replica on the most loaded node is removed.
	DecideRebalance = "rebalance"
	// DecideServe sets a group's serving zone for the first time.
	DecideServe = "serve"
	// DecideFailover records that a group's leadership moved out of its
	// serving zone because that zone has no caught-up voter.
	DecideFailover = "failover"
	// DecideFailback returns a group's serving zone to its owner zone.
	DecideFailback = "failback"
	// DecideLeader sets (or clears) the node a group's leadership should
	// move to, to spread leaders over the serving zone's nodes.
	DecideLeader = "leader"
)

// Decision is one change the planner made to the placement.
type Decision struct {
	Kind   string `json:"kind"`
	Group  string `json:"group"`
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

func (d Decision) String() string {
	if d.Node == "" {
		return fmt.Sprintf("%s %s: %s", d.Kind, d.Group, d.Reason)
	}
	return fmt.Sprintf("%s %s on %s: %s", d.Kind, d.Group, d.Node, d.Reason)
}

// Plan computes the next desired placement from the current one and the
// observed cluster. It returns nil and no decisions when nothing should
// change. Plan is pure: no clock, no I/O; s.Now is the time.
//
// Each group changes by at most one step per call, and only once its Raft
// configuration matches its desired replicas, so that the agents carry out
// one configuration change at a time: add a learner, promote it once caught
// up, and only then remove a dead voter it replaces.
func Plan(p *Placement, s ClusterState, o Options) (*Placement, []Decision) {
	pl := planner{p: p.Clone(), s: s, o: o, nodes: map[string]NodeState{}}
	for _, n := range s.Nodes {
		pl.nodes[n.Name] = n
	}
	pl.createMissing()
	for i := range pl.p.Groups {
		pl.serve(&pl.p.Groups[i])
		pl.step(&pl.p.Groups[i])
	}
	pl.balanceLeaders()
	if len(pl.out) == 0 {
		return nil, nil
	}
	pl.p.Version++
	return pl.p, pl.out
}

type planner struct {
	p          *Placement
	s          ClusterState
	o          Options
	nodes      map[string]NodeState
	out        []Decision
	rebalanced bool // one rebalancing move may start per round

	// loadMemo caches load() until the next decision: every change to a
	// group's replicas is recorded by decide, so len(out) versions it.
	// Without it a round cost groups² (1% of a core for 101 idle groups).
	loadMemo map[string]int
	loadAt   int // len(out)+1 when loadMemo was counted; 0: never
}

func (pl *planner) decide(kind, group, node, reason string) {
	pl.out = append(pl.out, Decision{Kind: kind, Group: group, Node: node, Reason: reason})
}

// dead reports whether node has been down for DeadAfter (or is unknown to
// membership altogether).
func (pl *planner) dead(node string) bool {
	n, ok := pl.nodes[node]
	if !ok {
		return true
	}
	return !n.Alive && !n.DownSince.IsZero() && pl.s.Now.Sub(n.DownSince) >= pl.o.DeadAfter
}

// leaving reports whether node's replicas must go: it is dead or drained.
func (pl *planner) leaving(node string) bool {
	return pl.dead(node) || pl.p.Drained(node, pl.nodes[node].Zone)
}

// eligible reports whether node may host a voter: alive, not drained, not
// in a czone.
func (pl *planner) eligible(n NodeState) bool {
	if !n.Alive || pl.p.Drained(n.Name, n.Zone) {
		return false
	}
	z, ok := pl.p.Topology.Zone(n.Zone)
	return !ok || z.Kind != KindCZone
}

// load counts the replicas each node hosts. Callers must not modify the map.
func (pl *planner) load() map[string]int {
	if pl.loadAt == len(pl.out)+1 {
		return pl.loadMemo
	}
	m := map[string]int{}
	for _, g := range pl.p.Groups {
		for _, r := range g.Replicas {
			m[r.Node]++
		}
	}
	pl.loadMemo, pl.loadAt = m, len(pl.out)+1
	return m
}

// candidate picks the best node for a new replica of g: an eligible node not
// already hosting g, in a zone g does not use yet if possible (counting only
// healthy replicas, then every replica, the leaving ones too), then in the
// preferred zone, then the least loaded.
func (pl *planner) candidate(g *GroupPlacement, preferZone string) (string, bool) {
	used := map[string]int{}     // healthy replicas per zone
	occupied := map[string]int{} // replicas per zone, leaving ones included
	hosting := map[string]bool{}
	for _, r := range g.Replicas {
		hosting[r.Node] = true
		occupied[pl.nodes[r.Node].Zone]++
		if !pl.leaving(r.Node) {
			used[pl.nodes[r.Node].Zone]++
		}
	}
	load := pl.load()
	var cands []NodeState
	for _, n := range pl.s.Nodes {
		if pl.eligible(n) && !hosting[n.Name] {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return "", false
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if used[a.Zone] != used[b.Zone] {
			return used[a.Zone] < used[b.Zone]
		}
		// A replacement goes to a zone the group does not use at all, not
		// the zone of the replica it replaces: until that one is removed,
		// the two would be half of four voters, and losing their zone
		// would take the quorum.
		if occupied[a.Zone] != occupied[b.Zone] {
			return occupied[a.Zone] < occupied[b.Zone]
		}
		if (a.Zone == preferZone) != (b.Zone == preferZone) {
			return a.Zone == preferZone
		}
		if load[a.Name] != load[b.Name] {
			return load[a.Name] < load[b.Name]
		}
		return a.Name < b.Name
	})
	return cands[0].Name, true
}

// preferredZone is where a group's leader belongs: its owner zone, or the
// GZone for the global group ("" when there is none).
func (pl *planner) preferredZone(g *GroupPlacement) string {
	if g.ID == GlobalGroup {
		return pl.p.Topology.GZone()
	}
	return g.OwnerZone
}

// caughtUp reports whether node answered this round's status poll with an
// applied index within CatchUpLag of the group's leader.
func (pl *planner) caughtUp(st GroupState, node string) bool {
	applied, ok := st.Applied[node]
	return ok && pl.nodes[node].Alive && applied > 0 && applied+pl.o.CatchUpLag >= st.LeaderApplied
}

// zoneReady reports whether zone holds a voter of g that could lead now.
func (pl *planner) zoneReady(g *GroupPlacement, st GroupState, zone string) bool {
	for _, r := range g.Replicas {
		if r.Voter && pl.nodes[r.Node].Zone == zone && pl.caughtUp(st, r.Node) && !pl.p.Drained(r.Node, zone) {
			return true
		}
	}
	return false
}

func (pl *planner) bump(g *GroupPlacement) {
	pl.p.Epoch++
	g.Epoch = pl.p.Epoch
}

// serve keeps g's serving zone: the owner zone while it has a caught-up
// voter; after the leadership moved away from a serving zone that has none,
// the zone that now leads (failover); and back to the owner zone once it
// has caught up, unless the range's failback is manual.
func (pl *planner) serve(g *GroupPlacement) {
	owner := pl.preferredZone(g)
	if owner == "" {
		if g.ServingZone != "" {
			g.ServingZone = ""
			pl.bump(g)
		}
		return
	}
	if g.ServingZone == "" {
		g.ServingZone = owner
		pl.bump(g)
		pl.decide(DecideServe, g.ID, "", "serving zone "+owner)
		return
	}
	st, ok := pl.s.Groups[g.ID]
	if !ok || st.Leader == "" {
		return
	}
	leaderZone := pl.nodes[st.Leader].Zone
	manual := false
	if r, ok := pl.p.Topology.Range(g.ID); ok && r.Failback == FailbackManual {
		manual = !g.FailbackRequested
	}
	switch {
	case g.ServingZone == owner && g.FailbackRequested:
		g.FailbackRequested = false
		pl.decide(DecideFailback, g.ID, "", "already served by its owner zone "+owner)
	case g.ServingZone != owner && !manual && pl.zoneReady(g, st, owner):
		from := g.ServingZone
		g.ServingZone = owner
		g.FailbackRequested = false
		pl.bump(g)
		pl.decide(DecideFailback, g.ID, "", fmt.Sprintf("owner zone %s is ready; serving zone %s → %s", owner, from, owner))
	case !pl.zoneReady(g, st, g.ServingZone):
		// The serving zone is lost: serve from the first ready zone of the
		// failover list, else from wherever Raft elected the leader.
		to := leaderZone
		for _, z := range FailoverOrder(pl.p.Topology, g) {
			if pl.zoneReady(g, st, z) {
				to = z
				break
			}
		}
		if to == "" || to == g.ServingZone {
			return
		}
		from := g.ServingZone
		g.ServingZone = to
		pl.bump(g)
		pl.decide(DecideFailover, g.ID, st.Leader, fmt.Sprintf("serving zone %s has no caught-up voter; serving zone %s → %s", from, from, to))
	}
}

// candidateIn picks the best node in zone for a new replica of g.
func (pl *planner) candidateIn(g *GroupPlacement, zone string) (string, bool) {
	load := pl.load()
	best, bestLoad := "", 0
	for _, n := range pl.s.Nodes {
		if n.Zone != zone || !pl.eligible(n) {
			continue
		}
		if _, hosting := g.Replica(n.Name); hosting {
			continue
		}
		if best == "" || load[n.Name] < bestLoad || (load[n.Name] == bestLoad && n.Name < best) {
			best, bestLoad = n.Name, load[n.Name]
		}
	}
	return best, best != ""
}

// createMissing adds a group, with one bootstrapping replica, for every
// topology range that has none.
func (pl *planner) createMissing() {
	for _, r := range pl.p.Topology.Ranges {
		id := r.GroupID()
		if _, ok := pl.p.Group(id); ok {
			continue
		}
		g := GroupPlacement{ID: id, Shards: r.Shards, OwnerZone: r.Owner}
		node, ok := pl.candidate(&g, r.Owner)
		if !ok {
			continue
		}
		g.Replicas = []Replica{{Node: node, Voter: true}}
		g.Bootstrap = node
		pl.p.Groups = append(pl.p.Groups, g)
		pl.decide(DecideCreate, id, node, "range "+r.Shards+" has no group")
	}
	sort.Slice(pl.p.Groups, func(i, j int) bool { return groupLess(pl.p.Groups[i].ID, pl.p.Groups[j].ID) })
}

// settled reports whether the observed configuration equals the desired one.
func settled(g *GroupPlacement, st GroupState) bool {
	if len(st.Members) != len(g.Replicas) {
		return false
	}
	for _, m := range st.Members {
		r, ok := g.Replica(m.Node)
		if !ok || r.Voter != m.Voter {
			return false
		}
	}
	return true
}

// step makes at most one change to g.
func (pl *planner) step(g *GroupPlacement) {
	st, ok := pl.s.Groups[g.ID]
	if !ok || st.Leader == "" {
		return
	}
	if !settled(g, st) {
		pl.unstick(g, st)
		return
	}
	want := pl.p.Topology.Replicas
	prefer := g.OwnerZone
	if g.ID == GlobalGroup {
		prefer = pl.p.Topology.GZone()
	}

	// 1. Promote a learner that has caught up.
	for i, r := range g.Replicas {
		if r.Voter || pl.leaving(r.Node) || !pl.nodes[r.Node].Alive {
			continue
		}
		applied, ok := st.Applied[r.Node]
		if ok && applied > 0 && applied+pl.o.CatchUpLag >= st.LeaderApplied {
			g.Replicas[i].Voter = true
			pl.decide(DecidePromote, g.ID, r.Node, fmt.Sprintf("caught up: applied %d, leader %d", applied, st.LeaderApplied))
			return
		}
	}

	healthyVoters, healthy := 0, 0
	up := 0 // healthy and caught up now
	for _, r := range g.Replicas {
		if !pl.leaving(r.Node) {
			healthy++
			if r.Voter {
				healthyVoters++
			}
			if pl.caughtUp(st, r.Node) {
				up++
			}
		}
	}
	// 2. Remove a dead or drained learner, or such a voter once enough
	// healthy voters replace it (a drained leader hands leadership away
	// before it is removed). A drained replica that is up and caught up
	// goes only once enough other replicas are up and caught up.
	// Of the replicas that may go, one whose removal keeps the group able
	// to survive a zone loss goes first: with a dead voter and a drained
	// one in four zones plus a replacement beside the dead one, removing
	// the drained one first leaves two of four voters in one zone.
	var removable []Replica
	for _, r := range g.Replicas {
		if !pl.leaving(r.Node) {
			continue
		}
		if r.Voter && healthyVoters < want {
			continue
		}
		// A drained replica that is up is still a copy of the data: it
		// goes only while want-1 others are up and caught up, not merely
		// not dead yet (a node just gone down).
		if pl.caughtUp(st, r.Node) && up < want-1 {
			continue
		}
		if r.Voter && !pl.keepsQuorum(g, r.Node) {
			continue // the voters left up would be no majority
		}
		removable = append(removable, r)
	}
	if len(removable) > 0 {
		r := removable[0]
		if safe := pl.zoneSafe(g.Replicas, ""); safe {
			i := slices.IndexFunc(removable, func(c Replica) bool { return pl.zoneSafe(without(g.Replicas, c.Node), "") })
			switch {
			case i >= 0:
				r = removable[i]
			case r.Voter && healthyVoters > want:
				// A replacement in the zone of a voter that came back:
				// remove a surplus healthy voter first, if that keeps the
				// group safe.
				if v, ok := pl.safeSurplus(g, st, prefer); ok {
					g.Replicas = without(g.Replicas, v)
					pl.decide(DecideRemove, g.ID, v, fmt.Sprintf("%d healthy voters, %d wanted; removed before %s to survive a zone loss", healthyVoters, want, r.Node))
					return
				}
			}
			if i < 0 && pl.someVoterDown(g) {
				// A voter is down but not dead yet: were it gone for
				// good, the removal would leave the group unable to
				// survive a zone loss. Wait until it is back or dead.
				return
			}
		}
		g.Replicas = without(g.Replicas, r.Node)
		reason := fmt.Sprintf("node down for %s or more", pl.o.DeadAfter)
		if !pl.dead(r.Node) {
			reason = "node drained"
		}
		pl.decide(DecideRemove, g.ID, r.Node, reason)
		return
	}

	// 3. Add a learner while fewer than the wanted replicas are healthy.
	if healthy < want {
		if node, ok := pl.candidate(g, prefer); ok {
			g.Replicas = append(g.Replicas, Replica{Node: node})
			pl.decide(DecideAdd, g.ID, node, fmt.Sprintf("%d of %d replicas healthy", healthy, want))
		}
		return
	}

	// 4. Remove a surplus replica (a move whose new replica is now a
	// voter): one in a duplicated zone, else the one on the most loaded
	// node, never the preferred zone's last. Only while every replica is up
	// and caught up: a node just gone down is not dead yet (not leaving),
	// and removing a live copy then would leave fewer than want-1 copies.
	if healthyVoters > want && healthy == len(g.Replicas) && healthyVoters == len(g.Replicas) {
		for _, r := range g.Replicas {
			if !pl.caughtUp(st, r.Node) {
				return
			}
		}
		if victim, ok := pl.surplus(g, prefer); ok {
			for i, r := range g.Replicas {
				if r.Node == victim {
					g.Replicas = append(g.Replicas[:i:i], g.Replicas[i+1:]...)
					break
				}
			}
			pl.decide(DecideRemove, g.ID, victim, fmt.Sprintf("%d voters, %d wanted", healthyVoters, want))
		}
		return
	}
	if len(g.Replicas) != want || healthyVoters != want {
		return
	}

	// 5. The preferred zone holds a replica, and zones are not shared while
	// an unused zone has room: move a replica there.
	zoneCount := map[string]int{}
	for _, r := range g.Replicas {
		zoneCount[pl.nodes[r.Node].Zone]++
	}
	if prefer != "" && zoneCount[prefer] == 0 {
		if node, ok := pl.candidateIn(g, prefer); ok {
			g.Replicas = append(g.Replicas, Replica{Node: node})
			pl.decide(DecideAdd, g.ID, node, "preferred zone "+prefer+" holds no replica")
			return
		}
	}
	for _, c := range zoneCount {
		if c < 2 {
			continue
		}
		if node, ok := pl.candidate(g, prefer); ok && zoneCount[pl.nodes[node].Zone] == 0 {
			g.Replicas = append(g.Replicas, Replica{Node: node})
			pl.decide(DecideAdd, g.ID, node, "spread replicas over zone "+pl.nodes[node].Zone)
			return
		}
		break
	}

	// 5. Rebalance: move one replica from the most loaded node hosting g to
	// a node with at least two fewer replicas, if that keeps g's zones as
	// spread as they are. One move at a time in the whole cluster.
	if pl.rebalanced {
		return
	}
	load := pl.load()
	from, fromLoad := "", -1
	for _, r := range g.Replicas {
		if z := pl.nodes[r.Node].Zone; z == prefer && zoneCount[z] == 1 {
			// surplus never removes the preferred zone's last replica:
			// moving it would add a voter elsewhere, remove that one, and
			// start again, forever.
			continue
		}
		if l := load[r.Node]; l > fromLoad || (l == fromLoad && r.Node < from) {
			from, fromLoad = r.Node, l
		}
	}
	to, ok := pl.candidate(g, prefer)
	if !ok || load[to]+2 > fromLoad {
		return
	}
	zones := map[string]bool{}
	for _, r := range g.Replicas {
		if r.Node != from {
			zones[pl.nodes[r.Node].Zone] = true
		}
	}
	if zones[pl.nodes[to].Zone] && !zones[pl.nodes[from].Zone] {
		return // the move would put two replicas in one zone
	}
	for _, r := range g.Replicas {
		if !pl.caughtUp(st, r.Node) {
			return // the move is optional: not while a replica is down
		}
	}
	if pl.zoneSafe(g.Replicas, "") && !pl.zoneSafe(g.Replicas, to) {
		// The move is optional: it must not pass through a configuration
		// that a zone loss leaves without a quorum (from and to in one
		// zone: two of four voters).
		return
	}
	pl.rebalanced = true
	g.Replicas = append(g.Replicas, Replica{Node: to})
	pl.decide(DecideRebalance, g.ID, to, fmt.Sprintf("%s hosts %d replicas, %s hosts %d", from, fromLoad, to, load[to]))
}

// zoneSafe reports whether the voters of replicas, plus a voter on extra
// (if not ""), keep a majority when any one zone is lost on top of the
// nodes that are down now.
func (pl *planner) zoneSafe(replicas []Replica, extra string) bool {
	n, present, per := 0, 0, map[string]int{}
	count := func(node string) {
		n++
		if pl.nodes[node].Alive {
			present++
			per[pl.nodes[node].Zone]++
		}
	}
	for _, r := range replicas {
		if r.Voter {
			count(r.Node)
		}
	}
	if extra != "" {
		count(extra)
	}
	for _, c := range per {
		if 2*(present-c) <= n {
			return false
		}
	}
	return 2*present > n
}

// unstick drops from an unsettled group's desired replicas a node that died
// before the step adding or promoting it was carried out: the agent can
// never promote a dead learner, and the group, never settled again, would
// get no other step (not even the replacement of its dead voters).
func (pl *planner) unstick(g *GroupPlacement, st GroupState) {
	have := map[string]Member{}
	for _, m := range st.Members {
		have[m.Node] = m
	}
	for i, r := range g.Replicas {
		m, listed := have[r.Node]
		if !pl.dead(r.Node) || (listed && m.Voter) || (listed && !r.Voter) {
			continue
		}
		g.Replicas = append(g.Replicas[:i:i], g.Replicas[i+1:]...)
		if g.Leader == r.Node {
			g.Leader = ""
		}
		pl.decide(DecideRemove, g.ID, r.Node, fmt.Sprintf("down for %s or more before it could be added or promoted", pl.o.DeadAfter))
		return
	}
}

// without returns replicas without node's.
func without(replicas []Replica, node string) []Replica {
	var out []Replica
	for _, r := range replicas {
		if r.Node != node {
			out = append(out, r)
		}
	}
	return out
}

// safeSurplus picks a healthy voter of g whose removal keeps g zone-safe and
// loses no copy the group needs: one that is not caught up (it holds no
// current copy), else one whose removal leaves want caught-up voters. Never
// the preferred zone's last replica.
func (pl *planner) safeSurplus(g *GroupPlacement, st GroupState, prefer string) (string, bool) {
	zoneCount := map[string]int{}
	upVoters := 0
	for _, r := range g.Replicas {
		zoneCount[pl.nodes[r.Node].Zone]++
		if r.Voter && !pl.leaving(r.Node) && pl.caughtUp(st, r.Node) {
			upVoters++
		}
	}
	best, bestUp := "", true
	for _, r := range g.Replicas {
		z := pl.nodes[r.Node].Zone
		if !r.Voter || pl.leaving(r.Node) || (z == prefer && zoneCount[z] == 1) || !pl.zoneSafe(without(g.Replicas, r.Node), "") || !pl.keepsQuorum(g, r.Node) {
			continue
		}
		isUp := pl.caughtUp(st, r.Node)
		if isUp && upVoters-1 < pl.p.Topology.Replicas {
			continue
		}
		if best == "" || (bestUp && !isUp) || (bestUp == isUp && r.Node < best) {
			best, bestUp = r.Node, isUp
		}
	}
	return best, best != ""
}

// someVoterDown reports whether a voter of g is down but not yet dead.
func (pl *planner) someVoterDown(g *GroupPlacement) bool {
	for _, r := range g.Replicas {
		if r.Voter && !pl.nodes[r.Node].Alive && !pl.dead(r.Node) {
			return true
		}
	}
	return false
}

// keepsQuorum reports whether g's voters other than node that are up are a
// majority of them: removing node then leaves the group a leader.
func (pl *planner) keepsQuorum(g *GroupPlacement, node string) bool {
	n, live := 0, 0
	for _, r := range g.Replicas {
		if r.Voter && r.Node != node {
			n++
			if pl.nodes[r.Node].Alive {
				live++
			}
		}
	}
	return 2*live > n
}

// surplus picks the replica to drop from a group with one voter too many:
// one in a zone that holds two, else the one on the most loaded node; never
// the last replica of the preferred (owner) zone.
func (pl *planner) surplus(g *GroupPlacement, prefer string) (string, bool) {
	load := pl.load()
	zoneCount := map[string]int{}
	for _, r := range g.Replicas {
		zoneCount[pl.nodes[r.Node].Zone]++
	}
	best, bestScore := "", -1
	for _, r := range g.Replicas {
		z := pl.nodes[r.Node].Zone
		if z == prefer && zoneCount[z] == 1 {
			continue
		}
		score := load[r.Node]
		if zoneCount[z] > 1 {
			score += 1 << 20
		}
		if score > bestScore || (score == bestScore && r.Node > best) {
			best, bestScore = r.Node, score
		}
	}
	return best, best != ""
}

// balanceLeaders spreads leadership over the nodes of each zone, as TiKV's
// leader balancing does: a node leading two or more groups more than
// another node of its zone hands one of them to it (a group served by that
// zone, or by no zone in particular). It sets the group's Leader;
// the agent of the node leading it transfers the leadership once the target
// is caught up. One move at a time in the whole cluster: none starts while
// another group's leadership has yet to reach its preferred node.
//
// A preference that can no longer be honoured (the node is drained, not a
// voter of the group, or outside its serving zone) is dropped; one for a
// node that is down is kept, and the node leads again once it is back.
func (pl *planner) balanceLeaders() {
	pending := false
	for i := range pl.p.Groups {
		g := &pl.p.Groups[i]
		if g.Leader == "" {
			continue
		}
		r, ok := g.Replica(g.Leader)
		n := pl.nodes[g.Leader]
		if !ok || !r.Voter || pl.p.Drained(n.Name, n.Zone) || (g.ServingZone != "" && n.Zone != g.ServingZone) {
			node := g.Leader
			g.Leader = ""
			pl.decide(DecideLeader, g.ID, "", "preferred leader "+node+" is no longer a voter in the serving zone")
			continue
		}
		if !n.Alive {
			continue // it leads again when it is back
		}
		if st, ok := pl.s.Groups[g.ID]; !ok || st.Leader != g.Leader {
			pending = true
		}
	}
	if pending {
		return
	}
	// Leaders per eligible node, per zone.
	count := map[string]map[string]int{}
	for _, n := range pl.s.Nodes {
		if pl.eligible(n) {
			if count[n.Zone] == nil {
				count[n.Zone] = map[string]int{}
			}
			count[n.Zone][n.Name] = 0
		}
	}
	for i := range pl.p.Groups {
		st, ok := pl.s.Groups[pl.p.Groups[i].ID]
		if !ok || st.Leader == "" {
			continue
		}
		if c := count[pl.nodes[st.Leader].Zone]; c != nil {
			if _, ok := c[st.Leader]; ok {
				c[st.Leader]++
			}
		}
	}
	zones := make([]string, 0, len(count))
	for z := range count {
		zones = append(zones, z)
	}
	sort.Strings(zones)
	for _, z := range zones {
		c := count[z]
		from, to := "", ""
		for n, k := range c {
			if from == "" || k > c[from] || (k == c[from] && n < from) {
				from = n
			}
			if to == "" || k < c[to] || (k == c[to] && n < to) {
				to = n
			}
		}
		if c[from]-c[to] < 2 {
			continue
		}
		for i := range pl.p.Groups {
			g := &pl.p.Groups[i]
			st, ok := pl.s.Groups[g.ID]
			if !ok || st.Leader != from || (g.ServingZone != "" && g.ServingZone != z) || !settled(g, st) {
				continue
			}
			if r, ok := g.Replica(to); !ok || !r.Voter || !pl.caughtUp(st, to) {
				continue
			}
			g.Leader = to
			pl.decide(DecideLeader, g.ID, to, fmt.Sprintf("%s leads %d groups of zone %s, %s leads %d", from, c[from], z, to, c[to]))
			return
		}
	}
}
