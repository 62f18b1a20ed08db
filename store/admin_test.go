package store

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
)

func adminLog(index uint64, a *Admin) *raft.Log {
	return &raft.Log{Index: index, Type: raft.LogCommand, Data: a.Encode()}
}

func TestFenceRefusesMovedShards(t *testing.T) {
	s := openTest(t)
	k5, k7 := UserKey(105, []byte("a")), UserKey(207, []byte("a")) // shards 05, 07
	s.Apply(logOf(1, put(string(k5), "x")))
	s.Apply(logOf(2, put(string(k7), "y")))
	s.Apply(adminLog(3, &Admin{Kind: AdminFence, Shards: []int{7}}))
	if !s.Fenced(7) || s.Fenced(5) {
		t.Fatal("fence state wrong")
	}
	resp := s.ApplyBatch([]*raft.Log{
		logOf(4, put(string(k7), "z")),
		logOf(5, &Command{Compares: []Compare{{Key: k7, Target: TargetVersion, Op: CmpEqual}}, Then: []Op{{Type: OpPut, Key: k5, Value: []byte("w")}}}),
		logOf(6, put(string(k5), "ok")),
	})
	for i := 0; i < 2; i++ {
		if err, _ := resp[i].(error); !errors.Is(err, ErrMoved) {
			t.Fatalf("command %d on a fenced shard: %v, want ErrMoved", i, resp[i])
		}
	}
	if r := mustResult(t, resp[2]); !r.Succeeded {
		t.Fatal("write to an unfenced shard failed")
	}
	// The fence survives a restart.
	path := s.path
	s.Close()
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if !s2.Fenced(7) {
		t.Fatal("fence lost on reopen")
	}
	// Purge removes the fenced shard's keys only.
	s2.Apply(adminLog(7, &Admin{Kind: AdminPurge, Shards: []int{7}}))
	if _, ok, _ := s2.Get(k7); ok {
		t.Fatal("purge kept a key of the purged shard")
	}
	if kv, ok, _ := s2.Get(k5); !ok || string(kv.Value) != "ok" {
		t.Fatal("purge removed a key of another shard")
	}
}

func TestIngestKeepsVersionsAndRaisesBase(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := UserKey(307, []byte("k"))
	r := mustResult(t, s.Apply(adminLog(1, &Admin{Kind: AdminIngest, Base: 5000, KVs: []KV{{Key: k, Value: []byte("v"), Version: 4321}}})))
	if r.Index != 5001 {
		t.Fatalf("ingest index %d, want 5001", r.Index)
	}
	kv, ok, _ := s.Get(k)
	if !ok || kv.Version != 4321 || string(kv.Value) != "v" {
		t.Fatalf("ingested %+v %v, want v@4321", kv, ok)
	}
	// A second ingest does not move the base.
	s.Apply(adminLog(2, &Admin{Kind: AdminIngest, Base: 1, KVs: []KV{{Key: UserKey(407, []byte("k")), Value: []byte("w"), Version: 10}}}))
	// New writes get versions above every ingested one; CAS with the
	// ingested version works.
	r = mustResult(t, s.Apply(logOf(3, casVersion(string(k), "v2", 4321))))
	if !r.Succeeded || r.Index != 5003 || r.Ops[0].Version != 5003 {
		t.Fatalf("cas after ingest: %+v", r)
	}
	if s.VersionBase() != 5000 {
		t.Fatalf("base %d, want 5000", s.VersionBase())
	}
}

func TestAdminRoundTrip(t *testing.T) {
	a := &Admin{Kind: AdminIngest, Base: 9, Shards: []int{1, 99}, KVs: []KV{{Key: []byte("k"), Value: []byte("v"), Version: 3}}}
	got, err := DecodeAdmin(a.Encode())
	if err != nil || !reflect.DeepEqual(got, a) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range [][]byte{{2}, {2, 9, 0, 0, 0}, {2, 1, 0, 1, 100, 0}, {2, 2, 0, 0, 1, 0, 0, 0}} {
		if _, err := DecodeAdmin(bad); err == nil {
			t.Errorf("DecodeAdmin(%v) accepted", bad)
		}
	}
}

func FuzzDecodeAdmin(f *testing.F) {
	f.Add((&Admin{Kind: AdminFence, Shards: []int{3}}).Encode())
	f.Add((&Admin{Kind: AdminIngest, Base: 7, KVs: []KV{{Key: []byte("k"), Value: []byte("v"), Version: 1}}}).Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAdmin(b)
		if err != nil {
			return
		}
		if _, err := DecodeAdmin(a.Encode()); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
