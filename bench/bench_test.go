package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// stallTarget answers at once, except that the request it sees first stalls
// for the given time.
type stallTarget struct {
	stall time.Duration
	n     atomic.Int64
}

func (s *stallTarget) wait() {
	if s.n.Add(1) == 1 {
		time.Sleep(s.stall)
	}
}
func (s *stallTarget) Put(context.Context, uint64, string, []byte) error   { s.wait(); return nil }
func (s *stallTarget) Get(context.Context, uint64, string, bool) error     { s.wait(); return nil }
func (s *stallTarget) Txn(context.Context, uint64, []string, []byte) error { s.wait(); return nil }

// TestOpenLoopHasNoCoordinatedOmission: one client at 200 requests a second
// meets a 300 ms stall. The requests due during the stall waited for it, and
// the open loop counts that wait, so about 60 of 200 requests are slow; the
// closed loop would record just one slow request.
func TestOpenLoopHasNoCoordinatedOmission(t *testing.T) {
	res, err := Run(context.Background(), &stallTarget{stall: 300 * time.Millisecond},
		Config{Workload: "put", Clients: 1, Rate: 200, Requests: 200})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Count != 200 || res.Total.MaxUs < 290_000 || res.Total.P90Us < 50_000 {
		t.Fatalf("open loop: want 200 requests, max ≥ 290ms and p90 ≥ 50ms, got %+v", res.Total)
	}
	res, err = Run(context.Background(), &stallTarget{stall: 300 * time.Millisecond},
		Config{Workload: "put", Clients: 1, Requests: 200})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Count != 200 || res.Total.MaxUs < 290_000 || res.Total.P90Us > 50_000 {
		t.Fatalf("closed loop: want one slow request, got %+v", res.Total)
	}
}

func TestMixFollowsItsShares(t *testing.T) {
	res, err := Run(context.Background(), &stallTarget{}, Config{Workload: "mix-b", Clients: 4, Requests: 4000, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Ops) != 2 || res.Ops[0].Op != OpGet || res.Ops[1].Op != OpPut {
		t.Fatalf("ops %+v", res.Ops)
	}
	if f := float64(res.Ops[1].Count) / 4000; f < 0.03 || f > 0.07 {
		t.Fatalf("mix-b: %.3f of requests were puts, want about 0.05", f)
	}
}

func TestZipfianKeysAreSkewed(t *testing.T) {
	cfg := Config{Dist: "zipfian", Users: 10000}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	k := newKeygen(&cfg, 0)
	counts := map[uint64]int{}
	for range 10000 {
		u := k.next()
		if u >= 10000 {
			t.Fatalf("uid %d out of range", u)
		}
		counts[u]++
	}
	if counts[0] < 1000 || len(counts) > 5000 {
		t.Fatalf("zipfian: hottest uid got %d of 10000, %d distinct uids", counts[0], len(counts))
	}
}

// deadlineTarget fails a request whose deadline is less than 20 ms away, as
// a node does that gives up on a request when the client's deadline comes,
// and otherwise answers after a millisecond.
type deadlineTarget struct{}

func (deadlineTarget) do(ctx context.Context) error {
	if d, ok := ctx.Deadline(); ok && time.Until(d) < 20*time.Millisecond {
		return errors.New("node gave up: deadline")
	}
	time.Sleep(time.Millisecond)
	return nil
}
func (d deadlineTarget) Put(ctx context.Context, _ uint64, _ string, _ []byte) error {
	return d.do(ctx)
}
func (d deadlineTarget) Get(ctx context.Context, _ uint64, _ string, _ bool) error { return d.do(ctx) }
func (d deadlineTarget) Txn(ctx context.Context, _ uint64, _ []string, _ []byte) error {
	return d.do(ctx)
}

// TestRunEndIsNotAnError: requests in flight when a timed run ends finish
// under their own timeout; the end of the run is not their deadline, so a
// node that gives up at a request's deadline does not turn the run's last
// requests into errors.
func TestRunEndIsNotAnError(t *testing.T) {
	res, err := Run(context.Background(), deadlineTarget{}, Config{Workload: "put", Clients: 8, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.Errors != 0 || res.Total.Count == 0 {
		t.Fatalf("want no errors and some requests, got %+v (%v)", res.Total, res.ErrorSamples)
	}
}
