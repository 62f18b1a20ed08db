package placement

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
)

// Replica is one desired member of a group.
type Replica struct {
	Node  string `json:"node"`
	Voter bool   `json:"voter"`
}

// GroupPlacement is the desired shape of one group.
type GroupPlacement struct {
	ID string `json:"id"`
	// Shards is the shard range ("00-24"); empty for the global group.
	Shards string `json:"shards,omitempty"`
	// OwnerZone is the zone that owns the range (for the global group, the
	// GZone if the topology has one).
	OwnerZone string `json:"owner_zone,omitempty"`
	// Replicas lists the nodes that should host the group.
	Replicas []Replica `json:"replicas"`
	// ServingZone is the zone whose replica should lead and serve the
	// group: the owner zone while it is healthy; after a failover, the zone
	// that took over, until failback.
	ServingZone string `json:"serving_zone,omitempty"`
	// Epoch is the routing epoch at which the group's owner or serving zone
	// last changed.
	Epoch uint64 `json:"epoch"`
	// FailbackRequested asks the planner to return a range with manual
	// failback to its owner zone once that zone is ready (set by the
	// operator's failback command; cleared when done).
	FailbackRequested bool `json:"failback_requested,omitempty"`
	// Leader names the node whose replica should lead, chosen by the
	// planner to spread leaders evenly over the serving zone's nodes; empty:
	// any node of the serving zone. It is only a preference: while that
	// node is down, drained, lagging or out of the serving zone, another
	// leads.
	Leader string `json:"leader,omitempty"`
	// Bootstrap names the node that creates the group's first configuration.
	// Only that node, and only while it is the group's sole replica, may
	// bootstrap it.
	Bootstrap string `json:"bootstrap,omitempty"`
}

// Replica returns the desired replica on node.
func (g *GroupPlacement) Replica(node string) (Replica, bool) {
	for _, r := range g.Replicas {
		if r.Node == node {
			return r, true
		}
	}
	return Replica{}, false
}

// Voters returns the nodes that should be voters.
func (g *GroupPlacement) Voters() []string {
	var out []string
	for _, r := range g.Replicas {
		if r.Voter {
			out = append(out, r.Node)
		}
	}
	return out
}

// Placement is the desired state of the cluster, stored in the global group
// and followed by every node's agent. Version increases with every change.
type Placement struct {
	Version uint64 `json:"version"`
	// Epoch is the routing epoch: it increases with every change of a
	// range's owner or serving zone.
	Epoch    uint64           `json:"epoch"`
	Topology *Topology        `json:"topology"`
	Groups   []GroupPlacement `json:"groups"`
	// DrainedNodes and DrainedZones hold no replicas and no leaders: the
	// planner moves what they host elsewhere.
	DrainedNodes []string `json:"drained_nodes,omitempty"`
	DrainedZones []string `json:"drained_zones,omitempty"`
	// Splits are the range splits in flight.
	Splits []SplitOp `json:"splits,omitempty"`
}

// SplitOp is a split in flight: the shards Shards of group Source move to
// the new group Target. Its steps: the target group is created and grows
// like any group; the source fences the shards (Fence records the index);
// their keys are copied; then CompleteSplit switches the routing.
type SplitOp struct {
	Source string `json:"source"`
	Target string `json:"target"`
	Shards string `json:"shards"`
	// Fence is the version at which the source stopped serving the shards;
	// 0 until fenced. The target's versions start above it.
	Fence uint64 `json:"fence,omitempty"`
}

// Drained reports whether node, in zone, is drained.
func (p *Placement) Drained(node, zone string) bool {
	for _, n := range p.DrainedNodes {
		if n == node {
			return true
		}
	}
	for _, z := range p.DrainedZones {
		if z == zone {
			return true
		}
	}
	return false
}

// Group returns the placement of group id.
func (p *Placement) Group(id string) (*GroupPlacement, bool) {
	for i := range p.Groups {
		if p.Groups[i].ID == id {
			return &p.Groups[i], true
		}
	}
	return nil, false
}

// GroupForShard returns the group that serves shard.
func (p *Placement) GroupForShard(shard int) (*GroupPlacement, bool) {
	r, ok := p.Topology.RangeOf(shard)
	if !ok {
		return nil, false
	}
	return p.Group(r.GroupID())
}

// Clone returns a deep copy of p.
//
// It copies field by field: the planner clones the placement every round,
// and a JSON round trip was a tenth of an idle PD leader's CPU.
// TestCloneSharesNothing fails when a new field is shared.
func (p *Placement) Clone() *Placement {
	q := *p
	if p.Topology != nil {
		t := *p.Topology
		t.Zones = slices.Clone(t.Zones)
		t.Ranges = slices.Clone(t.Ranges)
		for i := range t.Ranges {
			t.Ranges[i].Failover = slices.Clone(t.Ranges[i].Failover)
		}
		q.Topology = &t
	}
	q.Groups = slices.Clone(p.Groups)
	for i := range q.Groups {
		q.Groups[i].Replicas = slices.Clone(q.Groups[i].Replicas)
	}
	q.DrainedNodes = slices.Clone(p.DrainedNodes)
	q.DrainedZones = slices.Clone(p.DrainedZones)
	q.Splits = slices.Clone(p.Splits)
	return &q
}

// Encode returns the stored form of p.
func (p *Placement) Encode() []byte {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return b
}

// Decode parses a stored placement and validates its topology.
func Decode(b []byte) (*Placement, error) {
	var p Placement
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("placement: decode: %w", err)
	}
	if p.Topology == nil {
		return nil, fmt.Errorf("placement: decode: no topology")
	}
	if err := p.Topology.Validate(); err != nil {
		return nil, err
	}
	sort.Slice(p.Groups, func(i, j int) bool { return groupLess(p.Groups[i].ID, p.Groups[j].ID) })
	return &p, nil
}

// groupLess orders the global group first, then data groups by id.
func groupLess(a, b string) bool {
	if a == GlobalGroup || b == GlobalGroup {
		return a == GlobalGroup && b != GlobalGroup
	}
	return a < b
}
