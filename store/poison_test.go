package store

import (
	"bytes"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// poisonLogs are committed entries no replica can apply as they stand: keys
// bbolt refuses, a version base that would wrap versions past 2^64, an
// ingested version 0 (a present key that CAS would take for absent), and a
// purge of shards that were never fenced. Each follows a good write and is
// followed by one.
func poisonLogs() []*raft.Log {
	huge := bytes.Repeat([]byte("k"), 40000)
	k := UserKey(149, []byte("k")) // shard 49
	return []*raft.Log{
		logOf(1, put(string(k), "before")),
		adminLog(2, &Admin{Kind: AdminIngest, KVs: []KV{{Key: append([]byte{spaceGlobal}, huge...), Value: []byte("v"), Version: 1}}}),
		logOf(3, put(string(huge), "v")),
		logOf(4, &Command{Then: []Op{{Type: OpPut, Key: []byte("ok"), Value: []byte("1")}, {Type: OpPut, Key: huge, Value: []byte("2")}}}),
		{Index: 5, Type: raft.LogCommand, Data: EncodeBatch([][]byte{put("b1", "1").Encode(), put(string(huge), "2").Encode()})},
		adminLog(6, &Admin{Kind: AdminIngest, Base: math.MaxUint64 - 6, KVs: []KV{{Key: UserKey(249, []byte("x")), Value: []byte("v"), Version: 1}}}),
		adminLog(7, &Admin{Kind: AdminIngest, Base: 100, KVs: []KV{{Key: k, Value: []byte("v0"), Version: 0}}}),
		adminLog(8, &Admin{Kind: AdminPurge, Shards: []int{49}}),
		logOf(9, put("after", "v")),
	}
}

// TestPoisonPillRejected: committed entries that cannot apply are refused
// with ErrBadCommand on every replica alike, the applied index moves past
// them, nothing of them is written (not even the good half of a command or
// of a batch entry), and the replicas stay identical. Before the fix the
// first of them panicked the apply ("key too large"), on every restart.
func TestPoisonPillRejected(t *testing.T) {
	var digests []uint64
	for replica := range 2 {
		s := openTest(t)
		var resp []interface{}
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("replica %d: apply panicked: %v", replica, p)
				}
			}()
			resp = s.ApplyBatch(poisonLogs())
		}()
		mustResult(t, resp[0])
		for i := 1; i <= 7; i++ {
			if i == 4 { // a batch entry answers per command
				br, ok := resp[i].(BatchResult)
				if !ok || len(br) != 2 {
					t.Fatalf("batch entry: %T %v", resp[i], resp[i])
				}
				mustResult(t, br[0])
				if err, _ := br[1].(error); !errors.Is(err, ErrBadCommand) {
					t.Fatalf("batch command with a huge key: %v, want ErrBadCommand", br[1])
				}
				continue
			}
			if err, _ := resp[i].(error); !errors.Is(err, ErrBadCommand) {
				t.Errorf("entry %d: %T %v, want ErrBadCommand", i+1, resp[i], resp[i])
			}
		}
		mustResult(t, resp[8])
		if got := s.AppliedIndex(); got != 9 {
			t.Fatalf("applied %d, want 9", got)
		}
		if _, ok, _ := s.Get([]byte("ok")); ok {
			t.Fatal("the good half of a refused command was written")
		}
		if _, ok, _ := s.Get([]byte("b1")); !ok {
			t.Fatal("a good command of a batch entry was lost")
		}
		if kv, ok, _ := s.Get(UserKey(149, []byte("k"))); !ok || string(kv.Value) != "before" || kv.Version != 1 {
			t.Fatalf("key of an unfenced shard after a purge and a version-0 ingest: %+v %v", kv, ok)
		}
		if s.VersionBase() != 0 {
			t.Fatalf("version base %d after a refused ingest", s.VersionBase())
		}
		// CAS create-if-absent still refuses a present key.
		r := mustResult(t, s.Apply(logOf(10, casVersion(string(UserKey(149, []byte("k"))), "x", 0))))
		if r.Succeeded {
			t.Fatal("cas=0 succeeded on a present key")
		}
		d, err := s.Digest(&strings.Builder{})
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
		// A restart replays nothing and applies on.
		path := s.path
		s.Close()
		s2, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := s2.AppliedIndex(); got != 10 {
			t.Fatalf("applied after restart %d, want 10", got)
		}
		s2.Close()
	}
	if digests[0] != digests[1] {
		t.Fatalf("replicas differ: %x %x", digests[0], digests[1])
	}
}

func TestAdminValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		a    Admin
		ok   bool
	}{
		{"fence", Admin{Kind: AdminFence, Shards: []int{0, 99}}, true},
		{"fence shard 305", Admin{Kind: AdminFence, Shards: []int{305}}, false},
		{"fence shard -1", Admin{Kind: AdminFence, Shards: []int{-1}}, false},
		{"fence nothing", Admin{Kind: AdminFence}, false},
		{"purge shard 100", Admin{Kind: AdminPurge, Shards: []int{100}}, false},
		{"ingest", Admin{Kind: AdminIngest, Base: 10, KVs: []KV{{Key: []byte("k"), Version: 3}}}, true},
		{"ingest base near 2^64", Admin{Kind: AdminIngest, Base: math.MaxUint64 - 10, KVs: []KV{{Key: []byte("k"), Version: 3}}}, false},
		{"ingest version 0", Admin{Kind: AdminIngest, Base: 10, KVs: []KV{{Key: []byte("k")}}}, false},
		{"ingest version near 2^64", Admin{Kind: AdminIngest, KVs: []KV{{Key: []byte("k"), Version: math.MaxUint64}}}, false},
		{"ingest empty key", Admin{Kind: AdminIngest, KVs: []KV{{Version: 1}}}, false},
		{"ingest huge key", Admin{Kind: AdminIngest, KVs: []KV{{Key: make([]byte, bolt.MaxKeySize+1), Version: 1}}}, false},
		{"unknown kind", Admin{Kind: 9}, false},
	} {
		if err := c.a.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

// FuzzApply: any bytes committed as a command entry apply without a panic
// (a panic would be a poison pill: every replica, on every restart), and
// the applied index moves past them.
func FuzzApply(f *testing.F) {
	// Without fsync: what is checked is the apply, not the disk.
	s, err := Open(filepath.Join(f.TempDir(), "state.db"), Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	for _, l := range poisonLogs() {
		f.Add(l.Data)
	}
	f.Add((&Admin{Kind: AdminFence, Shards: []int{49}}).Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		index := s.AppliedIndex() + 1
		resp := s.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: data}})
		switch resp[0].(type) {
		case *Result, BatchResult, error:
		default:
			t.Fatalf("response %T", resp[0])
		}
		if got := s.AppliedIndex(); got != index {
			t.Fatalf("applied %d, want %d", got, index)
		}
	})
}
