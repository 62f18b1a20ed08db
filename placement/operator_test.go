package placement

import (
	"errors"
	"testing"
)

func ldcSim(t *testing.T, extra string, perZone int) *sim {
	topo := topoWith(t, 3, true, 3, extra)
	s := newSim(t, topo, NodeState{Name: "gz-0", Zone: "gz"})
	for _, z := range []string{"gz", "rz0", "rz1", "rz2"} {
		for i := 0; i < perZone; i++ {
			if n := z + "-" + string(rune('0'+i)); n != "gz-0" {
				s.join(n, z)
			}
		}
	}
	s.settle()
	return s
}

func hosts(p *Placement, node string) int {
	n := 0
	for _, g := range p.Groups {
		if _, ok := g.Replica(node); ok {
			n++
		}
	}
	return n
}

func TestMove(t *testing.T) {
	s := ldcSim(t, ", failover: [rz1, rz2], failback: manual", 2)
	g, _ := s.p.Group("g-00-24")
	epoch := g.Epoch
	next, err := Move(s.p, "00-24", "rz2")
	if err != nil {
		t.Fatal(err)
	}
	s.p = next
	s.settle()
	g, _ = s.p.Group("g-00-24")
	r, _ := s.p.Topology.Range("g-00-24")
	if r.Owner != "rz2" || g.OwnerZone != "rz2" || g.ServingZone != "rz2" || g.Epoch <= epoch || s.nodes[s.leaderOf(g)].Zone != "rz2" {
		t.Fatalf("after move: owner %s/%s serving %s epoch %d (was %d) leader %s", r.Owner, g.OwnerZone, g.ServingZone, g.Epoch, epoch, s.leaderOf(g))
	}
	for _, bad := range []struct{ shards, zone string }{{"00-24", "rz2"}, {"00-25", "rz1"}, {"xx", "rz1"}, {"00-24", "gz"}, {"00-24", "nope"}, {"00-24", "cz"}} {
		if _, err := Move(s.p, bad.shards, bad.zone); !errors.Is(err, ErrBadOperation) {
			t.Errorf("Move(%s, %s) = %v, want ErrBadOperation", bad.shards, bad.zone, err)
		}
	}
}

func TestDrainNodeAndZone(t *testing.T) {
	s := ldcSim(t, ", failover: [rz1, rz2]", 2)
	// A node.
	victim := "rz1-0"
	if hosts(s.p, victim) == 0 {
		victim = "rz1-1"
	}
	next, err := Drain(s.p, victim, "")
	if err != nil {
		t.Fatal(err)
	}
	s.p = next
	s.settle()
	if n := hosts(s.p, victim); n != 0 {
		t.Fatalf("drained node %s still hosts %d replicas", victim, n)
	}
	s.check(3, true)
	if s.p, err = Undrain(s.p, victim, ""); err != nil {
		t.Fatal(err)
	}
	s.settle()
	if hosts(s.p, victim) == 0 {
		t.Fatalf("undrained node %s got nothing back", victim)
	}
	// A whole owner zone: its ranges are served elsewhere and it holds
	// nothing; undrained, replicas and leadership come back.
	if s.p, err = Drain(s.p, "", "rz0"); err != nil {
		t.Fatal(err)
	}
	s.settle()
	for _, g := range s.p.Groups {
		for _, r := range g.Replicas {
			if s.nodes[r.Node].Zone == "rz0" {
				t.Fatalf("%s keeps a replica in drained zone rz0", g.ID)
			}
		}
		if g.ServingZone == "rz0" {
			t.Fatalf("%s is still served by drained zone rz0", g.ID)
		}
	}
	if s.p, err = Undrain(s.p, "", "rz0"); err != nil {
		t.Fatal(err)
	}
	s.settle()
	for _, g := range s.p.Groups {
		if g.OwnerZone == "rz0" && g.ServingZone != "rz0" {
			t.Fatalf("%s not served by rz0 after undrain: %s", g.ID, g.ServingZone)
		}
	}
	s.check(3, true)
	if _, err := Drain(s.p, "", ""); !errors.Is(err, ErrBadOperation) {
		t.Errorf("Drain with nothing named: %v", err)
	}
	if _, err := Undrain(s.p, "rz0-0", ""); !errors.Is(err, ErrBadOperation) {
		t.Errorf("Undrain of a node that is not drained: %v", err)
	}
}

func TestManualFailbackRequest(t *testing.T) {
	s := ldcSim(t, ", failover: [rz1, rz2], failback: manual", 1)
	s.kill("rz0-0")
	s.settle()
	s.nodes["rz0-0"].Alive = true
	s.settle()
	g, _ := s.p.Group("g-00-24")
	if g.ServingZone == "rz0" {
		t.Fatal("manual failback returned on its own")
	}
	next, err := RequestFailback(s.p, "")
	if err != nil {
		t.Fatal(err)
	}
	s.p = next
	s.settle()
	g, _ = s.p.Group("g-00-24")
	if g.ServingZone != "rz0" || g.FailbackRequested {
		t.Fatalf("after failback request: serving %s requested %v", g.ServingZone, g.FailbackRequested)
	}
	if _, err := RequestFailback(s.p, ""); !errors.Is(err, ErrBadOperation) {
		t.Errorf("failback with nothing failed over: %v", err)
	}
}

func TestSplitSteps(t *testing.T) {
	s := ldcSim(t, ", failover: [rz1, rz2]", 1)
	next, err := Split(s.p, "00-24", 10)
	if err != nil {
		t.Fatal(err)
	}
	s.p = next
	s.settle()
	tgt, ok := s.p.Group("g-10-24")
	if !ok || len(tgt.Voters()) != 3 || tgt.ServingZone != "rz0" {
		t.Fatalf("target group: %+v", tgt)
	}
	// Not routed yet: shard 12 still goes to the source.
	if g, _ := s.p.GroupForShard(12); g.ID != "g-00-24" {
		t.Fatalf("shard 12 routed to %s before the switch", g.ID)
	}
	if _, err := CompleteSplit(s.p, "g-10-24"); !errors.Is(err, ErrBadOperation) {
		t.Fatalf("switch before the fence: %v", err)
	}
	if s.p, err = RecordFence(s.p, "g-10-24", 777); err != nil {
		t.Fatal(err)
	}
	epoch := s.p.Epoch
	if s.p, err = CompleteSplit(s.p, "g-10-24"); err != nil {
		t.Fatal(err)
	}
	for shard, want := range map[int]string{0: "g-00-24", 9: "g-00-24", 10: "g-10-24", 24: "g-10-24", 25: "g-25-49"} {
		if g, ok := s.p.GroupForShard(shard); !ok || g.ID != want {
			t.Errorf("shard %d routes to %v, want %s", shard, g, want)
		}
	}
	src, _ := s.p.Group("g-00-24")
	if src.Shards != "00-09" || s.p.Epoch <= epoch || len(s.p.Splits) != 0 || len(s.p.Topology.Ranges) != 5 {
		t.Fatalf("after switch: source shards %s, epoch %d (was %d), splits %v, ranges %d", src.Shards, s.p.Epoch, epoch, s.p.Splits, len(s.p.Topology.Ranges))
	}
	// The new range keeps the owner and failover list.
	r, _ := s.p.Topology.RangeOf(15)
	if r.Owner != "rz0" || len(r.Failover) != 2 {
		t.Fatalf("split range: %+v", r)
	}
	// The placement survives a round trip through its stored form.
	q, err := Decode(s.p.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := q.GroupForShard(5); g.ID != "g-00-24" {
		t.Fatalf("after decode, shard 5 routes to %s", g.ID)
	}
	s.settle()
	s.check(3, true)
	for _, bad := range []struct {
		shards string
		at     int
	}{{"00-09", 0}, {"00-09", 10}, {"10-24", 10}, {"50-74", 80}, {"xx", 3}} {
		if _, err := Split(s.p, bad.shards, bad.at); !errors.Is(err, ErrBadOperation) {
			t.Errorf("Split(%s, %d) = %v, want ErrBadOperation", bad.shards, bad.at, err)
		}
	}
}
