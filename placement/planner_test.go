package placement

import (
	"fmt"
	"sort"
	"testing"
	"time"
)

// sim is a tiny cluster model: the agents carry out every placement at once
// (the Raft configuration follows the desired replicas), and a learner has
// caught up by the next round.
type sim struct {
	t     *testing.T
	now   time.Time
	p     *Placement
	nodes map[string]*NodeState
	opts  Options

	leaders map[string]string // group → node, as leaderOf last chose
}

func newSim(t *testing.T, topo *Topology, first NodeState) *sim {
	first.Alive = true
	s := &sim{t: t, now: time.Unix(1_700_000_000, 0), nodes: map[string]*NodeState{first.Name: &first}, opts: DefaultOptions()}
	s.p = &Placement{Version: 1, Topology: topo, Groups: []GroupPlacement{{ID: GlobalGroup, Replicas: []Replica{{Node: first.Name, Voter: true}}, Bootstrap: first.Name}}}
	return s
}

func (s *sim) join(name, zone string) {
	s.nodes[name] = &NodeState{Name: name, Zone: zone, Alive: true}
}

func (s *sim) kill(name string) {
	n := s.nodes[name]
	n.Alive, n.DownSince = false, s.now
}

func (s *sim) state() ClusterState {
	cs := ClusterState{Now: s.now, Groups: map[string]GroupState{}}
	var names []string
	for n := range s.nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cs.Nodes = append(cs.Nodes, *s.nodes[n])
	}
	for _, g := range s.p.Groups {
		st := GroupState{ID: g.ID, LeaderApplied: 100, Applied: map[string]uint64{}}
		for _, r := range g.Replicas {
			st.Members = append(st.Members, Member{Node: r.Node, Voter: r.Voter})
			if s.nodes[r.Node].Alive {
				st.Applied[r.Node] = 100
			}
		}
		st.Leader = s.leaderOf(&g)
		cs.Groups[g.ID] = st
	}
	return cs
}

// leaderOf models where Raft and the agents put a group's leader: with a
// quorum alive, the agents hand leadership to the preferred leader, else
// keep it where it is in the serving zone or hand it to a voter there;
// failing that, the previous leader keeps it while alive; failing that, Raft
// elects some alive voter (here: the first by name, deliberately not the
// preferred one, so that the tests see the agents' transfer do the work).
func (s *sim) leaderOf(g *GroupPlacement) string {
	if s.leaders == nil {
		s.leaders = map[string]string{}
	}
	alive := func(n string) bool {
		r, ok := g.Replica(n)
		return ok && r.Voter && s.nodes[n].Alive
	}
	up := 0
	var names []string
	for _, r := range g.Replicas {
		if alive(r.Node) {
			up++
			names = append(names, r.Node)
		}
	}
	if 2*up <= len(g.Voters()) {
		return "" // no quorum, no leader
	}
	if g.Leader != "" && alive(g.Leader) && (g.ServingZone == "" || s.nodes[g.Leader].Zone == g.ServingZone) {
		s.leaders[g.ID] = g.Leader
		return g.Leader
	}
	if cur := s.leaders[g.ID]; cur != "" && alive(cur) && g.ServingZone != "" && s.nodes[cur].Zone == g.ServingZone {
		return cur
	}
	for _, r := range g.Replicas {
		if alive(r.Node) && g.ServingZone != "" && s.nodes[r.Node].Zone == g.ServingZone {
			s.leaders[g.ID] = r.Node
			return r.Node
		}
	}
	if cur := s.leaders[g.ID]; cur != "" && alive(cur) {
		return cur
	}
	sort.Strings(names)
	s.leaders[g.ID] = names[0]
	return names[0]
}

// settle runs the planner until it has nothing more to do.
func (s *sim) settle() []Decision {
	var all []Decision
	for i := 0; i < 100; i++ {
		next, ds := Plan(s.p, s.state(), s.opts)
		if next == nil {
			return all
		}
		if next.Version != s.p.Version+1 {
			s.t.Fatalf("version %d after %d", next.Version, s.p.Version)
		}
		s.p = next
		all = append(all, ds...)
		s.now = s.now.Add(time.Second)
	}
	s.t.Fatal("planner did not settle in 100 rounds")
	return nil
}

// check asserts the placement invariants: every group has want voters on
// distinct nodes, no czone node hosts a replica, and, when there are enough
// zones, the voters sit in distinct zones.
func (s *sim) check(want int, distinctZones bool) {
	s.t.Helper()
	if got := len(s.p.Groups); got != len(s.p.Topology.Ranges)+1 {
		s.t.Fatalf("%d groups, want %d", got, len(s.p.Topology.Ranges)+1)
	}
	for _, g := range s.p.Groups {
		voters := g.Voters()
		if len(voters) != want || len(g.Replicas) != want {
			s.t.Fatalf("%s: replicas %+v, want %d voters", g.ID, g.Replicas, want)
		}
		zones := map[string]bool{}
		for _, v := range voters {
			n := s.nodes[v]
			if !n.Alive {
				s.t.Fatalf("%s keeps a replica on dead node %s", g.ID, v)
			}
			if z, ok := s.p.Topology.Zone(n.Zone); ok && z.Kind == KindCZone {
				s.t.Fatalf("%s has a replica on czone node %s", g.ID, v)
			}
			zones[n.Zone] = true
		}
		if distinctZones && len(zones) != want {
			s.t.Fatalf("%s voters %v share zones", g.ID, voters)
		}
	}
}

func TestPlanGrowsToThreeReplicas(t *testing.T) {
	s := newSim(t, DefaultTopology("z", "c"), NodeState{Name: "n1", Zone: "z"})
	ds := s.settle()
	s.check(1, false)
	if ds[0].Kind != DecideCreate {
		t.Fatalf("first decision %v, want create", ds[0])
	}
	s.join("n2", "z")
	s.settle()
	s.check(2, false)
	s.join("n3", "z")
	s.settle()
	s.check(3, false)
	// Settled means settled: another round changes nothing.
	if next, ds := Plan(s.p, s.state(), s.opts); next != nil {
		t.Fatalf("planner changed a settled cluster: %v", ds)
	}
}

func TestPlanDistinctZonesAndCZone(t *testing.T) {
	topo, err := ParseTopology([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	s := newSim(t, topo, NodeState{Name: "g1", Zone: "gz"})
	for _, n := range []struct{ name, zone string }{{"a1", "rz0"}, {"a2", "rz0"}, {"b1", "rz1"}, {"c1", "rz2"}, {"cz1", "cz-sh"}} {
		s.join(n.name, n.zone)
	}
	s.settle()
	s.check(3, true)
	// The owner zone holds a replica of each of its ranges.
	for _, g := range s.p.Groups {
		if g.ID == GlobalGroup {
			continue
		}
		found := false
		for _, r := range g.Replicas {
			found = found || s.nodes[r.Node].Zone == g.OwnerZone
		}
		if !found {
			t.Errorf("%s has no replica in its owner zone %s: %+v", g.ID, g.OwnerZone, g.Replicas)
		}
	}
}

func TestPlanReplacesDeadNode(t *testing.T) {
	s := newSim(t, DefaultTopology("z", "c"), NodeState{Name: "n1", Zone: "z"})
	for i := 2; i <= 4; i++ {
		s.join(fmt.Sprintf("n%d", i), "z")
	}
	s.settle()
	s.check(3, false)
	var victim string
	for _, r := range s.p.Groups[1].Replicas {
		if r.Node != "n1" {
			victim = r.Node
		}
	}
	s.kill(victim)
	// Not yet dead for long enough: no replica moves (leaders may).
	if _, ds := Plan(s.p, s.state(), s.opts); len(replicaDecisions(ds)) > 0 {
		t.Fatalf("planner replaced a node that is down for less than DeadAfter: %v", ds)
	}
	s.now = s.now.Add(s.opts.DeadAfter)
	ds := s.settle()
	s.check(3, false)
	// The replacement was added and promoted before the dead voter left.
	order := map[string][]string{}
	for _, d := range replicaDecisions(ds) {
		order[d.Group] = append(order[d.Group], d.Kind)
	}
	for g, kinds := range order {
		if fmt.Sprint(kinds) != fmt.Sprint([]string{DecideAdd, DecidePromote, DecideRemove}) {
			t.Errorf("%s: decisions %v, want add, promote, remove", g, kinds)
		}
	}
}

func TestPlanKeepsDeadVoterWithoutReplacement(t *testing.T) {
	s := newSim(t, DefaultTopology("z", "c"), NodeState{Name: "n1", Zone: "z"})
	s.join("n2", "z")
	s.join("n3", "z")
	s.settle()
	s.kill("n3")
	s.now = s.now.Add(time.Hour)
	if _, ds := Plan(s.p, s.state(), s.opts); len(replicaDecisions(ds)) > 0 {
		t.Fatalf("planner removed a voter with no replacement: %v", ds)
	}
}

// replicaDecisions drops the leader balancing decisions from ds.
func replicaDecisions(ds []Decision) []Decision {
	var out []Decision
	for _, d := range ds {
		if d.Kind != DecideLeader {
			out = append(out, d)
		}
	}
	return out
}

func TestPlanWaitsForConfiguration(t *testing.T) {
	s := newSim(t, DefaultTopology("z", "c"), NodeState{Name: "n1", Zone: "z"})
	s.settle()
	s.join("n2", "z")
	next, _ := Plan(s.p, s.state(), s.opts)
	// The agents have not carried the learners out yet: observed state is
	// the old one, so the planner must not stack a second change.
	st := s.state()
	s.p = next
	if again, ds := Plan(s.p, st, s.opts); again != nil {
		t.Fatalf("planner made a second change before the first was carried out: %v", ds)
	}
}

func TestPlanRebalancesOntoNewNode(t *testing.T) {
	s := newSim(t, DefaultTopology("z", "c"), NodeState{Name: "n1", Zone: "z"})
	s.join("n2", "z")
	s.join("n3", "z")
	s.settle()
	s.check(3, false)
	s.join("n4", "z")
	ds := s.settle()
	s.check(3, false)
	load := map[string]int{}
	for _, g := range s.p.Groups {
		for _, r := range g.Replicas {
			load[r.Node]++
		}
	}
	lo, hi := 1<<30, 0
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		lo, hi = min(lo, load[n]), max(hi, load[n])
	}
	if hi-lo > 1 || load["n4"] == 0 {
		t.Fatalf("unbalanced after a fourth node joined: %v (decisions %v)", load, ds)
	}
	// Every move added and promoted the new replica before removing the old.
	for _, g := range s.p.Groups {
		var kinds []string
		for _, d := range replicaDecisions(ds) {
			if d.Group == g.ID {
				kinds = append(kinds, d.Kind)
			}
		}
		if len(kinds) > 0 && fmt.Sprint(kinds) != fmt.Sprint([]string{DecideRebalance, DecidePromote, DecideRemove}) {
			t.Errorf("%s: decisions %v, want rebalance, promote, remove", g.ID, kinds)
		}
	}
}

// countLeaders counts the groups each node leads in the sim.
func (s *sim) countLeaders() map[string]int {
	c := map[string]int{}
	for _, st := range s.state().Groups {
		c[st.Leader]++
	}
	return c
}

func TestPlanSpreadsLeaders(t *testing.T) {
	s := newSim(t, DefaultTopology("z", "c"), NodeState{Name: "n1", Zone: "z"})
	s.settle() // every group starts on n1, and n1 keeps leading them
	s.join("n2", "z")
	s.join("n3", "z")
	ds := s.settle()
	s.check(3, false)
	c := s.countLeaders()
	if c["n1"]-c["n3"] > 1 || c["n1"]-c["n2"] > 1 || c["n2"]-c["n3"] > 1 || c["n3"]-c["n2"] > 1 {
		t.Fatalf("leaders %v after settling (decisions %v)", c, ds)
	}
	// One move at a time: a preference not yet carried out blocks the next.
	var moved string
	for _, g := range s.p.Groups {
		if g.Leader != "" {
			moved = g.ID
		}
	}
	if moved == "" {
		t.Fatal("no group has a preferred leader")
	}

	// n3 goes down: its groups elect another leader, and the balance
	// among n1 and n2 follows; its preferences stay, and it leads them
	// again when it is back.
	s.kill("n3")
	s.settle()
	c = s.countLeaders()
	if c["n3"] != 0 || c["n1"]-c["n2"] > 1 || c["n2"]-c["n1"] > 1 {
		t.Fatalf("leaders %v with n3 down", c)
	}
	n := s.nodes["n3"]
	n.Alive, n.DownSince = true, time.Time{}
	s.settle()
	c = s.countLeaders()
	if c["n3"] == 0 || c["n1"]-c["n3"] > 1 || c["n3"]-c["n1"] > 1 {
		t.Fatalf("leaders %v after n3 came back", c)
	}

	// Drained: n2's preferences are dropped.
	s.p.DrainedNodes = append(s.p.DrainedNodes, "n2")
	ds = s.settle()
	for _, g := range s.p.Groups {
		if g.Leader == "n2" {
			t.Fatalf("%s keeps drained n2 as its preferred leader (decisions %v)", g.ID, ds)
		}
	}
}

func TestPlanLeaderMoveWaits(t *testing.T) {
	s := newSim(t, DefaultTopology("z", "c"), NodeState{Name: "n1", Zone: "z"})
	s.settle()
	s.join("n2", "z")
	s.join("n3", "z")
	// Settle the replicas only: every group is led by n1. The planner asks
	// for one leader move, and none more while it has not happened.
	for i := 0; i < 100; i++ {
		next, ds := Plan(s.p, s.state(), s.opts)
		if len(replicaDecisions(ds)) == 0 {
			break
		}
		s.p = next
		for i := range s.p.Groups {
			s.p.Groups[i].Leader = ""
		}
	}
	st := s.state()
	next, ds := Plan(s.p, st, s.opts)
	if next == nil || len(ds) != 1 || ds[0].Kind != DecideLeader {
		t.Fatalf("decisions %v, want one leader move", ds)
	}
	if again, ds := Plan(next, st, s.opts); again != nil {
		t.Fatalf("a second leader move before the first happened: %v", ds)
	}
}

// BenchmarkPlanIdle is a PD leader's round over a settled cluster of 101
// groups on three nodes: nothing to decide.
func BenchmarkPlanIdle(b *testing.B) {
	topo, err := ParseTopology([]byte(singleShardRanges("z", "c", 100)))
	if err != nil {
		b.Fatal(err)
	}
	t := &testing.T{}
	s := newSim(t, topo, NodeState{Name: "n1", Zone: "z"})
	s.join("n2", "z")
	s.join("n3", "z")
	s.settle()
	st := s.state()
	if next, ds := Plan(s.p, st, s.opts); next != nil {
		b.Fatalf("not settled: %v", ds)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Plan(s.p, st, s.opts)
	}
}
