package placement

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const example = `
zones:
  - {name: gz,    city: hz, kind: gzone}
  - {name: rz0,   city: hz, kind: rzone}
  - {name: rz1,   city: hz, kind: rzone}
  - {name: rz2,   city: sh, kind: rzone}
  - {name: cz-sh, city: sh, kind: czone}
ranges:
  - {shards: 00-24, owner: rz0}
  - {shards: 25-49, owner: rz0}
  - {shards: 50-74, owner: rz1}
  - {shards: 75-99, owner: rz2}
replicas: 3
`

func TestParseTopologyExample(t *testing.T) {
	topo, err := ParseTopology([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(topo.Ranges), 4; got != want {
		t.Fatalf("ranges %d, want %d", got, want)
	}
	tests := []struct {
		shard int
		group string
		owner string
	}{{0, "g-00-24", "rz0"}, {24, "g-00-24", "rz0"}, {25, "g-25-49", "rz0"}, {74, "g-50-74", "rz1"}, {99, "g-75-99", "rz2"}}
	for _, tt := range tests {
		r, ok := topo.RangeOf(tt.shard)
		if !ok || r.GroupID() != tt.group || r.Owner != tt.owner {
			t.Errorf("shard %d: got %s owned by %s, want %s owned by %s", tt.shard, r.GroupID(), r.Owner, tt.group, tt.owner)
		}
	}
	if topo.GZone() != "gz" {
		t.Errorf("gzone %q, want gz", topo.GZone())
	}
}

func TestDefaultTopology(t *testing.T) {
	topo := DefaultTopology("z1", "c1")
	if len(topo.Ranges) != 10 || topo.Ranges[3].GroupID() != "g-30-39" || topo.Replicas != 3 {
		t.Fatalf("default topology: %+v", topo)
	}
}

func TestTopologyRejects(t *testing.T) {
	zones := "zones:\n  - {name: rz0, city: hz, kind: rzone}\n  - {name: cz, city: sh, kind: czone}\n  - {name: gz, city: hz, kind: gzone}\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"overlap", zones + "ranges:\n  - {shards: 00-50, owner: rz0}\n  - {shards: 50-99, owner: rz0}\n", "shard 50 is in two ranges"},
		{"missing", zones + "ranges:\n  - {shards: 00-49, owner: rz0}\n  - {shards: 60-99, owner: rz0}\n", "shards 50,51,52"},
		{"unknown owner", zones + "ranges:\n  - {shards: 00-99, owner: nope}\n", `owner zone "nope" is not in zones`},
		{"czone owner", zones + "ranges:\n  - {shards: 00-99, owner: cz}\n", "is a czone"},
		{"gzone owner", zones + "ranges:\n  - {shards: 00-99, owner: gz}\n", "only an rzone owns shards"},
		{"replicas zero", zones + "ranges:\n  - {shards: 00-99, owner: rz0}\nreplicas: 0\n", "replicas is 0"},
		{"replicas negative", zones + "ranges:\n  - {shards: 00-99, owner: rz0}\nreplicas: -2\n", "replicas is -2"},
		{"bad shards", zones + "ranges:\n  - {shards: 00-100, owner: rz0}\n", "want 0 <= LO <= HI <= 99"},
		{"reversed shards", zones + "ranges:\n  - {shards: 50-10, owner: rz0}\n", "want 0 <= LO <= HI <= 99"},
		{"junk shards", zones + "ranges:\n  - {shards: ab-cd, owner: rz0}\n", "want LO-HI"},
		{"bad kind", "zones:\n  - {name: a, city: x, kind: qzone}\nranges:\n  - {shards: 00-99, owner: a}\n", `kind "qzone"`},
		{"dup zone", "zones:\n  - {name: a, city: x, kind: rzone}\n  - {name: a, city: y, kind: rzone}\nranges:\n  - {shards: 00-99, owner: a}\n", "listed twice"},
		{"unknown field", zones + "rangez: []\n", "field rangez not found"},
		{"no zones", "ranges:\n  - {shards: 00-99, owner: a}\n", "no zones"},
		{"failover unknown", zones + "ranges:\n  - {shards: 00-99, owner: rz0, failover: [zz]}\n", `failover zone "zz"`},
		{"not yaml", "{{{", "bad topology"},
	}
	for _, tt := range tests {
		_, err := ParseTopology([]byte(tt.yaml))
		if err == nil || !errors.Is(err, ErrBadTopology) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an ErrBadTopology containing %q", tt.name, err, tt.want)
		}
	}
}

func TestParseUID(t *testing.T) {
	tests := []struct {
		in    string
		want  uint64
		shard int
		ok    bool
	}{
		{"0", 0, 0, true}, {"42", 42, 42, true}, {"12345", 12345, 45, true},
		{"9223372036854775807", 1<<63 - 1, 7, true},
		{"9223372036854775808", 0, 0, false}, {"18446744073709551616", 0, 0, false},
		{"-1", 0, 0, false}, {"+1", 0, 0, false}, {"abc", 0, 0, false}, {"", 0, 0, false}, {"1e3", 0, 0, false}, {" 1", 0, 0, false},
	}
	for _, tt := range tests {
		got, err := ParseUID(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseUID(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
			continue
		}
		if tt.ok && Shard(got) != tt.shard {
			t.Errorf("Shard(%d) = %d, want %d", got, Shard(got), tt.shard)
		}
		if !tt.ok && !errors.Is(err, ErrBadUID) {
			t.Errorf("ParseUID(%q) error %v is not ErrBadUID", tt.in, err)
		}
	}
}

func FuzzParseTopology(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("zones: [{name: a, city: b, kind: rzone}]\nranges: [{shards: 00-99, owner: a}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		topo, err := ParseTopology(b)
		if err != nil {
			return
		}
		for s := 0; s < NumShards; s++ {
			if _, ok := topo.RangeOf(s); !ok {
				t.Fatalf("valid topology leaves shard %d without a range", s)
			}
		}
	})
}

// singleShardRanges returns a topology of zone z in city c, in YAML, with a
// range for each of the first n shards; the caller adds the ranges of the
// others.
func singleShardRanges(z, c string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "zones:\n  - {name: %s, city: %s, kind: rzone}\nranges:\n", z, c)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {shards: %02d-%02d, owner: %s}\n", i, i, z)
	}
	return b.String()
}

func TestTopologyRangeByGroupID(t *testing.T) {
	topo, err := ParseTopology([]byte(singleShardRanges("z1", "c1", 98) + "  - {shards: 98-99, owner: z1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	topo.Ranges[98].Group = "orders" // a range that kept its group through a split
	for _, r := range topo.Ranges {
		got, ok := topo.Range(r.GroupID())
		if !ok || got.Shards != r.Shards {
			t.Fatalf("Range(%q) = %+v, %v; want the range %s", r.GroupID(), got, ok, r.Shards)
		}
	}
	for _, id := range []string{"g-98-99", "g-00-01", "g-0-0", "global", "", "g-00-00x"} {
		if r, ok := topo.Range(id); ok {
			t.Errorf("Range(%q) found %+v", id, r)
		}
	}
}
