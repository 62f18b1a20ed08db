package placement

import (
	"errors"
	"fmt"
	"slices"
)

// ErrBadOperation wraps every refused operator action.
var ErrBadOperation = errors.New("placement: bad operation")

func badOp(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadOperation, fmt.Sprintf(format, args...))
}

// The operator actions below are pure: each returns a new placement (its
// Version one higher) or an error naming what is wrong. The driver's planner
// then carries the change out, one Raft step at a time.

// Move makes zone the owner of the range shards ("00-24"): the range's
// traffic switches there. If zone holds no replica of the group yet, one is
// added first; then leadership moves and the routing epoch increases.
func Move(p *Placement, shards, zone string) (*Placement, error) {
	q := p.Clone()
	i, err := rangeIndex(q, shards)
	if err != nil {
		return nil, err
	}
	z, ok := q.Topology.Zone(zone)
	if !ok {
		return nil, badOp("zone %q is not in the topology", zone)
	}
	if z.Kind != KindRZone {
		return nil, badOp("zone %s is a %s; only an rzone owns shards", zone, z.Kind)
	}
	r := &q.Topology.Ranges[i]
	if r.Owner == zone {
		return nil, badOp("range %s is already owned by %s", r.Shards, zone)
	}
	r.Owner = zone
	if g, ok := q.Group(r.GroupID()); ok {
		g.OwnerZone = zone
		g.FailbackRequested = true // a move switches even a manual-failback range
		q.Epoch++
		g.Epoch = q.Epoch
	}
	q.Version++
	return q, nil
}

// Drain takes every replica and leader off a node (or, with zone set, off a
// whole zone); Undrain brings them back.
func Drain(p *Placement, node, zone string) (*Placement, error) { return setDrain(p, node, zone, true) }

// Undrain reverses Drain.
func Undrain(p *Placement, node, zone string) (*Placement, error) {
	return setDrain(p, node, zone, false)
}

func setDrain(p *Placement, node, zone string, on bool) (*Placement, error) {
	if (node == "") == (zone == "") {
		return nil, badOp("name exactly one node or one zone")
	}
	q := p.Clone()
	list := &q.DrainedNodes
	name := node
	if zone != "" {
		if _, ok := q.Topology.Zone(zone); !ok {
			return nil, badOp("zone %q is not in the topology", zone)
		}
		list, name = &q.DrainedZones, zone
	}
	has := slices.Contains(*list, name)
	switch {
	case on && has:
		return nil, badOp("%s is already drained", name)
	case !on && !has:
		return nil, badOp("%s is not drained", name)
	case on:
		*list = append(*list, name)
		slices.Sort(*list)
	default:
		*list = slices.DeleteFunc(*list, func(s string) bool { return s == name })
	}
	q.Version++
	return q, nil
}

// RequestFailback asks for the range shards (every failed-over range when
// shards is empty) to return to its owner zone as soon as that zone is
// ready, even with failback: manual.
func RequestFailback(p *Placement, shards string) (*Placement, error) {
	q := p.Clone()
	n := 0
	for i := range q.Groups {
		g := &q.Groups[i]
		if g.ID == GlobalGroup || (shards != "" && g.Shards != shards) {
			continue
		}
		if shards == "" && g.ServingZone == g.OwnerZone {
			continue
		}
		g.FailbackRequested = true
		n++
	}
	if n == 0 {
		if shards != "" {
			if _, err := rangeIndex(q, shards); err != nil {
				return nil, err
			}
			return nil, badOp("range %s is already served by its owner zone", shards)
		}
		return nil, badOp("no range is failed over")
	}
	q.Version++
	return q, nil
}

func rangeIndex(p *Placement, shards string) (int, error) {
	lo, hi, err := ParseRange(shards)
	if err != nil {
		return 0, badOp("range %q: want LO-HI such as 00-24", shards)
	}
	for i, r := range p.Topology.Ranges {
		if r.lo == lo && r.hi == hi {
			return i, nil
		}
	}
	return 0, badOp("no range %02d-%02d (ranges are listed by ldcd placement show)", lo, hi)
}

// Split splits the range shards ("00-49") before shard at (25): shards
// at..hi move to a new group, created now; the routing switches when the
// driver has copied them (CompleteSplit).
func Split(p *Placement, shards string, at int) (*Placement, error) {
	q := p.Clone()
	i, err := rangeIndex(q, shards)
	if err != nil {
		return nil, err
	}
	r := q.Topology.Ranges[i]
	if at <= r.lo || at > r.hi {
		return nil, badOp("split point %02d is not inside %s: want %02d to %02d", at, r.Shards, r.lo+1, r.hi)
	}
	src, ok := q.Group(r.GroupID())
	if !ok || len(src.Replicas) == 0 {
		return nil, badOp("range %s has no group yet", r.Shards)
	}
	for _, op := range q.Splits {
		if op.Source == src.ID || op.Target == src.ID {
			return nil, badOp("range %s is already being split", r.Shards)
		}
	}
	target := fmt.Sprintf("g-%02d-%02d", at, r.hi)
	for n := 2; ; n++ {
		if _, taken := q.Group(target); !taken {
			break
		}
		target = fmt.Sprintf("g-%02d-%02d-%d", at, r.hi, n)
	}
	first := src.Replicas[0].Node
	q.Groups = append(q.Groups, GroupPlacement{
		ID: target, Shards: fmt.Sprintf("%02d-%02d", at, r.hi), OwnerZone: src.OwnerZone,
		Replicas: []Replica{{Node: first, Voter: true}}, Bootstrap: first,
	})
	q.Splits = append(q.Splits, SplitOp{Source: src.ID, Target: target, Shards: fmt.Sprintf("%02d-%02d", at, r.hi)})
	q.Version++
	return q, nil
}

// RecordFence records the version at which the source of split target
// fenced the moving shards.
func RecordFence(p *Placement, target string, fence uint64) (*Placement, error) {
	q := p.Clone()
	for i := range q.Splits {
		if q.Splits[i].Target == target {
			if q.Splits[i].Fence != 0 {
				return nil, badOp("split into %s is already fenced at %d", target, q.Splits[i].Fence)
			}
			q.Splits[i].Fence = fence
			q.Version++
			return q, nil
		}
	}
	return nil, badOp("no split into %s in flight", target)
}

// CompleteSplit switches the routing of a fenced and copied split: the
// source range becomes two, the moving shards route to the target group,
// and the routing epoch increases.
func CompleteSplit(p *Placement, target string) (*Placement, error) {
	q := p.Clone()
	k := -1
	for i, op := range q.Splits {
		if op.Target == target {
			k = i
		}
	}
	if k < 0 {
		return nil, badOp("no split into %s in flight", target)
	}
	op := q.Splits[k]
	if op.Fence == 0 {
		return nil, badOp("split into %s is not fenced yet", target)
	}
	at, hi, err := ParseRange(op.Shards)
	if err != nil {
		return nil, err
	}
	i := -1
	for j, r := range q.Topology.Ranges {
		if r.GroupID() == op.Source {
			i = j
		}
	}
	if i < 0 {
		return nil, badOp("source group %s serves no range", op.Source)
	}
	r := q.Topology.Ranges[i]
	lower := r
	lower.Shards = fmt.Sprintf("%02d-%02d", r.lo, at-1)
	lower.Group = op.Source
	upper := r
	upper.Shards = fmt.Sprintf("%02d-%02d", at, hi)
	upper.Group = ""
	if target != fmt.Sprintf("g-%02d-%02d", at, hi) {
		upper.Group = target // the derived name was taken
	}
	q.Topology.Ranges = append(q.Topology.Ranges[:i:i], append([]Range{lower, upper}, q.Topology.Ranges[i+1:]...)...)
	if err := q.Topology.Validate(); err != nil {
		return nil, err
	}
	src, _ := q.Group(op.Source)
	src.Shards = lower.Shards
	q.Epoch++
	src.Epoch = q.Epoch
	tgt, ok := q.Group(target)
	if !ok {
		return nil, badOp("target group %s is gone", target)
	}
	tgt.Shards = upper.Shards
	tgt.Epoch = q.Epoch
	q.Splits = append(q.Splits[:k:k], q.Splits[k+1:]...)
	q.Version++
	return q, nil
}

// Recovered records that group id was rebuilt from nodes (ldcd recover): its
// replicas become exactly those nodes, as voters, so that the planner adds
// the rest on live nodes instead of waiting for the lost voters. A leader
// preference for a node no longer listed is dropped.
func Recovered(p *Placement, id string, nodes []string) (*Placement, error) {
	if len(nodes) == 0 {
		return nil, badOp("recovered group %s needs at least one node", id)
	}
	q := p.Clone()
	g, ok := q.Group(id)
	if !ok {
		return nil, badOp("no group %q", id)
	}
	g.Replicas = nil
	for _, n := range nodes {
		if _, dup := g.Replica(n); dup {
			return nil, badOp("node %s named twice", n)
		}
		g.Replicas = append(g.Replicas, Replica{Node: n, Voter: true})
	}
	if g.Leader != "" && !slices.Contains(nodes, g.Leader) {
		g.Leader = ""
	}
	q.Version++
	return q, nil
}
