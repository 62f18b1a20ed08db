package placement

import (
	"fmt"
	"strings"
	"testing"
)

// topoWith builds a topology of n rzones (rz0..), optionally a gzone, with
// ranges of 25 shards owned round-robin.
func topoWith(t *testing.T, rzones int, gzone bool, replicas int, extra string) *Topology {
	var b strings.Builder
	b.WriteString("zones:\n")
	if gzone {
		b.WriteString("  - {name: gz, city: c0, kind: gzone}\n")
	}
	for i := 0; i < rzones; i++ {
		fmt.Fprintf(&b, "  - {name: rz%d, city: c%d, kind: rzone}\n", i, i%2)
	}
	b.WriteString("  - {name: cz, city: c1, kind: czone}\nranges:\n")
	for i := 0; i < 4; i++ {
		fmt.Fprintf(&b, "  - {shards: %02d-%02d, owner: rz%d%s}\n", i*25, i*25+24, i%rzones, extra)
	}
	fmt.Fprintf(&b, "replicas: %d\n", replicas)
	topo, err := ParseTopology([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func TestPlanZoneRules(t *testing.T) {
	tests := []struct {
		name     string
		rzones   int
		gzone    bool
		perZone  int
		replicas int
	}{
		{"1 zone", 1, false, 3, 3},
		{"2 zones", 2, false, 2, 3},
		{"3 zones", 3, false, 1, 3},
		{"3 zones 5 replicas", 3, false, 2, 5},
		{"5 zones", 5, false, 1, 3},
		{"gzone and 3 rzones", 3, true, 2, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo := topoWith(t, tt.rzones, tt.gzone, tt.replicas, "")
			first := NodeState{Name: "rz0-0", Zone: "rz0"}
			if tt.gzone {
				first = NodeState{Name: "gz-0", Zone: "gz"}
			}
			s := newSim(t, topo, first)
			for _, z := range topo.Zones {
				for i := 0; i < tt.perZone; i++ {
					if name := fmt.Sprintf("%s-%d", z.Name, i); name != first.Name {
						s.join(name, z.Name)
					}
				}
			}
			s.settle()
			zones := tt.rzones
			if tt.gzone {
				zones++
			}
			for _, g := range s.p.Groups {
				count := map[string]int{}
				for _, v := range g.Voters() {
					count[s.nodes[v].Zone]++
				}
				if len(g.Voters()) != tt.replicas {
					t.Fatalf("%s: %d voters, want %d", g.ID, len(g.Voters()), tt.replicas)
				}
				if count["cz"] > 0 {
					t.Fatalf("%s: a czone holds a voter", g.ID)
				}
				for z, c := range count {
					if zones >= 3 && 2*c > tt.replicas {
						t.Fatalf("%s: zone %s holds %d of %d voters, a majority", g.ID, z, c, tt.replicas)
					}
				}
				if zones >= tt.replicas && len(count) != tt.replicas {
					t.Fatalf("%s: voters share zones %v though %d zones exist", g.ID, count, zones)
				}
				prefer := g.OwnerZone
				if g.ID == GlobalGroup {
					prefer = topo.GZone()
				}
				if prefer != "" && count[prefer] == 0 {
					t.Fatalf("%s: preferred zone %s holds no voter: %v", g.ID, prefer, count)
				}
				if prefer != "" && g.ServingZone != prefer {
					t.Fatalf("%s: serving zone %q, want %s", g.ID, g.ServingZone, prefer)
				}
			}
		})
	}
}

func TestPlanFailoverOrderAndFailback(t *testing.T) {
	for _, mode := range []string{FailbackAuto, FailbackManual} {
		t.Run(mode, func(t *testing.T) {
			topo := topoWith(t, 5, false, 5, ", failover: [rz2, rz1], failback: "+mode)
			s := newSim(t, topo, NodeState{Name: "rz0-0", Zone: "rz0"})
			for _, z := range []string{"rz1", "rz2", "rz3", "rz4"} {
				s.join(z+"-0", z)
			}
			s.settle()
			g, _ := s.p.Group("g-00-24") // owned by rz0, failover rz2 then rz1
			if g.ServingZone != "rz0" || s.leaderOf(g) != "rz0-0" {
				t.Fatalf("before: serving %s leader %s", g.ServingZone, s.leaderOf(g))
			}
			epoch := g.Epoch

			// The owner zone dies: the serving zone becomes rz2, first in
			// the failover list, and leadership is handed there.
			s.kill("rz0-0")
			ds := s.settle()
			g, _ = s.p.Group("g-00-24")
			if s.leaderOf(g) != "rz2-0" || g.ServingZone != "rz2" || g.Epoch <= epoch {
				t.Fatalf("after failover: leader %s serving %s epoch %d (was %d); decisions %v", s.leaderOf(g), g.ServingZone, g.Epoch, epoch, ds)
			}
			// Then rz2 dies too: rz1 is next.
			s.kill("rz2-0")
			s.settle()
			g, _ = s.p.Group("g-00-24")
			if s.leaderOf(g) != "rz1-0" || g.ServingZone != "rz1" {
				t.Fatalf("second failover: leader %s serving %s", s.leaderOf(g), g.ServingZone)
			}

			// Both come back and catch up.
			s.nodes["rz0-0"].Alive, s.nodes["rz2-0"].Alive = true, true
			s.settle()
			g, _ = s.p.Group("g-00-24")
			want := "rz0"
			if mode == FailbackManual {
				want = "rz1"
			}
			if g.ServingZone != want {
				t.Fatalf("after return: serving zone %s, want %s", g.ServingZone, want)
			}
		})
	}
}

func TestFailoverWithoutList(t *testing.T) {
	// No failover list: the serving zone follows wherever Raft elected.
	topo := topoWith(t, 3, false, 3, "")
	s := newSim(t, topo, NodeState{Name: "rz0-0", Zone: "rz0"})
	s.join("rz1-0", "rz1")
	s.join("rz2-0", "rz2")
	s.settle()
	s.kill("rz0-0")
	s.settle()
	g, _ := s.p.Group("g-00-24")
	if leader := s.leaderOf(g); leader == "" || g.ServingZone != s.nodes[leader].Zone || g.ServingZone == "rz0" {
		t.Fatalf("serving zone %s, leader %s", g.ServingZone, leader)
	}
}
