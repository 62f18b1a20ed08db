package jepsen

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"sort"
	"time"

	"github.com/ldcd/ldcd/client"
)

// Nemeses are the fault schedules a run can use.
var Nemeses = []string{"none", "kill", "pause", "partition", "placement", "mixed"}

// nemesis injects faults of its kinds at random, from a seeded source, and
// heals them. It runs on one goroutine.
type nemesis struct {
	c     *Cluster
	net   *Net // nil when partitions are not possible here
	cl    *client.Client
	rnd   *rand.Rand
	rec   *Recorder
	kinds []string
	logf  func(format string, args ...any)

	killed []*Node
	paused []*Node
	cut    bool
	split  bool
}

func newNemesis(name string, c *Cluster, net *Net, cl *client.Client, rnd *rand.Rand, rec *Recorder, logf func(string, ...any)) *nemesis {
	n := &nemesis{c: c, net: net, cl: cl, rnd: rnd, rec: rec, logf: logf}
	switch name {
	case "none":
	case "mixed":
		n.kinds = []string{"kill", "pause", "partition", "placement"}
	default:
		n.kinds = []string{name}
	}
	if net == nil {
		n.kinds = slices.DeleteFunc(n.kinds, func(k string) bool { return k == "partition" })
	}
	return n
}

func (n *nemesis) sleep(ctx context.Context, lo, hi time.Duration) bool {
	d := lo + time.Duration(n.rnd.Int63n(int64(hi-lo)+1))
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// run injects faults until ctx ends, then heals everything.
func (n *nemesis) run(ctx context.Context) {
	defer n.heal()
	if len(n.kinds) == 0 {
		<-ctx.Done()
		return
	}
	for n.sleep(ctx, time.Second, 3*time.Second) {
		kind := n.kinds[n.rnd.Intn(len(n.kinds))]
		desc, err := n.start(ctx, kind)
		if err != nil {
			n.logf("nemesis %s: %v", kind, err)
			continue
		}
		n.note("start", desc)
		if !n.sleep(ctx, 2*time.Second, 6*time.Second) {
			return
		}
		n.heal()
		n.note("stop", desc)
	}
}

func (n *nemesis) note(what, desc string) {
	n.logf("nemesis %s: %s", what, desc)
	n.rec.Add(Op{Process: -1, F: "nemesis-" + what, Value: desc, Status: StatusOK, Call: n.rec.Now()})
}

func (n *nemesis) pick(k int) []*Node {
	idx := n.rnd.Perm(len(n.c.Nodes))[:k]
	out := make([]*Node, k)
	for i, j := range idx {
		out[i] = n.c.Nodes[j]
	}
	return out
}

func names(nodes []*Node) []string {
	var s []string
	for _, x := range nodes {
		s = append(s, x.Name)
	}
	sort.Strings(s)
	return s
}

func (n *nemesis) rest(of []*Node) []*Node {
	var out []*Node
	for _, x := range n.c.Nodes {
		if !slices.Contains(of, x) {
			out = append(out, x)
		}
	}
	return out
}

func (n *nemesis) byZone() map[string][]*Node {
	m := map[string][]*Node{}
	for _, x := range n.c.Nodes {
		m[x.Zone] = append(m[x.Zone], x)
	}
	return m
}

// leaders returns the nodes leading some group now, busiest first.
func (n *nemesis) leaders(ctx context.Context) []*Node {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := n.cl.Cluster(cctx)
	if err != nil {
		return nil
	}
	var out []*Node
	for _, name := range leaderCounts(info) {
		for _, x := range n.c.Nodes {
			if x.Name == name {
				out = append(out, x)
			}
		}
	}
	return out
}

func (n *nemesis) start(ctx context.Context, kind string) (string, error) {
	switch kind {
	case "kill":
		var victims []*Node
		var what string
		switch n.rnd.Intn(3) {
		case 0:
			victims, what = n.pick(1), "one node"
		case 1:
			victims, what = n.pick((len(n.c.Nodes)-1)/2), "a minority"
		default:
			zones := n.byZone()
			z := "rz0"
			victims, what = zones[z], "zone "+z
		}
		for _, v := range victims {
			n.c.Kill(v)
		}
		n.killed = victims
		return fmt.Sprintf("kill -9 %s: %v", what, names(victims)), nil
	case "pause":
		victims := n.pick(1)
		what := "one node"
		if n.rnd.Intn(2) == 0 {
			if l := n.leaders(ctx); len(l) > 0 {
				victims, what = l[:1], "the busiest leader"
			}
		}
		for _, v := range victims {
			n.c.Pause(v)
		}
		n.paused = victims
		return fmt.Sprintf("SIGSTOP %s: %v", what, names(victims)), nil
	case "partition":
		var a, b []*Node
		var what string
		switch n.rnd.Intn(6) {
		case 0:
			a, what = n.pick(1), "one node isolated"
		case 1:
			a, what = n.pick((len(n.c.Nodes)-1)/2), "minority | majority"
		case 2:
			zones := n.byZone()
			var zs []string
			for z := range zones {
				zs = append(zs, z)
			}
			sort.Strings(zs)
			z := zs[n.rnd.Intn(len(zs))]
			a, what = zones[z], "zone "+z+" isolated"
		case 3:
			for _, x := range n.c.Nodes {
				if x.City == n.c.Nodes[0].City {
					a = append(a, x)
				}
			}
			what = "cities split"
		case 4:
			l := n.leaders(ctx)
			if len(l) == 0 {
				return "", fmt.Errorf("no leaders known")
			}
			a, what = l[:min(2, len(l))], "leaders isolated"
		default:
			p := n.pick(2)
			if err := n.net.Drop(p[0], p[1]); err != nil {
				return "", err
			}
			n.cut = true
			return fmt.Sprintf("one-way drop %s → %s", p[0].Name, p[1].Name), nil
		}
		b = n.rest(a)
		if err := n.net.Partition(a, b); err != nil {
			n.net.Heal()
			return "", err
		}
		n.cut = true
		return fmt.Sprintf("partition (%s): %v | %v", what, names(a), names(b)), nil
	case "placement":
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		p, err := n.cl.Placement(cctx)
		if err != nil {
			return "", err
		}
		if !n.split && n.rnd.Intn(4) == 0 {
			r := p.Topology.Ranges[n.rnd.Intn(len(p.Topology.Ranges))]
			if r.Hi() > r.Lo() && len(p.Splits) == 0 {
				at := r.Lo() + 1 + n.rnd.Intn(r.Hi()-r.Lo())
				if _, err := n.cl.PlacementAction(cctx, "split", client.PlacementRequest{Shards: r.Shards, At: at}); err != nil {
					return "", err
				}
				n.split = true
				return fmt.Sprintf("split %s at %02d", r.Shards, at), nil
			}
		}
		r := p.Topology.Ranges[n.rnd.Intn(len(p.Topology.Ranges))]
		var zones []string
		for _, z := range p.Topology.Zones {
			if z.Kind == "rzone" && z.Name != r.Owner {
				zones = append(zones, z.Name)
			}
		}
		to := zones[n.rnd.Intn(len(zones))]
		if _, err := n.cl.PlacementAction(cctx, "move", client.PlacementRequest{Shards: r.Shards, Zone: to}); err != nil {
			return "", err
		}
		return fmt.Sprintf("move %s from %s to %s", r.Shards, r.Owner, to), nil
	}
	return "", fmt.Errorf("unknown fault %q", kind)
}

// heal undoes every fault: the network, paused and killed processes.
func (n *nemesis) heal() {
	if n.cut && n.net != nil {
		if err := n.net.Heal(); err != nil {
			n.logf("heal network: %v", err)
		}
		n.cut = false
	}
	for _, v := range n.paused {
		n.c.Resume(v)
	}
	n.paused = nil
	for _, v := range n.killed {
		if err := n.c.Start(v); err != nil {
			n.logf("restart %s: %v", v.Name, err)
		}
	}
	n.killed = nil
}

// leaderCounts returns the names of the nodes leading groups, busiest first.
func leaderCounts(info *client.ClusterInfo) []string {
	count := map[string]int{}
	for _, g := range info.Groups {
		count[g.Leader]++
	}
	var names []string
	for n := range count {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return count[names[i]] > count[names[j]] || (count[names[i]] == count[names[j]] && names[i] < names[j])
	})
	return names
}
