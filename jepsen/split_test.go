package jepsen

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

func TestSplitUnderWrites(t *testing.T) {
	c := startLDC(t)
	cl := newClient(t, c.Nodes...)
	waitPinned(t, cl, nil, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var a acked

	// Preload keys over every shard of 00-24.
	const preload = 3000
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < preload; i += 16 {
				uid := uint64(i/25*100 + i%25)
				v, err := cl.Put(ctx, uid, "pre", []byte(fmt.Sprint(i)))
				if err != nil {
					errc <- err
					return
				}
				a.set(ackedValue{uid: uid, key: "pre", value: fmt.Sprint(i), version: v})
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	// Writers keep writing to 00-24 while it splits.
	stop := make(chan struct{})
	var meter pauseMeter
	wait := writeAcked(t, ctx, cl, &a, 4, loadOps, 10*time.Second, stop,
		func(w, i int) uint64 { return uint64(w*1_000_000 + (i*7)%25) }, // shards 00-24
		func(_ int, uid uint64) {
			if uid%100 >= 12 {
				meter.ok(time.Now())
			}
		})
	waitMoreAcked(t, &a, 50, 30*time.Second)
	meter.reset()
	start := time.Now()
	res, err := cl.PlacementAction(ctx, "split", client.PlacementRequest{Shards: "00-24", At: 12})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("split: %s", res.Change)
	// The routing switches: 00-11 stays in g-00-24, 12-24 is g-12-24.
	waitFor2(t, cl, 120*time.Second, func(info *client.ClusterInfo) (bool, string) {
		found := map[string]string{}
		for _, g := range info.Groups {
			found[g.ID] = g.Shards
			if g.Leader == "" || !g.Pinned || len(g.Voters) != 3 {
				return false, fmt.Sprintf("%s: leader %q voters %v", g.ID, g.Leader, g.Voters)
			}
		}
		if found["g-00-24"] != "00-11" || found["g-12-24"] != "12-24" {
			return false, fmt.Sprintf("groups %v", found)
		}
		return true, ""
	})
	took := time.Since(start)
	waitMoreAcked(t, &a, 20, 30*time.Second) // writes go on after the switch
	close(stop)
	wait()
	t.Logf("split of 00-24 (%d preloaded keys + writes) switched in %v; longest write pause on 12-24: %v", preload, took.Round(time.Millisecond), meter.reset().Round(time.Millisecond))
	var rt client.Routing
	if err := GetJSON(ctx, c.Nodes[0], "/v1/routing", &rt); err != nil || len(rt.Ranges) != 5 {
		t.Fatalf("routing after split: %+v %v", rt, err)
	}
	t.Logf("%d acknowledged writes", len(a.want))
	a.verify(t, cl)
	cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
	defer ccancel()
	counts, err := c.CompareReplicas(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts["g-12-24"] != 3 {
		t.Fatalf("new group has %d replicas", counts["g-12-24"])
	}
}
