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
