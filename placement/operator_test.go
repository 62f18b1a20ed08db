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
