package sharedlog

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The crash tests run a script of log operations over several groups
// through a faultFS, crash it after one of its file operations, reopen
// what the disk holds with the real recovery, and compare the logs and
// stable stores with a model: they must be what the operations that
// returned nil made them, or that and the one operation the crash
// interrupted (it may have reached the disk before its answer was lost).
// So an entry whose StoreLogs returned nil is there with its data, and a
// term or vote is never older than the last SetUint64 that returned nil.

const crashDir = "/data/shared-log"

// crashOp is one step of a script: do runs it on the log, apply runs it on
// the model.
type crashOp struct {
	id    string // the group it changes
	desc  string
	do    func(l *Log) error
	apply func(m crashModel)
}

// crashModel is what a script's operations left: per group, its entries by
// index and its stable values.
type crashModel map[string]*modelGroup

type modelGroup struct {
	entries map[uint64]*raft.Log
	stable  map[string]uint64
}

func (m crashModel) clone() crashModel {
	c := crashModel{}
	for id, g := range m {
		c[id] = &modelGroup{entries: maps.Clone(g.entries), stable: maps.Clone(g.stable)}
	}
	return c
}

func (m crashModel) group(id string) *modelGroup {
	g := m[id]
	if g == nil {
		g = &modelGroup{entries: map[uint64]*raft.Log{}, stable: map[string]uint64{}}
		m[id] = g
	}
	return g
}

// diff says how l differs from m, for the groups in ids; "" if it does not.
func (m crashModel) diff(l *Log, ids []string) string {
	for _, id := range ids {
		g, _ := l.Group(id)
		want := m[id]
		if want == nil {
			want = &modelGroup{}
		}
		first, last := uint64(0), uint64(0)
		if len(want.entries) > 0 {
			first = slices.Min(slices.Collect(maps.Keys(want.entries)))
			last = slices.Max(slices.Collect(maps.Keys(want.entries)))
		}
		if f, _ := g.FirstIndex(); f != first {
			return fmt.Sprintf("%s: first index %d, want %d", id, f, first)
		}
		if la, _ := g.LastIndex(); la != last {
			return fmt.Sprintf("%s: last index %d, want %d", id, la, last)
		}
		for i := first; i <= last && last > 0; i++ {
			w := want.entries[i]
			var e raft.Log
			if err := g.GetLog(i, &e); err != nil {
				return fmt.Sprintf("%s: entry %d: %v", id, i, err)
			}
			if w == nil || e.Index != w.Index || e.Term != w.Term || !bytes.Equal(e.Data, w.Data) {
				return fmt.Sprintf("%s: entry %d is index %d term %d (%d bytes), want %v", id, i, e.Index, e.Term, len(e.Data), w)
			}
		}
		for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
			v, err := g.GetUint64([]byte(k))
			w, ok := want.stable[k]
			switch {
			case !ok && err == nil:
				return fmt.Sprintf("%s: %s is %d, want none", id, k, v)
			case ok && (err != nil || v != w):
				return fmt.Sprintf("%s: %s is %d (%v), want %d", id, k, v, err, w)
			}
		}
	}
	return ""
}

// crashScript is a workload over four groups: an idle one (ten entries, a
// term and a vote, then nothing, so that it is copied forward), two busy
// ones that compact their logs from the front as raft does after a
// snapshot, and one that truncates a conflicting suffix and is dropped.
// Small segments make it rotate, copy forward and delete segments many
// times. rng varies entry sizes and the order of things.
func crashScript(rng *rand.Rand, rounds int) (ops []crashOp, ids []string) {
	ids = []string{"idle", "a", "b", "c"}
	next := map[string]uint64{"idle": 1, "a": 1, "b": 1, "c": 1}
	term := map[string]uint64{"idle": 1, "a": 1, "b": 1, "c": 1}
	store := func(id string, n int) {
		var logs []*raft.Log
		for k := 0; k < n; k++ {
			i := next[id]
			next[id]++
			data := make([]byte, 20+rng.IntN(200))
			for j := range data {
				data[j] = byte(i) ^ byte(j) ^ id[0]
			}
			logs = append(logs, &raft.Log{Index: i, Term: term[id], Type: raft.LogCommand, Data: data,
				AppendedAt: time.Unix(0, int64(i))})
		}
		ops = append(ops, crashOp{
			id:   id,
			desc: fmt.Sprintf("%s: store %d..%d", id, logs[0].Index, logs[len(logs)-1].Index),
			do: func(l *Log) error {
				g, _ := l.Group(id)
				return g.StoreLogs(logs)
			},
			apply: func(m crashModel) {
				g := m.group(id)
				for _, e := range logs {
					g.entries[e.Index] = e
				}
			},
		})
	}
	del := func(id string, lo, hi uint64) {
		ops = append(ops, crashOp{
			id:   id,
			desc: fmt.Sprintf("%s: delete %d..%d", id, lo, hi),
			do: func(l *Log) error {
				g, _ := l.Group(id)
				return g.DeleteRange(lo, hi)
			},
			apply: func(m crashModel) {
				g := m.group(id)
				for i := lo; i <= hi; i++ {
					delete(g.entries, i)
				}
			},
		})
	}
	set := func(id, key string, v uint64) {
		ops = append(ops, crashOp{
			id:   id,
			desc: fmt.Sprintf("%s: %s = %d", id, key, v),
			do: func(l *Log) error {
				g, _ := l.Group(id)
				return g.SetUint64([]byte(key), v)
			},
			apply: func(m crashModel) { m.group(id).stable[key] = v },
		})
	}
	drop := func(id string) {
		ops = append(ops, crashOp{
			id:   id,
			desc: id + ": drop",
			do:   func(l *Log) error { return l.Drop(id) },
			apply: func(m crashModel) {
				g := m.group(id)
				clear(g.entries)
				clear(g.stable)
			},
		})
	}
	for next["idle"] <= 10 {
		store("idle", 1+rng.IntN(3))
	}
	set("idle", "CurrentTerm", 3)
	set("idle", "LastVoteTerm", 3)
	for r := 1; r <= rounds; r++ {
		for _, id := range []string{"a", "b", "c"} {
			if id == "c" && r > rounds*2/3 {
				continue // dropped
			}
			store(id, 1+rng.IntN(3))
		}
		if r%4 == 0 {
			term["a"]++
			set("a", "CurrentTerm", term["a"])
			set("a", "LastVoteTerm", term["a"])
		}
		for _, id := range []string{"a", "b"} {
			// Compaction after a snapshot: keep the last 6 or so.
			if r%5 == 0 && next[id] > 8 {
				del(id, 1, next[id]-7)
			}
		}
		if r == rounds/3 && next["c"] > 4 {
			// A conflicting suffix: the last three go, two come back
			// in a new term.
			del("c", next["c"]-3, next["c"]-1)
			next["c"] -= 3
			term["c"]++
			store("c", 2)
		}
		if r == rounds*2/3 {
			drop("c")
		}
	}
	return ops, ids
}

// crashRun runs ops on a new log in a faultFS that crashes after call
// crashAt (0: never). It returns the faultFS, the model of what the
// operations that returned nil did, and the model with the interrupted
// operation done too.
func crashRun(t testing.TB, ops []crashOp, segSize int64, crashAt int) (fsys *faultFS, acked, maybe crashModel) {
	return crashRunWith(t, ops, segSize, crashFaults{crashAt: crashAt}, false)
}

// crashFaults are the faults of a run: a crash after call crashAt (0:
// none), and call failAt failing with failErr (0: none), after which the
// log fails and every later operation with it.
type crashFaults struct {
	crashAt, failAt int
	failErr         error
}

func (c crashFaults) fs() *faultFS {
	fsys := newFaultFS()
	fsys.crashAt, fsys.failAt, fsys.failErr = c.crashAt, c.failAt, c.failErr
	return fsys
}

// faulted says whether an operation may have failed: fsys crashed, or
// its failing call came.
func faulted(fsys *faultFS) bool {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return fsys.crashed || (fsys.failAt > 0 && fsys.calls >= fsys.failAt)
}

// crashRunWith is crashRun, with each group's operations run by a
// goroutine of its own if concurrent (so writes share batches; the file
// calls' order is then not fixed, and the crash lands where it lands).
// The models are then per group: each group's acknowledged operations,
// and those and its one interrupted operation.
func crashRunWith(t testing.TB, ops []crashOp, segSize int64, faults crashFaults, concurrent bool) (fsys *faultFS, acked, maybe crashModel) {
	if concurrent {
		return crashRunConcurrent(t, ops, segSize, faults)
	}
	t.Helper()
	fsys = faults.fs()
	l, err := openFS(fsys, crashDir, segSize)
	if err != nil {
		if faulted(fsys) {
			return fsys, crashModel{}, crashModel{}
		}
		t.Fatal(err)
	}
	l.syncSpare = true
	defer l.Close()
	acked = crashModel{}
	for _, op := range ops {
		maybe = acked.clone()
		op.apply(maybe)
		if err := op.do(l); err != nil {
			if !faulted(fsys) {
				t.Fatalf("%s: %v with no crash (call %d)", op.desc, err, fsys.calls)
			}
			return fsys, acked, maybe
		}
		acked = maybe
	}
	return fsys, acked, acked
}

// crashCheck reopens what a crash left and checks it against the models;
// then it writes to every group, reopens, and checks again.
func crashCheck(t testing.TB, img *faultFS, segSize int64, ids []string, acked, maybe crashModel, what string) {
	t.Helper()
	l, err := openFS(img, crashDir, segSize)
	if err != nil {
		t.Fatalf("%s: reopen: %v", what, err)
	}
	// Groups are independent: each must be as its acknowledged
	// operations left it, or that and its one interrupted operation.
	m := crashModel{}
	for _, id := range ids {
		d1, d2 := acked.diff(l, []string{id}), maybe.diff(l, []string{id})
		if d1 != "" && d2 != "" {
			l.Close()
			t.Fatalf("%s: after reopening: %s (or, with the interrupted operation, %s)", what, d1, d2)
		}
		src := acked
		if d1 != "" {
			src = maybe
		}
		if g := src[id]; g != nil {
			m[id] = &modelGroup{entries: maps.Clone(g.entries), stable: maps.Clone(g.stable)}
		}
	}
	// The log goes on: one more entry in each group survives a reopen.
	for _, id := range ids {
		g, _ := l.Group(id)
		last, _ := g.LastIndex()
		e := &raft.Log{Index: last + 1, Term: 99, Type: raft.LogCommand, Data: []byte(id + strconv.Itoa(int(last)))}
		if err := g.StoreLog(e); err != nil {
			t.Fatalf("%s: a write after reopening: %v", what, err)
		}
		m.group(id).entries[e.Index] = e
	}
	if err := l.Close(); err != nil {
		t.Fatalf("%s: close: %v", what, err)
	}
	if l, err = openFS(img, crashDir, segSize); err != nil {
		t.Fatalf("%s: second reopen: %v", what, err)
	}
	defer l.Close()
	if d := m.diff(l, ids); d != "" {
		t.Fatalf("%s: after writing and reopening: %s", what, d)
	}
}

func crashRunConcurrent(t testing.TB, ops []crashOp, segSize int64, faults crashFaults) (fsys *faultFS, acked, maybe crashModel) {
	t.Helper()
	fsys = faults.fs()
	l, err := openFS(fsys, crashDir, segSize)
	if err != nil {
		if faulted(fsys) {
			return fsys, crashModel{}, crashModel{}
		}
		t.Fatal(err)
	}
	defer l.Close()
	byGroup := map[string][]crashOp{}
	for _, op := range ops {
		byGroup[op.id] = append(byGroup[op.id], op)
	}
	type result struct {
		acked, maybe *modelGroup
		err          error
	}
	results := make(map[string]*result, len(byGroup))
	for id := range byGroup {
		results[id] = &result{}
	}
	var wg sync.WaitGroup
	for id, ops := range byGroup {
		r := results[id]
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := crashModel{}
			a.group(id)
			for _, op := range ops {
				m := a.clone()
				op.apply(m)
				if err := op.do(l); err != nil {
					r.acked, r.maybe, r.err = a[id], m[id], fmt.Errorf("%s: %w", op.desc, err)
					return
				}
				a = m
			}
			r.acked, r.maybe = a[id], a[id]
		}()
	}
	wg.Wait()
	acked, maybe = crashModel{}, crashModel{}
	for id, r := range results {
		if r.err != nil && !faulted(fsys) {
			t.Fatalf("%v with no crash", r.err)
		}
		acked[id], maybe[id] = r.acked, r.maybe
	}
	return fsys, acked, maybe
}

// crashFlipCheck flips a bit at rest in img (a copy is changed) in data
// that was synced and followed by a later synced write in the same
// segment, and checks that opening fails with a CorruptionError naming the
// segment: it must never be cut off as a torn tail. It returns false if no
// segment has two synced writes.
func crashFlipCheck(t testing.TB, img *faultFS, segSize int64, rng *rand.Rand, what string) bool {
	t.Helper()
	img = img.clone()
	var cands []string
	for _, n := range img.files(crashDir, ".seg") {
		if w := img.names[n].syncedWrites; len(w) >= 2 && w[len(w)-1] > 0 {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return false
	}
	seg := cands[rng.IntN(len(cands))]
	w := img.names[seg].syncedWrites
	next := w[len(w)-1]
	at := rng.Int64N(next)
	img.flip(seg, at, uint(rng.IntN(8)))
	l, err := openFS(img, crashDir, segSize)
	var ce *CorruptionError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || ce.File != seg || ce.Offset > at {
		if err == nil {
			l.Close()
		}
		t.Fatalf("%s, then a bit flipped at rest at %d of %s (synced, a synced write at %d after it): open gave %v, want a CorruptionError for it", what, at, seg, next, err)
	}
	return true
}

const crashSegSize = 4 << 10

// TestCrashPoints crashes the script after every file operation in turn
// (every write, sync, truncate, allocation, create, rename, remove and
// directory sync), with what was not synced dropped, and torn, and checks
// what reopens.
func TestCrashPoints(t *testing.T) {
	ops, ids := crashScript(rand.New(rand.NewPCG(1, 1)), 60)
	fsys, acked, _ := crashRun(t, ops, crashSegSize, 0)
	calls := fsys.calls
	checkScriptCovers(t, fsys)
	img := fsys.crashImage(tearAll, nil)
	crashCheck(t, img, crashSegSize, ids, acked, acked, "no crash")
	tears := []tear{tearDrop, tearAll, tearCut, tearHole, tearFlip}
	points := 0
	flips := 0
	for at := 1; at <= calls; at++ {
		fsys, acked, maybe := crashRun(t, ops, crashSegSize, at)
		for _, tr := range tears {
			what := fmt.Sprintf("crash after call %d (%s), %v", at, fsys.trace[at-1], tr)
			rng := rand.New(rand.NewPCG(uint64(at), uint64(tr)))
			img := fsys.crashImage(tr, rng)
			if tr == tearCut && crashFlipCheck(t, img, crashSegSize, rng, what) {
				flips++
			}
			crashCheck(t, img, crashSegSize, ids, acked, maybe, what)
			points++
		}
	}
	t.Logf("%d operations, %d file calls, %d crash points checked (%d tear modes), %d bit flips at rest found", len(ops), calls, points, len(tears), flips)
}

// checkScriptCovers fails unless the script's run (fsys, not crashed)
// rotated into a spare, deleted segments and copied the idle group
// forward.
func checkScriptCovers(t testing.TB, fsys *faultFS) {
	t.Helper()
	var renames, removes int
	for _, c := range fsys.trace {
		if strings.HasPrefix(c, "rename ") {
			renames++
		}
		if strings.HasPrefix(c, "remove ") && strings.HasSuffix(c, ".seg") {
			removes++
		}
	}
	l, err := openFS(fsys.crashImage(tearAll, nil), crashDir, crashSegSize)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	g, _ := l.Group("idle")
	if renames == 0 || removes == 0 || len(g.locs) == 0 || g.locs[0].seg == 1 {
		t.Fatalf("the script renamed %d spares into place, removed %d segments, and left the idle group in segment %v: want a copy-forward and both", renames, removes, g.locs)
	}
	t.Logf("%d spares renamed into place, %d segments removed, the idle group ends in segment %d", renames, removes, g.locs[0].seg)
}

// TestSharedLogCorruption: a flipped bit in a record in the middle of the
// newest segment, with records synced after it, is corruption: opening
// fails and names the file and offset, and nothing is truncated. A bit
// flipped in the tail of the last write, which was never synced, is a torn
// tail: the log opens without it.
func TestSharedLogCorruption(t *testing.T) {
	const segSize = 1 << 20
	// write makes a log of ten one-entry writes to group g and returns
	// where each began in the (only) segment.
	write := func(t *testing.T, fsys *faultFS) (starts []int64) {
		l, err := openFS(fsys, crashDir, segSize)
		if err != nil {
			t.Fatal(err)
		}
		g, _ := l.Group("g")
		for i := uint64(1); i <= 10; i++ {
			starts = append(starts, l.end)
			if err := g.StoreLog(entry(i, 1, 100)); err != nil {
				t.Fatal(err)
			}
			if i == 5 {
				if err := g.SetUint64([]byte("CurrentTerm"), 1); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := g.SetUint64([]byte("CurrentTerm"), 2); err != nil {
			t.Fatal(err)
		}
		if err := g.SetUint64([]byte("LastVoteTerm"), 2); err != nil {
			t.Fatal(err)
		}
		l.opened = false // stop as a crash would: no trim
		l.Close()
		return starts
	}
	seg := crashDir + "/" + segName(1)
	for _, k := range []int{0, 3, 7} {
		t.Run(fmt.Sprintf("entry %d", k+1), func(t *testing.T) {
			fsys := newFaultFS()
			starts := write(t, fsys)
			at := starts[k] + 60 // inside entry k+1's data
			fsys.flip(seg, at, 3)
			size := len(fsys.names[seg].synced)
			_, err := openFS(fsys, crashDir, segSize)
			var ce *CorruptionError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
				t.Fatalf("open after a bit flip at %d in the middle of the newest segment: %v, want a CorruptionError", at, err)
			}
			if ce.File != seg || ce.Offset < starts[k] || ce.Offset > at {
				t.Fatalf("corruption reported in %s at %d, want %s at the start of the write around %d (%d)", ce.File, ce.Offset, seg, at, starts[k])
			}
			if got := len(fsys.names[seg].synced); got != size {
				t.Fatalf("the corrupt segment was cut from %d to %d bytes", size, got)
			}
		})
	}
	t.Run("last write, clean close", func(t *testing.T) {
		// The last write before a clean close is followed by the empty
		// batch close writes: a bit flipped in it at rest is found.
		fsys := newFaultFS()
		write(t, fsys)
		l, err := openFS(fsys, crashDir, segSize)
		if err != nil {
			t.Fatal(err)
		}
		g, _ := l.Group("g")
		start := l.end
		if err := g.StoreLog(entry(11, 1, 100)); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		fsys.flip(seg, start+70, 1)
		_, err = openFS(fsys, crashDir, segSize)
		var ce *CorruptionError
		if !errors.As(err, &ce) || ce.Offset != start {
			t.Fatalf("open after a bit flip in the last write before a clean close: %v, want corruption at %d", err, start)
		}
	})
	t.Run("torn tail", func(t *testing.T) {
		fsys := newFaultFS()
		write(t, fsys)
		l, err := openFS(fsys, crashDir, segSize)
		if err != nil {
			t.Fatal(err)
		}
		// The 11th entry's write reaches the file and the crash comes
		// before its sync: a bit of it flips (the page was half
		// written).
		fsys.crashAt = fsys.calls + 1
		start := l.end
		g, _ := l.Group("g")
		if err := g.StoreLog(entry(11, 1, 100)); err == nil {
			t.Fatal("a write acknowledged with its sync crashed")
		}
		l.Close()
		img := fsys.crashImage(tearAll, nil)
		img.flip(seg, start+70, 5)
		if l, err = openFS(img, crashDir, segSize); err != nil {
			t.Fatalf("open with a bit flipped in the unsynced tail: %v", err)
		}
		defer l.Close()
		g, _ = l.Group("g")
		checkLog(t, g, 1, 10, func(uint64) uint64 { return 1 }, 100)
		if v, err := g.GetUint64([]byte("LastVoteTerm")); v != 2 || err != nil {
			t.Fatalf("LastVoteTerm %d %v, want 2", v, err)
		}
		if b := img.names[seg].data; !allZero(b[start:]) {
			t.Fatalf("the torn tail at %d was not cut off", start)
		}
	})
}

// TestCrashRandom runs random scripts (rounds, entry sizes, segment sizes)
// sequentially or with a goroutine per group (writes sharing batches),
// crashes them at a random file call (sometimes after a write or an
// fsync failed with EIO or ENOSPC, which stops the log), tears what was
// not synced in a
// random way (dropped, kept, cut at a random byte, a middle page reverted,
// a bit flipped), sometimes crashes the recovery too, sometimes flips a
// synced bit at rest (which must be reported), and checks what reopens.
// make test runs 400 seeds; LDCD_CRASH_SOAK=N runs N (1: 2000) from a seed
// that changes every run, LDCD_CRASH_SEED=S starts at S (to replay one).
func TestCrashRandom(t *testing.T) {
	seeds, base := 400, uint64(1)
	if v := os.Getenv("LDCD_CRASH_SOAK"); v != "" {
		seeds = 2000
		if n, err := strconv.Atoi(v); err == nil && n > 1 {
			seeds = n
		}
		base = uint64(time.Now().UnixNano())
	}
	if v := os.Getenv("LDCD_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		base = n
	}
	t.Logf("seeds %d..%d", base, base+uint64(seeds)-1)
	var crashed, failures, flips, recoveryCrashes, concurrentRuns int
	for s := 0; s < seeds; s++ {
		seed := base + uint64(s)
		rng := rand.New(rand.NewPCG(seed, 7))
		rounds := 10 + rng.IntN(50)
		segSize := int64(2<<10 + rng.IntN(6<<10))
		ops, ids := crashScript(rng, rounds)
		concurrent := rng.IntN(2) == 0
		fsys0, _, _ := crashRun(t, ops, segSize, 0)
		faults := crashFaults{crashAt: 1 + rng.IntN(fsys0.calls)}
		if rng.IntN(4) == 0 {
			// A write or sync fails first (the log stops), and the
			// power goes later, or at the end of the run.
			faults.failAt = 1 + rng.IntN(fsys0.calls)
			faults.failErr = []error{syscall.EIO, syscall.ENOSPC}[rng.IntN(2)]
			faults.crashAt = faults.failAt + rng.IntN(3)
			if rng.IntN(2) == 0 {
				faults.crashAt = 0
			}
		}
		fsys, acked, maybe := crashRunWith(t, ops, segSize, faults, concurrent)
		tr := tear(rng.IntN(5))
		what := fmt.Sprintf("seed %d (LDCD_CRASH_SEED=%d; %d rounds, %d-byte segments, concurrent %v): call %d failing with %v, crash after call %d of %d, %v",
			seed, seed, rounds, segSize, concurrent, faults.failAt, faults.failErr, faults.crashAt, fsys0.calls, tr)
		if fsys.crashed {
			crashed++
		}
		if faults.failAt > 0 && faults.failAt <= fsys.calls {
			failures++
		}
		if concurrent {
			concurrentRuns++
		}
		img := fsys.crashImage(tr, rng)
		if rng.IntN(3) == 0 {
			// The recovery crashes too, after one of its first calls
			// (the truncation of a torn tail and its sync, the
			// allocation, a write).
			img.crashAt = img.calls + 1 + rng.IntN(4)
			if l, err := openFS(img, crashDir, segSize); err == nil {
				l.Close()
			}
			tr2 := tear(rng.IntN(5))
			what += fmt.Sprintf(", recovery crashed after its call %d, %v", img.crashAt, tr2)
			img = img.crashImage(tr2, rng)
			recoveryCrashes++
		}
		if rng.IntN(2) == 0 && crashFlipCheck(t, img, segSize, rng, what) {
			flips++
		}
		crashCheck(t, img, segSize, ids, acked, maybe, what)
	}
	t.Logf("%d seeds (%d with concurrent writers): %d crashed, %d with a write or sync failed first, %d recoveries crashed, %d bit flips at rest found",
		seeds, concurrentRuns, crashed, failures, recoveryCrashes, flips)
}

// TestSharedLogMissingSegment: a segment missing between two others is
// corruption (its entries would be skipped), reported with its name.
func TestSharedLogMissingSegment(t *testing.T) {
	ops, _ := crashScript(rand.New(rand.NewPCG(1, 1)), 60)
	fsys, _, _ := crashRun(t, ops, crashSegSize, 0)
	img := fsys.crashImage(tearAll, nil)
	segs := img.files(crashDir, ".seg")
	if len(segs) < 3 {
		t.Fatalf("%d segments, want 3 or more", len(segs))
	}
	missing := segs[len(segs)/2]
	img.Remove(missing)
	_, err := openFS(img, crashDir, crashSegSize)
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.File != missing {
		t.Fatalf("open with %s missing: %v, want a CorruptionError naming it", missing, err)
	}
}
