package store

import (
	"bytes"
	"io"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
)

func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func logOf(index uint64, c *Command) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: c.Encode()}
}

func put(k, v string) *Command {
	return &Command{Then: []Op{{Type: OpPut, Key: []byte(k), Value: []byte(v)}}}
}

func casVersion(k, v string, want uint64) *Command {
	return &Command{
		Compares: []Compare{{Key: []byte(k), Target: TargetVersion, Op: CmpEqual, Version: want}},
		Then:     []Op{{Type: OpPut, Key: []byte(k), Value: []byte(v)}},
		Else:     []Op{{Type: OpGet, Key: []byte(k)}},
	}
}

func mustResult(t *testing.T, r interface{}) *Result {
	t.Helper()
	res, ok := r.(*Result)
	if !ok {
		t.Fatalf("response %T %v, want *Result", r, r)
	}
	return res
}

func TestApplySemantics(t *testing.T) {
	s := openTest(t)
	steps := []struct {
		name    string
		cmd     *Command
		wantOK  bool
		wantOps []OpResult
	}{
		{"put new", put("a", "1"), true, []OpResult{{Found: true, Version: 1}}},
		{"put overwrite", put("a", "2"), true, []OpResult{{Found: true, Version: 2}}},
		{"cas right version", casVersion("a", "3", 2), true, []OpResult{{Found: true, Version: 3}}},
		{"cas stale version", casVersion("a", "x", 2), false, []OpResult{{Found: true, Version: 3, Value: []byte("3")}}},
		{"cas create absent", casVersion("b", "b1", 0), true, []OpResult{{Found: true, Version: 5}}},
		{"cas create present", casVersion("b", "b2", 0), false, []OpResult{{Found: true, Version: 5, Value: []byte("b1")}}},
		{"delete present", &Command{Then: []Op{{Type: OpDelete, Key: []byte("b")}}}, true, []OpResult{{Found: true, Version: 5}}},
		{"delete absent", &Command{Then: []Op{{Type: OpDelete, Key: []byte("b")}}}, true, []OpResult{{}}},
		{"txn value compare then", &Command{
			Compares: []Compare{{Key: []byte("a"), Target: TargetValue, Op: CmpEqual, Value: []byte("3")}},
			Then:     []Op{{Type: OpPut, Key: []byte("c"), Value: []byte("c")}, {Type: OpGet, Key: []byte("a")}},
		}, true, []OpResult{{Found: true, Version: 9}, {Found: true, Version: 3, Value: []byte("3")}}},
		{"txn missing key value compare fails", &Command{
			Compares: []Compare{{Key: []byte("zz"), Target: TargetValue, Op: CmpNotEqual, Value: []byte("3")}},
			Then:     []Op{{Type: OpPut, Key: []byte("c"), Value: []byte("no")}},
			Else:     []Op{{Type: OpGet, Key: []byte("zz")}},
		}, false, []OpResult{{}}},
		{"txn version greater", &Command{
			Compares: []Compare{{Key: []byte("a"), Target: TargetVersion, Op: CmpGreater, Version: 2}, {Key: []byte("c"), Target: TargetVersion, Op: CmpLess, Version: 100}},
			Then:     []Op{{Type: OpDelete, Key: []byte("a")}, {Type: OpPut, Key: []byte("d"), Value: nil}},
		}, true, []OpResult{{Found: true, Version: 3}, {Found: true, Version: 11}}},
	}
	for i, st := range steps {
		r := mustResult(t, s.Apply(logOf(uint64(i+1), st.cmd)))
		if r.Succeeded != st.wantOK || r.Index != uint64(i+1) || !reflect.DeepEqual(r.Ops, st.wantOps) {
			t.Errorf("%s: got ok=%v index=%d ops=%+v, want ok=%v index=%d ops=%+v", st.name, r.Succeeded, r.Index, r.Ops, st.wantOK, i+1, st.wantOps)
		}
	}
	if got, want := s.AppliedIndex(), uint64(len(steps)); got != want {
		t.Fatalf("applied index %d, want %d", got, want)
	}
	kvs, more, err := s.Range(nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, string(kv.Key))
	}
	if want := []string{"c", "d"}; !reflect.DeepEqual(keys, want) || more {
		t.Fatalf("keys %v more=%v, want %v", keys, more, want)
	}
}

func TestBadEntryDoesNotStopApply(t *testing.T) {
	s := openTest(t)
	resp := s.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: []byte{0xff, 0x01}},
		{Index: 2, Type: raft.LogConfiguration},
		logOf(3, put("k", "v")),
	})
	if _, ok := resp[0].(error); !ok {
		t.Fatalf("bad entry response %v, want an error", resp[0])
	}
	if r := mustResult(t, resp[2]); r.Index != 3 {
		t.Fatalf("index %d, want 3", r.Index)
	}
	if s.AppliedIndex() != 3 {
		t.Fatalf("applied %d, want 3", s.AppliedIndex())
	}
}

func TestRestartSkipsApplied(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.ApplyBatch([]*raft.Log{logOf(1, put("k", "one")), logOf(2, put("k", "two"))})
	s.Close()

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.AppliedIndex(); got != 2 {
		t.Fatalf("applied after reopen %d, want 2", got)
	}
	// Raft replays entries 1..3 after a restart: only 3 may take effect.
	resp := s.ApplyBatch([]*raft.Log{logOf(1, put("k", "one")), logOf(2, casVersion("k", "bad", 0)), logOf(3, casVersion("k", "three", 2))})
	if resp[0] != nil || resp[1] != nil {
		t.Fatalf("replayed entries answered %v %v, want nil", resp[0], resp[1])
	}
	if r := mustResult(t, resp[2]); !r.Succeeded {
		t.Fatalf("cas after replay failed: %+v", r)
	}
	kv, ok, err := s.Get([]byte("k"))
	if err != nil || !ok || string(kv.Value) != "three" || kv.Version != 3 {
		t.Fatalf("got %+v %v %v, want three@3", kv, ok, err)
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

func digest(t *testing.T, s *Store) (uint64, []byte) {
	t.Helper()
	var b bytes.Buffer
	idx, err := s.Digest(&b)
	if err != nil {
		t.Fatal(err)
	}
	return idx, b.Bytes()
}

func TestSnapshotRestore(t *testing.T) {
	src := openTest(t)
	for i := uint64(1); i <= 50; i++ {
		src.Apply(logOf(i, put(string(rune('a'+i%26)), string(bytes.Repeat([]byte{'x'}, int(i))))))
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the snapshot began must not show up in it.
	done := make(chan struct{})
	go func() { src.Apply(logOf(51, put("late", "v"))); close(done) }()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	<-done

	dst := openTest(t)
	dst.Apply(logOf(1, put("stale", "gone")))
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := dst.AppliedIndex(); got != 50 {
		t.Fatalf("applied after restore %d, want 50", got)
	}
	if _, ok, _ := dst.Get([]byte("late")); ok {
		t.Fatal("snapshot holds a write made after it began")
	}
	if _, ok, _ := dst.Get([]byte("stale")); ok {
		t.Fatal("restore kept data that was not in the snapshot")
	}
	// Apply the same tail to both: they must be identical.
	dst.Apply(logOf(51, put("late", "v")))
	i1, d1 := digest(t, src)
	i2, d2 := digest(t, dst)
	if i1 != i2 || !bytes.Equal(d1, d2) {
		t.Fatalf("replicas differ after restore: index %d vs %d", i1, i2)
	}
}

func TestRangePaging(t *testing.T) {
	s := openTest(t)
	var idx uint64
	for _, uid := range []uint64{7, 8} {
		for _, k := range []string{"a1", "a2", "a3", "b1"} {
			idx++
			s.Apply(logOf(idx, put(string(UserKey(uid, []byte(k))), k)))
		}
	}
	tests := []struct {
		prefix, after string
		limit         int
		want          []string
		more          bool
	}{
		{"", "", 0, []string{"a1", "a2", "a3", "b1"}, false},
		{"a", "", 2, []string{"a1", "a2"}, true},
		{"a", "a2", 2, []string{"a3"}, false},
		{"b", "", 1, []string{"b1"}, false},
		{"c", "", 10, nil, false},
	}
	for _, tt := range tests {
		var after []byte
		if tt.after != "" {
			after = UserKey(8, []byte(tt.after))
		}
		kvs, more, err := s.Range(UserPrefix(8, []byte(tt.prefix)), after, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, kv := range kvs {
			got = append(got, string(UserPart(kv.Key)))
		}
		if !reflect.DeepEqual(got, tt.want) || more != tt.more {
			t.Errorf("range %q after %q limit %d: got %v more=%v, want %v more=%v", tt.prefix, tt.after, tt.limit, got, more, tt.want, tt.more)
		}
	}
}

func TestCommandRoundTrip(t *testing.T) {
	cmds := []*Command{
		put("k", "v"),
		casVersion("k", "v", 7),
		{
			Compares: []Compare{{Key: []byte("a"), Target: TargetValue, Op: CmpNotEqual, Value: []byte{0, 1, 2}}},
			Then:     []Op{{Type: OpDelete, Key: []byte("a")}},
			Else:     []Op{{Type: OpGet, Key: []byte("a")}, {Type: OpPut, Key: []byte("b"), Value: bytes.Repeat([]byte("z"), 5000)}},
		},
	}
	for _, c := range cmds {
		got, err := DecodeCommand(c.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip: got %+v, want %+v", got, c)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good := put("k", "v").Encode()
	bad := [][]byte{
		nil,
		{2},
		good[:len(good)-1],
		append(append([]byte{}, good...), 0),
		{1, 0, 0, 0},                         // no operations
		{1, 0, 1, 9, 1, 'k', 0, 0},           // unknown op type
		{1, 0, 1, 2, 0, 0, 0},                // empty key
		{1, 0xff, 0xff, 0xff, 0xff, 0x0f},    // huge compare count
		{1, 0, 1, 2, 0xff, 0xff, 0xff, 0x0f}, // key length past the end
	}
	for _, b := range bad {
		if _, err := DecodeCommand(b); err == nil {
			t.Errorf("DecodeCommand(%v) accepted a bad command", b)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	f.Add(put("k", "v").Encode())
	f.Add(casVersion("key", "value", 3).Encode())
	f.Add([]byte{1, 1, 1, 'a', 1, 1, 0, 0, 1, 1, 1, 'a', 0, 0})
	f.Add(EncodeBatch([][]byte{put("k", "v").Encode(), casVersion("key", "value", 3).Encode()}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if cmds, err := decodeBatch(b); err == nil {
			// A batch that decodes applies without panicking, one
			// answer per command.
			s := openTest(t)
			if br, ok := s.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: b}})[0].(BatchResult); !ok || len(br) != len(cmds) {
				t.Fatalf("batch of %d answered %#v", len(cmds), br)
			}
			return
		}
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to something that decodes to
		// the same command, and must apply without panicking.
		c2, err := DecodeCommand(c.Encode())
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("re-decode: %v, %+v vs %+v", err, c, c2)
		}
		s := openTest(t)
		if _, ok := s.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: b}).(*Result); !ok {
			t.Fatal("valid command did not apply")
		}
	})
}
