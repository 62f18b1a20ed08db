package jepsen

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ldcd/ldcd/client"
)

// Nemeses are the fault schedules a run can use.
var Nemeses = []string{"none", "kill", "pause", "partition", "placement", "membership", "power", "bitflip", "disk-full", "mixed"}

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

	// injected and failed count the faults started and the attempts that
	// could not start one: a run whose nemesis injected nothing is vacuous.
	injected, failed int

	killed []*Node
	paused []*Node
	cut    bool
	split  bool

	// The membership nemesis's: spawn starts a new node (the runner's);
	// retired holds the nodes killed for good and replaced; drained, what
	// heal undrains; added counts the nodes it started.
	spawn   func(name, zone, city string) (*Node, error)
	retired map[*Node]bool
	drained []client.PlacementRequest
	added   int

	// smallDisk is the disk-full nemesis's file system (rz1a's data
	// directory); balloon, the file that fills it while the fault lasts.
	smallDisk, balloon string
	// flipped is the node the bitflip nemesis damaged last.
	flipped *Node
}

func newNemesis(name string, c *Cluster, net *Net, cl *client.Client, rnd *rand.Rand, rec *Recorder, logf func(string, ...any)) *nemesis {
	n := &nemesis{c: c, net: net, cl: cl, rnd: rnd, rec: rec, logf: logf, retired: map[*Node]bool{}}
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
			n.failed++
			n.logf("nemesis %s: %v", kind, err)
			continue
		}
		n.injected++
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

// live returns the nodes not retired.
func (n *nemesis) live() []*Node {
	var out []*Node
	for _, x := range n.c.Nodes {
		if !n.retired[x] {
			out = append(out, x)
		}
	}
	return out
}

func (n *nemesis) pick(k int) []*Node {
	nodes := n.live()
	idx := n.rnd.Perm(len(nodes))[:k]
	out := make([]*Node, k)
	for i, j := range idx {
		out[i] = nodes[j]
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
	for _, x := range n.live() {
		if !slices.Contains(of, x) {
			out = append(out, x)
		}
	}
	return out
}

func (n *nemesis) byZone() map[string][]*Node {
	m := map[string][]*Node{}
	for _, x := range n.live() {
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
		victims, what := n.victims(n.byZone()["rz0"], "zone rz0")
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
			a, what = n.pick((len(n.live())-1)/2), "minority | majority"
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
	case "membership":
		return n.membership(ctx)
	case "power":
		// The nodes lose what they had not fsynced (RunConfig.FailpointBin).
		victims, what := n.victims(n.live(), "every node at one instant")
		n.killAll(victims)
		n.killed = victims
		return fmt.Sprintf("power loss of %s: %v", what, names(victims)), nil
	case "bitflip":
		return n.bitflip(ctx)
	case "disk-full":
		// Fill rz1a's file system to 16 MiB below its reserve (160 MiB):
		// the groups with a replica there refuse writes (507) until heal
		// deletes the balloon.
		var st syscall.Statfs_t
		if err := syscall.Statfs(n.smallDisk, &st); err != nil {
			return "", err
		}
		free := int64(st.Bavail) * int64(st.Bsize)
		size := free - (160-16)<<20
		if size <= 0 {
			return "", fmt.Errorf("rz1a's disk is already below its reserve (%d MiB free)", free>>20)
		}
		n.balloon = filepath.Join(n.smallDisk, "balloon")
		if err := writeBalloon(n.balloon, size); err != nil {
			os.Remove(n.balloon)
			return "", err
		}
		return fmt.Sprintf("disk of rz1a filled: %d MiB free of %d before, %d MiB balloon", free>>20, int64(st.Blocks)*int64(st.Bsize)>>20, size>>20), nil
	}
	return "", fmt.Errorf("unknown fault %q", kind)
}

// membership changes where data lives, and at the same time injects a kill,
// a pause or a partition of one node: faults during data movement. The
// change is one of: add a node, drain a node or a zone (undrained at heal),
// replace a node (killed for good, a fresh one started in its zone: the
// placement driver moves its replicas once it has been dead for the
// dead-node timeout), move a range's owner, split a range.
func (n *nemesis) membership(ctx context.Context) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rzoneNodes := func() []*Node {
		var out []*Node
		for _, x := range n.live() {
			if strings.HasPrefix(x.Zone, "rz") {
				out = append(out, x)
			}
		}
		return out
	}
	var change string
	switch n.rnd.Intn(6) {
	case 0: // add a node to a random rzone
		if n.added >= 2 {
			return n.placementChange(ctx)
		}
		zones := []string{"rz0", "rz1", "rz2"}
		z := zones[n.rnd.Intn(len(zones))]
		city := map[string]string{"rz0": "hz", "rz1": "hz", "rz2": "sh"}[z]
		n.added++
		name := fmt.Sprintf("%sx%d", z, n.added)
		if _, err := n.spawn(name, z, city); err != nil {
			return "", err
		}
		change = "add node " + name + " in " + z
	case 1: // drain a node
		cand := rzoneNodes()
		x := cand[n.rnd.Intn(len(cand))]
		req := client.PlacementRequest{Node: x.Name}
		if _, err := n.cl.PlacementAction(cctx, "drain", req); err != nil {
			return "", err
		}
		n.drained = append(n.drained, req)
		change = "drain node " + x.Name
	case 2: // drain a zone
		zones := []string{"rz0", "rz1", "rz2"}
		z := zones[n.rnd.Intn(len(zones))]
		req := client.PlacementRequest{Zone: z}
		if _, err := n.cl.PlacementAction(cctx, "drain", req); err != nil {
			return "", err
		}
		n.drained = append(n.drained, req)
		change = "drain zone " + z
	case 3: // replace a node: kill it for good, start a fresh one there
		if len(n.retired) > 0 {
			return n.placementChange(ctx)
		}
		cand := rzoneNodes()
		x := cand[n.rnd.Intn(len(cand))]
		n.c.Kill(x)
		n.retired[x] = true
		n.added++
		name := fmt.Sprintf("%sx%d", x.Zone, n.added)
		if _, err := n.spawn(name, x.Zone, x.City); err != nil {
			return "", err
		}
		change = fmt.Sprintf("replace %s by %s (killed for good)", x.Name, name)
	default: // move a range's owner or split one
		desc, err := n.placementChange(ctx)
		if err != nil {
			return "", err
		}
		change = desc
	}
	// The fault that runs with it, on a node not retired.
	fault := []string{"kill", "pause", "partition"}[n.rnd.Intn(3)]
	if fault == "partition" && n.net == nil {
		fault = "kill"
	}
	var desc string
	var err error
	switch fault {
	case "kill":
		x := n.pick(1)
		n.c.Kill(x[0])
		n.killed = x
		desc = "kill -9 " + x[0].Name
	case "pause":
		x := n.pick(1)
		n.c.Pause(x[0])
		n.paused = x
		desc = "SIGSTOP " + x[0].Name
	default:
		a := n.pick(1)
		if err = n.net.Partition(a, n.rest(a)); err != nil {
			n.net.Heal()
			return change, nil // the change happened; the fault did not
		}
		n.cut = true
		desc = "isolate " + a[0].Name
	}
	return change + " with " + desc, nil
}

// writeBalloon writes a file of size bytes (real blocks, not a hole).
func writeBalloon(name string, size int64) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for size > 0 {
		k := min(size, int64(len(buf)))
		if _, err := f.Write(buf[:k]); err != nil {
			f.Close()
			return err
		}
		size -= k
	}
	return f.Close()
}

// victims picks, with a third of a chance each, one node, a minority, or
// most (described as mostWhat).
func (n *nemesis) victims(most []*Node, mostWhat string) ([]*Node, string) {
	switch n.rnd.Intn(3) {
	case 0:
		return n.pick(1), "one node"
	case 1:
		return n.pick((len(n.live()) - 1) / 2), "a minority"
	}
	return most, mostWhat
}

// killAll kills the nodes at once (one goroutine each), as a power cut.
func (n *nemesis) killAll(nodes []*Node) {
	var wg sync.WaitGroup
	for _, x := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.c.Kill(x)
		}()
	}
	wg.Wait()
}

// bitflip kills one node, flips one bit in the middle of what its newest
// log segment holds (synced data: not a torn tail), and restarts it at
// heal: the node must report its replicas as damaged and the cluster
// rebuild them. Only while the cluster is settled (nothing damaged, three
// voters everywhere), so that no group ever has two damaged replicas.
func (n *nemesis) bitflip(ctx context.Context) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	info, err := n.cl.Cluster(cctx)
	cancel()
	if err != nil {
		return "", err
	}
	for _, g := range info.Groups {
		if len(g.Damaged) > 0 || len(g.Voters) != 3 || len(g.Nonvoters) > 0 || g.Leader == "" {
			return "", fmt.Errorf("not settled (%s: damaged %v, voters %v, learners %v): no flip now", g.ID, g.Damaged, g.Voters, g.Nonvoters)
		}
	}
	// The view may predate the last flip's report: ask that node itself
	// whether it still holds a damaged replica (two damaged replicas of one
	// group are two lost disks, beyond what a group of three survives).
	if n.flipped != nil {
		var st struct {
			Damaged map[string]string `json:"damaged"`
		}
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		err := GetJSON(sctx, n.flipped, "/v1/internal/status", &st)
		scancel()
		if err != nil || len(st.Damaged) > 0 {
			return "", fmt.Errorf("%s not rebuilt yet (damaged %v, %v): no flip now", n.flipped.Name, st.Damaged, err)
		}
	}
	var cand []*Node
	for _, x := range n.live() {
		if x.Zone != "cz-sh" { // a CZone node keeps no group log
			cand = append(cand, x)
		}
	}
	x := cand[n.rnd.Intn(len(cand))]
	n.c.Kill(x)
	n.killed = []*Node{x}
	n.flipped = x
	segs, err := filepath.Glob(filepath.Join(x.DataDir, "shared-log", "*.seg"))
	if err != nil || len(segs) == 0 {
		return "", fmt.Errorf("no log segment on %s: %v", x.Name, err)
	}
	seg := segs[len(segs)-1]
	b, err := os.ReadFile(seg)
	if err != nil {
		return "", err
	}
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	if end < 1024 {
		return "", fmt.Errorf("%s holds %d bytes: nothing to flip", seg, end)
	}
	at := end/4 + n.rnd.Intn(end/2)
	b[at] ^= 1 << n.rnd.Intn(8)
	if err := os.WriteFile(seg, b, 0o600); err != nil {
		return "", err
	}
	return fmt.Sprintf("bit flipped in %s of %s at offset %d of %d written", filepath.Base(seg), x.Name, at, end), nil
}

// placementChange moves a range's owner or splits one (the placement
// nemesis's faults).
func (n *nemesis) placementChange(ctx context.Context) (string, error) {
	return n.start(ctx, "placement")
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
	if n.balloon != "" {
		if err := os.Remove(n.balloon); err != nil {
			n.logf("remove the balloon: %v", err)
		}
		n.balloon = ""
	}
	if len(n.drained) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, req := range n.drained {
			for {
				_, err := n.cl.PlacementAction(ctx, "undrain", req)
				if err == nil || ctx.Err() != nil {
					if err != nil {
						n.logf("undrain %+v: %v", req, err)
					}
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
		n.drained = nil
	}
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
