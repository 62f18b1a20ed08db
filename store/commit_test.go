package store

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// committed reads the applied index bbolt has committed, past the open
// write transaction: what a process crash would leave.
func committed(t *testing.T, s *Store) uint64 {
	t.Helper()
	var applied uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		applied = u64(tx.Bucket(bucketMeta).Get(keyApplied))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return applied
}

func openDeferred(t *testing.T, dir string, delay time.Duration) *Store {
	t.Helper()
	s, err := Open(filepath.Join(dir, "state.db"), Options{NoSync: true, CommitDelay: delay})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDeferredCommits: applied batches wait uncommitted; a one-key read
// sees them where they wait, every other read, a snapshot and a close
// commit them first; a process crash loses only the commit, and the
// entries replayed after the committed applied index rebuild the same
// state.
func TestDeferredCommits(t *testing.T) {
	setBootID(t, "boot-1")
	dir := t.TempDir()
	s := openDeferred(t, dir, time.Hour)
	defer s.Close()
	batches := [][]*raft.Log{
		{logOf(1, put("a", "1")), logOf(2, put("b", "2"))},
		{logOf(3, put("a", "3"))},
	}
	for _, b := range batches {
		for _, r := range s.ApplyBatch(b) {
			mustResult(t, r)
		}
	}
	if got := committed(t, s); got != 0 {
		t.Fatalf("committed applied index %d with a commit delay of an hour, want 0", got)
	}
	kv, found, applied, err := s.GetAt([]byte("a"))
	if err != nil || !found || string(kv.Value) != "3" || kv.Version != 3 || applied != 3 {
		t.Fatalf("GetAt(a) = %+v %v applied %d %v, want 3 at version 3, applied 3", kv, found, applied, err)
	}
	if s.AppliedIndex() != 3 {
		t.Fatalf("AppliedIndex %d, want 3", s.AppliedIndex())
	}
	if got := committed(t, s); got != 0 {
		t.Fatalf("a one-key read committed (applied %d)", got)
	}

	// A process crash now: the file holds nothing applied. Replaying the
	// log from the committed applied index gives the same state.
	crashed := t.TempDir()
	copyFiles(t, dir, crashed)
	c := openDeferred(t, crashed, time.Hour)
	if c.Discarded || c.AppliedIndex() != 0 {
		t.Fatalf("after a process crash: discarded=%v applied %d, want kept at 0", c.Discarded, c.AppliedIndex())
	}
	for _, b := range batches {
		c.ApplyBatch(b)
	}
	var want, got bytes.Buffer
	if _, err := c.Digest(&got); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// A range read commits first.
	kvs, _, applied, err := s.RangeAt(nil, nil, 0)
	if err != nil || len(kvs) != 2 || applied != 3 {
		t.Fatalf("RangeAt = %d keys applied %d %v, want 2 keys at 3", len(kvs), applied, err)
	}
	if got := committed(t, s); got != 3 {
		t.Fatalf("committed %d after a range read, want 3", got)
	}
	if _, err := s.Digest(&want); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatal("the replayed copy differs from the store it was copied from")
	}

	// The change feed commits first.
	s.ApplyBatch([]*raft.Log{logOf(4, put("c", "4"))})
	recs, applied, err := s.Changes(4, 10)
	if err != nil || len(recs) != 1 || applied != 4 {
		t.Fatalf("Changes(4) = %d records applied %d %v, want 1 at 4", len(recs), applied, err)
	}

	// A snapshot commits first and holds what was applied.
	s.ApplyBatch([]*raft.Log{logOf(5, put("d", "5"))})
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	r := openTest(t)
	if err := r.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if r.AppliedIndex() != 5 {
		t.Fatalf("snapshot restored at %d, want 5", r.AppliedIndex())
	}

	// A restore over waiting batches commits them before it swaps files.
	s.ApplyBatch([]*raft.Log{logOf(6, put("e", "6"))})
	snap, _ = r.Snapshot()
	sink = &memSink{}
	snap.Persist(sink)
	snap.Release()
	if err := s.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if s.AppliedIndex() != 5 {
		t.Fatalf("after restore applied %d, want the snapshot's 5", s.AppliedIndex())
	}

	// A close commits.
	s.ApplyBatch([]*raft.Log{logOf(6, put("e", "6"))})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openDeferred(t, dir, time.Hour)
	defer s.Close()
	if s.AppliedIndex() != 6 {
		t.Fatalf("reopened at %d, want 6", s.AppliedIndex())
	}
}

// TestDeferredCommitBounds: batches commit once the delay has passed or
// commitEntries have gathered, and a synced store commits every batch.
func TestDeferredCommitBounds(t *testing.T) {
	setBootID(t, "boot-1")
	s := openDeferred(t, t.TempDir(), 200*time.Millisecond)
	defer s.Close()
	s.ApplyBatch([]*raft.Log{logOf(1, put("a", "1"))})
	if got := committed(t, s); got != 0 {
		t.Fatalf("committed %d at once with a delay of 200ms", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for committed(t, s) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("not committed 5s after a delay of 200ms")
		}
		time.Sleep(10 * time.Millisecond)
	}

	n := openDeferred(t, t.TempDir(), time.Hour)
	defer n.Close()
	var index uint64
	for index < commitEntries-1 {
		var logs []*raft.Log
		for range 100 {
			if index++; index < commitEntries {
				logs = append(logs, logOf(index, put("k", "v")))
			}
		}
		n.ApplyBatch(logs)
	}
	if got := committed(t, n); got != 0 {
		t.Fatalf("committed %d before %d entries gathered", got, commitEntries)
	}
	n.ApplyBatch([]*raft.Log{logOf(commitEntries, put("k", "v"))})
	if got := committed(t, n); got != commitEntries {
		t.Fatalf("committed %d with %d entries gathered, want all", got, commitEntries)
	}

	synced, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{CommitDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer synced.Close()
	synced.ApplyBatch([]*raft.Log{logOf(1, put("a", "1"))})
	if got := committed(t, synced); got != 1 {
		t.Fatalf("a synced store left its batch uncommitted (committed %d)", got)
	}
}

// TestDeferredCommitsConcurrentReads: readers running beside the applies
// and the commit timer always see every batch applied before they began,
// whether it waits in the open transaction or was committed.
func TestDeferredCommitsConcurrentReads(t *testing.T) {
	setBootID(t, "boot-1")
	s := openDeferred(t, t.TempDir(), time.Millisecond)
	defer s.Close()
	const batches = 300
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for r := range 4 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				before := s.AppliedIndex() // every batch up to here is applied
				var version uint64
				if r%2 == 0 {
					kv, found, _, err := s.GetAt([]byte("k"))
					if err != nil {
						errs <- err
						return
					}
					if found {
						version = kv.Version
					}
				} else {
					kvs, _, _, err := s.RangeAt([]byte("k"), nil, 0)
					if err != nil {
						errs <- err
						return
					}
					if len(kvs) > 0 {
						version = kvs[0].Version
					}
				}
				if version < before {
					errs <- fmt.Errorf("read version %d after index %d was applied", version, before)
					return
				}
			}
		}()
	}
	for i := uint64(1); i <= batches; i++ {
		s.ApplyBatch([]*raft.Log{logOf(i, put("k", fmt.Sprint(i)))})
		if i%50 == 0 {
			time.Sleep(2 * time.Millisecond) // let the timer commit now and then
		}
	}
	close(stop)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := committed(t, s); got != batches {
		deadline := time.Now().Add(5 * time.Second)
		for committed(t, s) != batches && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got = committed(t, s); got != batches {
			t.Fatalf("committed %d, want %d", got, batches)
		}
	}
}
