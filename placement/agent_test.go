package placement

import (
	"reflect"
	"testing"
)

func TestActions(t *testing.T) {
	p := &Placement{Version: 3, Topology: DefaultTopology("z", "c"), Groups: []GroupPlacement{
		{ID: "global", Replicas: []Replica{{Node: "a", Voter: true}, {Node: "b", Voter: true}}},
		{ID: "g-00-09", Replicas: []Replica{{Node: "a", Voter: true}}, Bootstrap: "a"},
		{ID: "g-10-19", Replicas: []Replica{{Node: "a", Voter: true}, {Node: "b", Voter: true}, {Node: "c"}}},
		{ID: "g-20-29", Replicas: []Replica{{Node: "b", Voter: true}, {Node: "c", Voter: true}}},
		{ID: "g-30-39", Replicas: []Replica{{Node: "b", Voter: true}, {Node: "a"}}, Bootstrap: "a"},
		{ID: "g-40-49", Replicas: []Replica{{Node: "a", Voter: true}, {Node: "c", Voter: true}}},
	}}
	local := []string{"g-10-19", "g-20-29", "g-40-49", "g-90-99", "global"}
	leading := map[string][]Member{
		"global":  {{Node: "a", Voter: true}, {Node: "b"}},                                        // promote b
		"g-10-19": {{Node: "a", Voter: true}, {Node: "b", Voter: true}},                           // add c as learner
		"g-20-29": {{Node: "a", Voter: true}, {Node: "b", Voter: true}, {Node: "c", Voter: true}}, // a leaves: transfer first
		"g-40-49": {{Node: "a", Voter: true}, {Node: "c", Voter: true}, {Node: "d", Voter: true}}, // remove d
	}
	got := Actions(View{Me: "a", Local: local, Leading: leading, Removed: map[string]bool{"g-90-99": true}}, p)
	want := []Action{
		{Kind: ActBoot, Group: "g-00-09"},
		{Kind: ActStart, Group: "g-30-39"}, // named as bootstrap node but no longer alone: must not bootstrap
		// g-20-29 is led here: it is handed away first, not stopped.
		{Kind: ActStop, Group: "g-90-99"},
		{Kind: ActPromote, Group: "global", Node: "b"},
		{Kind: ActLearner, Group: "g-10-19", Node: "c"},
		{Kind: ActTransfer, Group: "g-20-29"},
		{Kind: ActRemove, Group: "g-40-49", Node: "d"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("actions\n got %+v\nwant %+v", got, want)
	}
	// A settled node has nothing to do.
	if got := Actions(View{Me: "b", Local: []string{"global", "g-10-19", "g-20-29", "g-30-39"}}, p); len(got) != 0 {
		t.Fatalf("settled node got actions %+v", got)
	}
}

// TestActionsStopOnlyOnceRemoved is the sequence that left a range without
// a quorum for good: the planner takes a fourth voter's replica off n0 ("4
// voters, 3 wanted") and n0's agent deleted it at once, while the group's
// committed configuration still listed n0 as a voter; losing n0's zone then
// left 2 of 4. The replica must keep running until its leader has removed
// it from the committed configuration.
func TestActionsStopOnlyOnceRemoved(t *testing.T) {
	p := &Placement{Version: 7, Topology: DefaultTopology("z", "c"), Groups: []GroupPlacement{
		{ID: "g-00-24", Replicas: []Replica{{Node: "n1", Voter: true}, {Node: "n2", Voter: true}, {Node: "n3", Voter: true}}},
	}}
	v := View{Me: "n0", Local: []string{"g-00-24"}}
	if got := StopCandidates(v, p); !reflect.DeepEqual(got, []string{"g-00-24"}) {
		t.Fatalf("StopCandidates = %v", got)
	}
	// n0 is still a voter in the committed configuration: nothing to do.
	if got := Actions(v, p); len(got) != 0 {
		t.Fatalf("a replica still in the committed configuration: actions %+v, want none", got)
	}
	// Its leader removed it: now it is stopped and its data deleted.
	v.Removed = map[string]bool{"g-00-24": true}
	if got, want := Actions(v, p), []Action{{Kind: ActStop, Group: "g-00-24"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("actions %+v, want %+v", got, want)
	}
	// A leader is never a candidate: it hands leadership away first.
	v = View{Me: "n0", Local: []string{"g-00-24"}, Leading: map[string][]Member{"g-00-24": {{Node: "n0", Voter: true}, {Node: "n1", Voter: true}}}}
	if got := StopCandidates(v, p); len(got) != 0 {
		t.Fatalf("StopCandidates of a leader = %v", got)
	}
}

func TestActionsPinLeader(t *testing.T) {
	p := &Placement{Version: 3, Topology: DefaultTopology("z", "c"), Groups: []GroupPlacement{
		{ID: "g-00-09", ServingZone: "rz0", Replicas: []Replica{{Node: "a", Voter: true}, {Node: "b", Voter: true}, {Node: "c", Voter: true}}},
		{ID: "g-10-19", ServingZone: "rz1", Replicas: []Replica{{Node: "a", Voter: true}, {Node: "b", Voter: true}, {Node: "c", Voter: true}}},
		{ID: "g-20-29", ServingZone: "rz0", Replicas: []Replica{{Node: "a", Voter: true}, {Node: "b", Voter: true}, {Node: "c", Voter: true}}},
	}}
	members := []Member{{Node: "a", Voter: true}, {Node: "b", Voter: true}, {Node: "c", Voter: true}}
	v := View{
		Me: "b", Zone: "rz1",
		Local:       []string{"g-00-09", "g-10-19", "g-20-29"},
		Leading:     map[string][]Member{"g-00-09": members, "g-10-19": members, "g-20-29": members},
		ZoneOf:      map[string]string{"a": "rz0", "b": "rz1", "c": "rz2"},
		Unreachable: map[string]map[string]bool{"g-20-29": {"a": true}},
	}
	got := Actions(v, p)
	// g-00-09: led from rz1 but served by rz0: hand it to a.
	// g-10-19: already led from its serving zone.
	// g-20-29: a is unreachable: no transfer into a dead end.
	want := []Action{{Kind: ActTransfer, Group: "g-00-09", Node: "a"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("actions %+v, want %+v", got, want)
	}
}

func TestActionsPreferredLeader(t *testing.T) {
	three := []Replica{{Node: "a", Voter: true}, {Node: "b", Voter: true}, {Node: "c", Voter: true}}
	p := &Placement{Version: 3, Topology: DefaultTopology("z", "c"), Groups: []GroupPlacement{
		{ID: "g-00-09", ServingZone: "z", Leader: "c", Replicas: three},                                      // to c
		{ID: "g-10-19", ServingZone: "z", Leader: "b", Replicas: three},                                      // b leads it already
		{ID: "g-20-29", ServingZone: "z", Leader: "a", Replicas: three},                                      // a is unreachable
		{ID: "g-30-39", ServingZone: "z", Leader: "c", Replicas: three[:2]},                                  // c is no member
		{ID: "g-40-49", ServingZone: "z", Replicas: three},                                                   // no preference
		{ID: "g-50-59", ServingZone: "z", Leader: "a", Replicas: []Replica{{Node: "a"}, three[1], three[2]}}, // a is a learner
	}}
	members := []Member{{Node: "a", Voter: true}, {Node: "b", Voter: true}, {Node: "c", Voter: true}}
	v := View{
		Me: "b", Zone: "z",
		Local: []string{"g-00-09", "g-10-19", "g-20-29", "g-30-39", "g-40-49", "g-50-59"},
		Leading: map[string][]Member{"g-00-09": members, "g-10-19": members, "g-20-29": members,
			"g-30-39": members[:2], "g-40-49": members, "g-50-59": {{Node: "a"}, members[1], members[2]}},
		ZoneOf:      map[string]string{"a": "z", "b": "z", "c": "z"},
		Unreachable: map[string]map[string]bool{"g-20-29": {"a": true}},
	}
	got := Actions(v, p)
	want := []Action{{Kind: ActTransfer, Group: "g-00-09", Node: "c"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("actions %+v, want %+v", got, want)
	}
}

// TestActionsDamagedReplica: the leader removes a member whose replica is
// damaged and does not add it back while it says so; the damaged node does
// not start the replica, and wipes it only once the committed configuration
// no longer lists it.
func TestActionsDamagedReplica(t *testing.T) {
	three := []Replica{{Node: "a", Voter: true}, {Node: "b", Voter: true}, {Node: "c", Voter: true}}
	p := &Placement{Version: 3, Topology: DefaultTopology("z", "c"), Groups: []GroupPlacement{{ID: "g-00-09", Replicas: three}}}
	all := []Member{{Node: "a", Voter: true}, {Node: "b", Voter: true}, {Node: "c", Voter: true}}
	// The leader a: c's replica is damaged.
	v := View{Me: "a", Local: []string{"g-00-09"}, Leading: map[string][]Member{"g-00-09": all},
		PeerDamaged: map[string]map[string]bool{"g-00-09": {"c": true}}}
	if got, want := Actions(v, p), []Action{{Kind: ActRemove, Group: "g-00-09", Node: "c"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("leader: %+v, want %+v", got, want)
	}
	// Removed, still damaged: not added back.
	v.Leading["g-00-09"] = all[:2]
	if got := Actions(v, p); len(got) != 0 {
		t.Fatalf("leader re-adds a damaged replica: %+v", got)
	}
	// Wiped (no longer damaged): added back as a learner.
	v.PeerDamaged = nil
	if got, want := Actions(v, p), []Action{{Kind: ActLearner, Group: "g-00-09", Node: "c"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("leader after the wipe: %+v, want %+v", got, want)
	}
	// The damaged node c: neither started nor wiped while listed.
	dv := View{Me: "c", Damaged: []string{"g-00-09"}}
	if got := Actions(dv, p); len(got) != 0 {
		t.Fatalf("damaged node while listed: %+v, want nothing", got)
	}
	dv.Removed = map[string]bool{"g-00-09": true}
	if got, want := Actions(dv, p), []Action{{Kind: ActWipe, Group: "g-00-09"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("damaged node once removed: %+v, want %+v", got, want)
	}
}
