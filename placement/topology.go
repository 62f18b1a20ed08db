package placement

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// NumShards is the number of userId shards: the last two digits of a uid.
const NumShards = 100

// Zone kinds.
const (
	KindRZone = "rzone" // owns shard ranges and serves their users
	KindGZone = "gzone" // hosts the global group's leader
	KindCZone = "czone" // holds a read-only copy of global data; no voters
)

// Failback modes of a range.
const (
	FailbackAuto   = "auto"
	FailbackManual = "manual"
)

// ErrBadTopology wraps every topology validation error.
var ErrBadTopology = errors.New("placement: bad topology")

// Zone is a failure domain inside a city.
type Zone struct {
	Name string `yaml:"name" json:"name"`
	City string `yaml:"city" json:"city"`
	Kind string `yaml:"kind" json:"kind"`
}

// Range is a contiguous run of shards owned by one RZone and replicated by
// one Raft group.
type Range struct {
	// Shards is the range as written, e.g. "00-24".
	Shards string `yaml:"shards" json:"shards"`
	// Owner is the RZone that owns the range.
	Owner string `yaml:"owner" json:"owner"`
	// Failover lists, in order of preference, the zones that take over the
	// range when its owner is lost.
	Failover []string `yaml:"failover,omitempty" json:"failover,omitempty"`
	// Failback is "auto" (the default: leadership returns to the owner zone
	// once its replica has caught up) or "manual" (it stays in the zone that
	// took over until an operator moves it back).
	Failback string `yaml:"failback,omitempty" json:"failback,omitempty"`
	// Group is the id of the group that replicates the range when it is not
	// g-LO-HI: a range that kept its group through a split.
	Group string `yaml:"-" json:"group,omitempty"`

	lo, hi int
}

// Lo returns the first shard of the range.
func (r Range) Lo() int { return r.lo }

// Hi returns the last shard of the range.
func (r Range) Hi() int { return r.hi }

// GroupID returns the id of the Raft group that replicates the range.
func (r Range) GroupID() string {
	if r.Group != "" {
		return r.Group
	}
	return fmt.Sprintf("g-%02d-%02d", r.lo, r.hi)
}

// Topology is the shape of an LDC: its zones, the shard ranges and their
// owners, and the replication factor.
type Topology struct {
	Zones    []Zone  `yaml:"zones" json:"zones"`
	Ranges   []Range `yaml:"ranges" json:"ranges"`
	Replicas int     `yaml:"replicas" json:"replicas"`
}

// DefaultReplicas is the replication factor when a topology file names none.
const DefaultReplicas = 3

// DefaultTopology is the topology of a cluster started without a file: one
// RZone (zone, in city) owns all 100 shards in 10 ranges of 10.
func DefaultTopology(zone, city string) *Topology {
	t := &Topology{Zones: []Zone{{Name: zone, City: city, Kind: KindRZone}}, Replicas: DefaultReplicas}
	for lo := 0; lo < NumShards; lo += 10 {
		t.Ranges = append(t.Ranges, Range{Shards: fmt.Sprintf("%02d-%02d", lo, lo+9), Owner: zone})
	}
	if err := t.Validate(); err != nil {
		panic(err) // unreachable: the default is valid by construction
	}
	return t
}

// ParseTopology parses and validates a YAML topology. Unknown fields are
// errors, so a typo does not silently change the shape of the cluster.
func ParseTopology(b []byte) (*Topology, error) {
	var raw struct {
		Zones    []Zone  `yaml:"zones"`
		Ranges   []Range `yaml:"ranges"`
		Replicas *int    `yaml:"replicas"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTopology, err)
	}
	t := &Topology{Zones: raw.Zones, Ranges: raw.Ranges, Replicas: DefaultReplicas}
	if raw.Replicas != nil {
		t.Replicas = *raw.Replicas
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadTopology, fmt.Sprintf(format, args...))
}

// parseShards parses "LO-HI" (or a single "N") into shard numbers.
func parseShards(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		b = a
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil {
		return 0, 0, bad("shards %q: want LO-HI with numbers 00-99", s)
	}
	if lo < 0 || hi >= NumShards || lo > hi {
		return 0, 0, bad("shards %q: want 0 <= LO <= HI <= 99", s)
	}
	return lo, hi, nil
}

// Validate checks t and fills in each range's bounds. Errors name the
// problem: overlapping or missing shards, an unknown or wrong-kind owner,
// replicas < 1, and so on.
func (t *Topology) Validate() error {
	if len(t.Zones) == 0 {
		return bad("no zones")
	}
	zones := map[string]Zone{}
	gzones := 0
	for i, z := range t.Zones {
		switch {
		case z.Name == "":
			return bad("zone %d has no name", i)
		case z.City == "":
			return bad("zone %s has no city", z.Name)
		case z.Kind != KindRZone && z.Kind != KindGZone && z.Kind != KindCZone:
			return bad("zone %s has kind %q, want rzone, gzone or czone", z.Name, z.Kind)
		}
		if _, dup := zones[z.Name]; dup {
			return bad("zone %s is listed twice", z.Name)
		}
		if z.Kind == KindGZone {
			gzones++
		}
		zones[z.Name] = z
	}
	if gzones > 1 {
		return bad("%d gzones, at most one is allowed", gzones)
	}
	if t.Replicas < 1 {
		return bad("replicas is %d, must be at least 1", t.Replicas)
	}
	if len(t.Ranges) == 0 {
		return bad("no ranges")
	}
	var owner [NumShards]string
	for i := range t.Ranges {
		r := &t.Ranges[i]
		lo, hi, err := parseShards(r.Shards)
		if err != nil {
			return err
		}
		r.lo, r.hi = lo, hi
		r.Shards = fmt.Sprintf("%02d-%02d", lo, hi)
		z, ok := zones[r.Owner]
		switch {
		case r.Owner == "":
			return bad("range %s has no owner", r.Shards)
		case !ok:
			return bad("range %s: owner zone %q is not in zones", r.Shards, r.Owner)
		case z.Kind == KindCZone:
			return bad("range %s: owner %s is a czone; czones hold no voters and cannot own shards", r.Shards, r.Owner)
		case z.Kind != KindRZone:
			return bad("range %s: owner %s is a %s; only an rzone owns shards", r.Shards, r.Owner, z.Kind)
		}
		switch r.Failback {
		case "", FailbackAuto, FailbackManual:
		default:
			return bad("range %s: failback %q, want auto or manual", r.Shards, r.Failback)
		}
		for _, f := range r.Failover {
			fz, ok := zones[f]
			if !ok {
				return bad("range %s: failover zone %q is not in zones", r.Shards, f)
			}
			if fz.Kind == KindCZone {
				return bad("range %s: failover zone %s is a czone", r.Shards, f)
			}
		}
		for s := lo; s <= hi; s++ {
			if owner[s] != "" {
				return bad("shard %02d is in two ranges (%s and %s)", s, owner[s], r.Shards)
			}
			owner[s] = r.Shards
		}
	}
	var missing []string
	for s := 0; s < NumShards; s++ {
		if owner[s] == "" {
			missing = append(missing, fmt.Sprintf("%02d", s))
		}
	}
	if len(missing) > 0 {
		return bad("shards %s are in no range; every shard 00-99 needs one", compact(missing))
	}
	sort.Slice(t.Ranges, func(i, j int) bool { return t.Ranges[i].lo < t.Ranges[j].lo })
	return nil
}

// compact shortens a long list of shards for an error message.
func compact(s []string) string {
	if len(s) > 10 {
		return strings.Join(s[:10], ",") + fmt.Sprintf(" and %d more", len(s)-10)
	}
	return strings.Join(s, ",")
}

// Zone returns the zone named name.
func (t *Topology) Zone(name string) (Zone, bool) {
	for _, z := range t.Zones {
		if z.Name == name {
			return z, true
		}
	}
	return Zone{}, false
}

// GZone returns the name of the GZone, or "" if the topology has none.
func (t *Topology) GZone() string {
	for _, z := range t.Zones {
		if z.Kind == KindGZone {
			return z.Name
		}
	}
	return ""
}

// Range returns the range replicated by group id.
func (t *Topology) Range(id string) (Range, bool) {
	for _, r := range t.Ranges {
		if r.Group != "" {
			if r.Group == id {
				return r, true
			}
			continue
		}
		// GroupID without formatting: the planner asks for every group
		// each round, and Sprintf per range made that groups² allocations.
		b := [7]byte{'g', '-', byte('0' + r.lo/10), byte('0' + r.lo%10), '-', byte('0' + r.hi/10), byte('0' + r.hi%10)}
		if r.lo >= 0 && r.hi < 100 && string(b[:]) == id {
			return r, true
		}
	}
	return Range{}, false
}

// RangeOf returns the range holding shard.
func (t *Topology) RangeOf(shard int) (Range, bool) {
	for _, r := range t.Ranges {
		if shard >= r.lo && shard <= r.hi {
			return r, true
		}
	}
	return Range{}, false
}
