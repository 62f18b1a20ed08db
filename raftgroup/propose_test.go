package raftgroup

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestProposalCoalescing: concurrent writes to one group share log entries,
// each gets its own answer, a key written by many concurrent writers gets a
// distinct version each time, and a lone writer's writes go out one entry
// each, at once.
func TestProposalCoalescing(t *testing.T) {
	nodes := threeNodes(t, nil)
	bootstrap(t, nodes, "g1")
	l := waitLeader(t, nodes, "g1")

	// A lone writer: an entry per write, nothing waits.
	before := l.Store().AppliedIndex()
	for i := range 5 {
		r := applyRetry(t, nodes, "g1", putCmd(fmt.Sprintf("lone-%d", i), "v"))
		if want := before + uint64(i) + 1; r.Index != want {
			t.Fatalf("lone write %d applied at %d, want %d (an entry of its own)", i, r.Index, want)
		}
	}

	const writers, each, hotWriters, hotEach = 64, 20, 16, 10
	before = l.Store().AppliedIndex()
	type wrote struct {
		key   string
		index uint64
	}
	var (
		mu      sync.Mutex
		results []wrote
		hot     = map[uint64]int{}
		wg      sync.WaitGroup
		errs    = make(chan error, writers+hotWriters)
	)
	for w := range writers + hotWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := each
			if w >= writers {
				n = hotEach
			}
			for i := range n {
				key := fmt.Sprintf("k-%d-%d", w, i)
				if w >= writers {
					key = "hot"
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := l.Apply(ctx, putCmd(key, fmt.Sprintf("%d-%d", w, i)))
				cancel()
				if err != nil {
					errs <- fmt.Errorf("writer %d, write %d: %w", w, i, err)
					return
				}
				mu.Lock()
				if key == "hot" {
					hot[r.Index]++
				} else {
					results = append(results, wrote{key, r.Index})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := l.Store().AppliedIndex()
	total := writers*each + hotWriters*hotEach
	entries := int(after - before)
	t.Logf("%d writes in %d entries", total, entries)
	if entries*2 > total {
		t.Fatalf("%d writes took %d entries: concurrent writes were not coalesced", total, entries)
	}
	for v, n := range hot {
		if n != 1 {
			t.Fatalf("%d writes of one key got version %d: a batch held the same key twice", n, v)
		}
	}
	if len(hot) != hotWriters*hotEach {
		t.Fatalf("hot key: %d distinct versions, want %d", len(hot), hotWriters*hotEach)
	}
	for _, w := range results {
		kv, found, err := l.Store().Get([]byte(w.key))
		if err != nil || !found || kv.Version != w.index || w.index <= before || w.index > after {
			t.Fatalf("%s: found %v at version %d (err %v), the write said %d", w.key, found, kv.Version, err, w.index)
		}
	}
	checkReplicasAgree(t, nodes, "g1")
}

// TestProposalBatchOff: with ProposalBatch 1 every write has an entry of
// its own.
func TestProposalBatchOff(t *testing.T) {
	nodes := threeNodes(t, func(c *Config) { c.ProposalBatch = 1 })
	bootstrap(t, nodes, "g1")
	l := waitLeader(t, nodes, "g1")
	before := l.Store().AppliedIndex()
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := l.Apply(ctx, putCmd(fmt.Sprintf("k%d", w), "v")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := l.Store().AppliedIndex() - before; got != 32 {
		t.Fatalf("32 writes took %d entries, want 32", got)
	}
	if l.prop != nil {
		t.Fatal("a proposer with ProposalBatch 1")
	}
}

// TestLingerEndsWhenWritesGather: a proposer holding back its next entry
// stops waiting once as many writes as the last entry carried have queued.
func TestLingerEndsWhenWritesGather(t *testing.T) {
	p := &proposer{maxBatch: 256, inFlight: 1, maxLinger: time.Minute}
	done := make(chan struct{})
	go func() { p.linger(3, time.Minute); close(done) }()
	waitFor(t, "the linger to start", 5*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.wake != nil
	})
	enqueue := func() {
		p.mu.Lock()
		p.enqueueLocked(&proposal{})
		p.mu.Unlock()
	}
	enqueue()
	enqueue()
	select {
	case <-done:
		t.Fatal("the linger ended with 2 of 3 writes queued")
	case <-time.After(100 * time.Millisecond):
	}
	enqueue()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the linger went on with 3 writes queued")
	}
}
