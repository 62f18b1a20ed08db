package placement

import (
	"reflect"
	"testing"
)

// TestCloneSharesNothing fills every field of a placement, clones it, and
// checks that the clone equals the original and shares no slice, map or
// pointer with it (a field added to Placement and missed by Clone fails
// here).
func TestCloneSharesNothing(t *testing.T) {
	topo := DefaultTopology("z1", "c1")
	topo.Zones = append(topo.Zones, Zone{Name: "z2", City: "c2", Kind: KindRZone})
	topo.Ranges[0].Failover = []string{"z2"}
	topo.Ranges[0].Failback = FailbackManual
	topo.Ranges[1].Group = "orders"
	p := &Placement{
		Version: 7, Epoch: 3, Topology: topo,
		Groups: []GroupPlacement{{
			ID: "g-00-09", Shards: "00-09", OwnerZone: "z1", ServingZone: "z1", Epoch: 2,
			Replicas: []Replica{{Node: "n1", Voter: true}, {Node: "n2"}}, FailbackRequested: true,
			Bootstrap: "n1", Leader: "n2",
		}},
		DrainedNodes: []string{"n3"}, DrainedZones: []string{"z2"},
		Splits: []SplitOp{{Source: "g-00-09", Target: "g-05-09", Shards: "05-09", Fence: 4}},
	}
	assertFilled(t, reflect.ValueOf(*p), "Placement")
	q := p.Clone()
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("clone differs:\n%+v\n%+v", p, q)
	}
	assertDisjoint(t, reflect.ValueOf(p).Elem(), reflect.ValueOf(q).Elem(), "Placement")
}

// assertFilled fails if an exported field of v (recursively) is zero, so
// that the test's placement keeps exercising every field.
func assertFilled(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			t.Fatalf("%s is nil: fill it in the test", path)
		}
		assertFilled(t, v.Elem(), path)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if f := v.Type().Field(i); f.IsExported() {
				assertFilled(t, v.Field(i), path+"."+f.Name)
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			t.Fatalf("%s is empty: fill it in the test", path)
		}
	default:
		if v.IsZero() && v.Kind() != reflect.Bool {
			t.Fatalf("%s is zero: fill it in the test", path)
		}
	}
}

func assertDisjoint(t *testing.T, a, b reflect.Value, path string) {
	t.Helper()
	switch a.Kind() {
	case reflect.Pointer, reflect.Map:
		if !a.IsNil() && a.Pointer() == b.Pointer() {
			t.Fatalf("%s is shared by the clone", path)
		}
		if a.Kind() == reflect.Pointer && !a.IsNil() {
			assertDisjoint(t, a.Elem(), b.Elem(), path)
		}
	case reflect.Slice:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			t.Fatalf("%s is shared by the clone", path)
		}
		for i := 0; i < a.Len(); i++ {
			assertDisjoint(t, a.Index(i), b.Index(i), path+"[]")
		}
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if a.Type().Field(i).IsExported() {
				assertDisjoint(t, a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name)
			}
		}
	}
}
