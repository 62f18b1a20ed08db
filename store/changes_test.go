package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestChangeLog(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{ChangeLogCount: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := time.Unix(1_700_000_000, 0)
	apply := func(i uint64, c *Command) {
		l := logOf(i, c)
		l.AppendedAt = at.Add(time.Duration(i) * time.Second)
		s.Apply(l)
	}
	apply(1, put("a", "1"))
	apply(2, casVersion("a", "x", 99)) // fails: no change, no record
	apply(3, &Command{Then: []Op{{Type: OpPut, Key: []byte("b"), Value: []byte("2")}, {Type: OpDelete, Key: []byte("a")}}})
	apply(4, &Command{Then: []Op{{Type: OpDelete, Key: []byte("zz")}}}) // deletes nothing
	recs, applied, err := s.Changes(1, 100)
	if err != nil || applied != 4 {
		t.Fatal(err, applied)
	}
	if len(recs) != 2 || recs[0].Index != 1 || recs[1].Index != 3 {
		t.Fatalf("records %+v, want indexes 1 and 3", recs)
	}
	if c := recs[1].Changes; len(c) != 2 || c[0].Op != ChangePut || string(c[0].Value) != "2" || c[1].Op != ChangeDelete || c[1].Version != 1 {
		t.Fatalf("changes of 3: %+v", c)
	}
	if !recs[1].Time.Equal(at.Add(3 * time.Second)) {
		t.Fatalf("record time %v, want the leader's append time", recs[1].Time)
	}
	// Resuming after the last index seen gives the rest exactly once.
	if recs, _, _ := s.Changes(2, 100); len(recs) != 1 || recs[0].Index != 3 {
		t.Fatalf("from 2: %+v", recs)
	}
	// Beyond the window, the oldest go, and reading from them says so.
	for i := uint64(5); i <= 12; i++ {
		apply(i, put("k", "v"))
	}
	_, _, err = s.Changes(1, 100)
	var ce *CompactedError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCompacted) {
		t.Fatalf("reading pruned changes: %v", err)
	}
	recs, _, err = s.Changes(ce.Oldest, 100)
	if err != nil || len(recs) == 0 || len(recs) > 5 || recs[len(recs)-1].Index != 12 {
		t.Fatalf("from oldest %d: %d records, %v", ce.Oldest, len(recs), err)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Index != recs[i-1].Index+1 {
			t.Fatalf("gap in kept records: %d then %d", recs[i-1].Index, recs[i].Index)
		}
	}
	// A snapshot reports the index it is consistent with.
	var snapIdx uint64
	n := 0
	err = s.SnapshotKV(nil, func(a uint64) error { snapIdx = a; return nil }, func(KV) error { n++; return nil })
	if err != nil || snapIdx != 12 || n != 2 {
		t.Fatalf("snapshot at %d with %d keys, %v", snapIdx, n, err)
	}
}

func TestChangeLogSkipsReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, _ := Open(path, Options{})
	s.Apply(logOf(1, put("a", "1")))
	s.Close()
	s, _ = Open(path, Options{})
	defer s.Close()
	s.ApplyBatch([]*raft.Log{logOf(1, put("a", "1")), logOf(2, put("a", "2"))})
	recs, _, _ := s.Changes(1, 10)
	if len(recs) != 2 || recs[0].Index != 1 || recs[1].Index != 2 {
		t.Fatalf("a replayed entry was logged twice or lost: %+v", recs)
	}
}

func TestApplyRecordAndLoadSnapshot(t *testing.T) {
	src := openTest(t)
	src.Apply(logOf(3, put(string(GlobalKey([]byte("a"))), "1")))
	src.Apply(logOf(5, put(string(GlobalKey([]byte("b"))), "2")))
	src.Apply(logOf(8, &Command{Then: []Op{{Type: OpDelete, Key: GlobalKey([]byte("a"))}}}))
	recs, _, _ := src.Changes(1, 100)

	cp := openTest(t)
	for _, r := range recs {
		if err := cp.ApplyRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	cp.ApplyRecord(recs[0]) // a repeat after a resume is skipped
	i1, d1 := digest(t, src)
	i2, d2 := digest(t, cp)
	if i1 != i2 || string(d1) != string(d2) {
		t.Fatalf("copy differs: index %d vs %d", i1, i2)
	}
	// The copy feeds a further copy (cascading).
	crecs, _, _ := cp.Changes(1, 100)
	if len(crecs) != 3 || crecs[2].Index != 8 {
		t.Fatalf("copy's own feed: %+v", crecs)
	}
	// A snapshot load replaces everything; the feed restarts after it.
	var kvs []KV
	src.SnapshotKV(nil, func(uint64) error { return nil }, func(kv KV) error {
		kvs = append(kvs, KV{Key: append([]byte(nil), kv.Key...), Value: append([]byte(nil), kv.Value...), Version: kv.Version})
		return nil
	})
	fresh := openTest(t)
	fresh.ApplyRecord(ChangeRecord{Index: 1, Changes: []Change{{Op: ChangePut, Key: []byte("gstale"), Value: []byte("x"), Version: 1}}})
	i := 0
	if err := fresh.LoadSnapshot(8, func() (KV, bool, error) {
		if i == len(kvs) {
			return KV{}, false, nil
		}
		i++
		return kvs[i-1], true, nil
	}); err != nil {
		t.Fatal(err)
	}
	i3, d3 := digest(t, fresh)
	if i3 != 8 || string(d3) != string(d1) {
		t.Fatalf("after snapshot load: index %d, same=%v", i3, string(d3) == string(d1))
	}
	if _, _, err := fresh.Changes(8, 10); !errors.Is(err, ErrCompacted) {
		t.Fatalf("feed of a snapshot-loaded store from its index: %v", err)
	}
	if _, _, err := fresh.Changes(9, 10); err != nil {
		t.Fatalf("feed after the snapshot index: %v", err)
	}
}

func TestChangeLogAge(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{ChangeLogAge: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := logOf(1, put("a", "1"))
	old.AppendedAt = time.Now().Add(-time.Hour)
	s.Apply(old)
	fresh := logOf(2, put("b", "2"))
	fresh.AppendedAt = time.Now()
	s.Apply(fresh)
	if _, _, err := s.Changes(1, 10); !errors.Is(err, ErrCompacted) {
		t.Fatalf("an hour-old record with a one-minute window: %v", err)
	}
	if recs, _, err := s.Changes(2, 10); err != nil || len(recs) != 1 {
		t.Fatalf("a fresh record: %v %v", recs, err)
	}
}
