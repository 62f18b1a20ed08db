package jepsen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

// pauseMeter writes to one range in a loop and records the longest gap
// between consecutive successful writes: the write pause a move causes.
type pauseMeter struct {
	mu      sync.Mutex
	last    time.Time
	longest time.Duration
}

func (p *pauseMeter) ok(at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.last.IsZero() && at.Sub(p.last) > p.longest {
		p.longest = at.Sub(p.last)
	}
	p.last = at
}

func (p *pauseMeter) reset() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.longest
	p.longest, p.last = 0, time.Time{}
	return l
}

func waitPlacementEverywhere(t *testing.T, c *Cluster, version uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("every node to know placement version %d", version), 30*time.Second, func() (bool, string) {
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			var h struct {
				Version uint64 `json:"placement_version"`
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := GetJSON(ctx, n, "/healthz", &h)
			cancel()
			if err != nil || h.Version < version {
				return false, fmt.Sprintf("%s at %d (%v)", n.Name, h.Version, err)
			}
		}
		return true, ""
	})
}

func TestMoveDrainUnderWrites(t *testing.T) {
	c := startLDC(t)
	byName := map[string]*Node{}
	for _, n := range c.Nodes {
		byName[n.Name] = n
	}
	cl := newClient(t, c.Nodes...)
	waitPinned(t, cl, nil, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var a acked
	stop := make(chan struct{})
	var meter pauseMeter
	wcl := newClient(t, c.Nodes...)
	wait := writeAcked(t, ctx, wcl, &a, 4, loadOps, 3*time.Second, stop,
		func(w, i int) uint64 {
			if w == 0 {
				return uint64(i % 25) // writer 0 measures range 00-24
			}
			return uint64(w*1_000_000 + i*37%100)
		},
		func(w int, _ uint64) {
			if w == 0 {
				meter.ok(time.Now())
			}
		})
	waitMoreAcked(t, &a, 50, 30*time.Second)

	// move 00-24 to rz1 and back, measuring the write pause each time.
	var pauses []time.Duration
	for _, to := range []string{"rz1", "rz0", "rz2", "rz0"} {
		meter.reset()
		time.Sleep(300 * time.Millisecond)
		res, err := cl.PlacementAction(ctx, "move", client.PlacementRequest{Shards: "00-24", Zone: to})
		if err != nil {
			t.Fatalf("move to %s: %v", to, err)
		}
		want := map[string]string{}
		if to != "rz0" {
			want["g-00-24"] = to
		}
		waitPinned(t, cl, want, 60*time.Second)
		time.Sleep(300 * time.Millisecond)
		pause := meter.reset()
		pauses = append(pauses, pause)
		t.Logf("move 00-24 → %s (epoch %d): longest write pause on the range %v", to, res.Epoch, pause.Round(time.Millisecond))
	}
	sort.Slice(pauses, func(i, j int) bool { return pauses[i] < pauses[j] })
	t.Logf("write pause during move: median %v, max %v over %d moves", pauses[len(pauses)/2].Round(time.Millisecond), pauses[len(pauses)-1].Round(time.Millisecond), len(pauses))

	// drain one node, then a whole zone, and bring them back.
	for _, target := range []client.PlacementRequest{{Node: "rz0b"}, {Zone: "rz2"}} {
		if _, err := cl.PlacementAction(ctx, "drain", target); err != nil {
			t.Fatalf("drain %+v: %v", target, err)
		}
		waitFor2(t, cl, 90*time.Second, func(info *client.ClusterInfo) (bool, string) {
			for _, g := range info.Groups {
				for _, v := range append(append([]string{}, g.Voters...), g.Nonvoters...) {
					if v == target.Node || (target.Zone != "" && g.Zones[v] == target.Zone) {
						return false, fmt.Sprintf("%s still has a replica on %s", g.ID, v)
					}
				}
				if g.Leader == "" || !g.Pinned || len(g.Voters) != 3 || len(g.Desired) > 0 {
					return false, fmt.Sprintf("%s: leader %q pinned %v voters %v", g.ID, g.Leader, g.Pinned, g.Voters)
				}
			}
			return true, ""
		})
		t.Logf("drained %s%s", target.Node, target.Zone)
		if _, err := cl.PlacementAction(ctx, "undrain", target); err != nil {
			t.Fatalf("undrain %+v: %v", target, err)
		}
		waitPinned(t, cl, nil, 90*time.Second)
	}

	close(stop)
	wait()
	t.Logf("%d acknowledged writes", len(a.want))
	a.verify(t, cl)
	cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
	defer ccancel()
	if _, err := c.CompareReplicas(cctx); err != nil {
		t.Fatal(err)
	}
}

func TestStaleEpochRefusedAndRetried(t *testing.T) {
	c := startLDC(t)
	cl := newClient(t, c.Nodes...)
	info := waitPinned(t, cl, nil, 90*time.Second)
	var epoch uint64
	for _, g := range info.Groups {
		if g.ID == "g-00-24" {
			epoch = g.Epoch
		}
	}
	// A raw write carrying an older epoch is refused: 409, nothing applied.
	req, _ := http.NewRequest(http.MethodPut, "http://"+c.Nodes[1].HTTP+"/v1/kv/5/k", strings.NewReader("v"))
	req.Header.Set(client.HeaderEpoch, fmt.Sprint(epoch-1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("write with a stale epoch: %d, want 409", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cl.Get(ctx, 5, "k"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("a refused write was applied: %v", err)
	}

	// A client whose routing table predates a move is refused once, then
	// refreshes and retries.
	old := newClient(t, c.Nodes...)
	if _, err := old.Put(ctx, 5, "before", []byte("x")); err != nil {
		t.Fatal(err)
	}
	res, err := cl.PlacementAction(ctx, "move", client.PlacementRequest{Shards: "00-24", Zone: "rz1"})
	if err != nil {
		t.Fatal(err)
	}
	waitPlacementEverywhere(t, c, res.Version)
	v, err := old.Put(ctx, 5, "after", []byte("y"))
	if err != nil {
		t.Fatalf("write after the move: %v", err)
	}
	if old.StaleEpochRetries() == 0 {
		t.Fatal("the client's stale epoch was not refused")
	}
	got, err := cl.Get(ctx, 5, "after")
	if err != nil || got.Version != v {
		t.Fatalf("read back %v %v, want version %d", got, err, v)
	}
}
