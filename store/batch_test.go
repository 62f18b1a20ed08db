package store

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

func batchLog(index uint64, cmds ...[]byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: EncodeBatch(cmds)}
}

// TestBatchEntry: each command of a batch entry applies on its own at the
// entry's index, with its own result, and the entry records one change
// record with every change.
func TestBatchEntry(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.ApplyBatch([]*raft.Log{logOf(1, put("c", "old"))})
	resp := s.ApplyBatch([]*raft.Log{batchLog(2,
		put("a", "1").Encode(),
		[]byte{9, 9, 9}, // not a command: refused alone
		casVersion("c", "new", 7).Encode(),
		put("b", "2").Encode(),
	)})
	br, ok := resp[0].(BatchResult)
	if !ok || len(br) != 4 {
		t.Fatalf("batch answered %#v, want a BatchResult of 4", resp[0])
	}
	for _, i := range []int{0, 3} {
		if r := mustResult(t, br[i]); r.Index != 2 || !r.Succeeded || r.Ops[0].Version != 2 {
			t.Fatalf("command %d: %+v, want applied at 2", i, r)
		}
	}
	if err, ok := br[1].(error); !ok || !errors.Is(err, ErrBadCommand) {
		t.Fatalf("corrupt command answered %#v, want ErrBadCommand", br[1])
	}
	if r := mustResult(t, br[2]); r.Succeeded || string(r.Ops[0].Value) != "old" || r.Ops[0].Version != 1 {
		t.Fatalf("failed compare: %+v, want the else branch reading old@1", r)
	}
	for k, want := range map[string]string{"a": "1", "b": "2", "c": "old"} {
		kv, found, err := s.Get([]byte(k))
		if err != nil || !found || string(kv.Value) != want {
			t.Fatalf("get %s = %q, %v, %v; want %q", k, kv.Value, found, err, want)
		}
	}
	if s.AppliedIndex() != 2 {
		t.Fatalf("applied %d, want 2", s.AppliedIndex())
	}
	recs, _, err := s.Changes(2, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Index != 2 || len(recs[0].Changes) != 2 {
		t.Fatalf("change records %+v, want one at 2 with the puts of a and b", recs)
	}
}

// TestDecodeBatchRefusesBadForms: a batch entry that is empty, too large,
// truncated or followed by more bytes is refused, never half applied.
func TestDecodeBatchRefusesBadForms(t *testing.T) {
	good := EncodeBatch([][]byte{put("a", "1").Encode(), put("b", "2").Encode()})
	if cmds, err := decodeBatch(good); err != nil || len(cmds) != 2 {
		t.Fatalf("decodeBatch(good) = %d commands, %v", len(cmds), err)
	}
	for name, b := range map[string][]byte{
		"empty":       {encodingBatch},
		"no commands": {encodingBatch, 0},
		"too many":    {encodingBatch, 0x81, 0x10}, // 2049
		"truncated":   good[:len(good)-3],
		"trailing":    append(append([]byte{}, good...), 0),
		"not a batch": put("a", "1").Encode(),
	} {
		if _, err := decodeBatch(b); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: decodeBatch = %v, want ErrBadCommand", name, err)
		}
	}
}

// TestChangeLogCountsChanges: the change log's window counts the changes
// its records carry, so records of batch entries do not stretch it.
func TestChangeLogCountsChanges(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{NoSync: true, ChangeLogCount: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := uint64(1); i <= 3; i++ {
		s.ApplyBatch([]*raft.Log{batchLog(i, put("a", "1").Encode(), put("b", "2").Encode(), put("c", "3").Encode())})
	}
	if recs, _, err := s.Changes(1, 10); err == nil {
		t.Fatalf("change log kept %d records from 1, want only the newest (3 changes each, a window of 5)", len(recs))
	}
	recs, _, err := s.Changes(3, 10)
	if err != nil || len(recs) != 1 || len(recs[0].Changes) != 3 {
		t.Fatalf("Changes(3) = %+v, %v; want the newest record", recs, err)
	}
}
