package jepsen

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

// The measurements below report figures rather than assert them (the
// machines are shared and noisy); they run only with LDCD_MEASURE=1, via
// `make measure`. They use the default Raft timeouts (1s).

func needMeasure(t *testing.T) {
	if os.Getenv("LDCD_MEASURE") == "" {
		t.Skip("set LDCD_MEASURE=1 (make measure) to run the placement measurements")
	}
}

func summary(ds []time.Duration) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("p50 %v, max %v, n=%d", s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s))
}

func TestMeasureFailoverFailbackMove(t *testing.T) {
	needMeasure(t)
	runs := 10
	c := startLDC(t, "--log-level", "info")
	byName := map[string]*Node{}
	for _, n := range c.Nodes {
		byName[n.Name] = n
	}
	cl := newClient(t, c.Nodes...)
	waitPinned(t, cl, nil, 90*time.Second)
	ctx := context.Background()
	wcl := newClient(t, byName["gz1"], byName["rz1a"], byName["rz2a"])

	var failovers, failbacks []time.Duration
	for run := 0; run < runs; run++ {
		killed := time.Now()
		c.Kill(byName["rz0a"])
		c.Kill(byName["rz0b"])
		var worst time.Duration
		for _, uid := range []uint64{7, 33} {
			for {
				wctx, cancel := context.WithTimeout(ctx, time.Second)
				_, err := wcl.Put(wctx, uid, "probe", []byte("p"))
				cancel()
				if err == nil {
					break
				}
				if time.Since(killed) > time.Minute {
					t.Fatalf("run %d: uid %d not writable after a minute: %v", run, uid, err)
				}
			}
			worst = max(worst, time.Since(killed))
		}
		failovers = append(failovers, worst)
		returned := time.Now()
		c.Start(byName["rz0a"])
		c.Start(byName["rz0b"])
		waitPinned(t, cl, nil, 120*time.Second)
		failbacks = append(failbacks, time.Since(returned))
		t.Logf("run %d: failover %v, failback %v", run, worst.Round(time.Millisecond), failbacks[run].Round(time.Millisecond))
	}

	// Move 00-24 back and forth under a writer, measuring the pause.
	var meter pauseMeter
	stop := make(chan struct{})
	wait := startLoad(1, loadOps, stop, func(_, i int) bool {
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if _, err := wcl.Put(wctx, uint64(i%25), "m", []byte("x")); err == nil {
			meter.ok(time.Now())
		}
		cancel()
		return true
	})
	var pauses []time.Duration
	zones := []string{"rz1", "rz0"}
	for run := 0; run < runs; run++ {
		to := zones[run%2]
		time.Sleep(500 * time.Millisecond)
		meter.reset()
		if _, err := cl.PlacementAction(ctx, "move", client.PlacementRequest{Shards: "00-24", Zone: to}); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{}
		if to != "rz0" {
			want["g-00-24"] = to
		}
		waitPinned(t, cl, want, 60*time.Second)
		time.Sleep(300 * time.Millisecond)
		pauses = append(pauses, meter.reset())
	}
	close(stop)
	wait()
	t.Logf("FIGURES failover (kill -9 of the owner zone to the first successful write, worst of its two ranges): %s", summary(failovers))
	t.Logf("FIGURES failback (restart of the owner zone to every range pinned back): %s", summary(failbacks))
	t.Logf("FIGURES write pause during move: %s", summary(pauses))
}

func TestMeasureSplit100k(t *testing.T) {
	needMeasure(t)
	c := startLDC(t, "--log-level", "info")
	cl := newClient(t, c.Nodes...)
	waitPinned(t, cl, nil, 90*time.Second)
	ctx := context.Background()
	// 100k keys in 50-74: 1000 users × 100 keys, one transaction each.
	load := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := w; u < 1000; u += 16 {
				uid := uint64(u/25*100 + 50 + u%25)
				req := client.TxnRequest{}
				for k := 0; k < 100; k++ {
					req.Then = append(req.Then, client.Op{Op: "put", Key: fmt.Sprintf("k%03d", k), Value: "value-of-about-thirty-two-bytes"})
				}
				if _, err := cl.Txn(ctx, uid, req); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("loaded 100k keys in %v", time.Since(load).Round(time.Millisecond))
	var meter pauseMeter
	stop := make(chan struct{})
	wait := startLoad(1, loadOps, stop, func(_, i int) bool {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := cl.Put(wctx, uint64(62+i%13), "w", []byte("x")); err == nil {
			meter.ok(time.Now())
		}
		cancel()
		return true
	})
	time.Sleep(time.Second)
	meter.reset()
	start := time.Now()
	if _, err := cl.PlacementAction(ctx, "split", client.PlacementRequest{Shards: "50-74", At: 62}); err != nil {
		t.Fatal(err)
	}
	waitFor2(t, cl, 5*time.Minute, func(info *client.ClusterInfo) (bool, string) {
		for _, g := range info.Groups {
			if g.ID == "g-62-74" && g.Shards == "62-74" && g.Leader != "" {
				return true, ""
			}
		}
		return false, "not switched"
	})
	took := time.Since(start)
	time.Sleep(time.Second)
	close(stop)
	wait()
	t.Logf("FIGURES split of 50-74 holding 100k keys (52k moving) at 62: request to routing switch %v; longest write pause on 62-74 %v", took.Round(time.Millisecond), meter.reset().Round(time.Millisecond))
	for u := 0; u < 1000; u += 97 {
		uid := uint64(u/25*100 + 50 + u%25)
		lr, err := cl.List(ctx, uid, "k", 200)
		if err != nil || len(lr.KVs) != 100 {
			t.Fatalf("uid %d after split: %d keys, %v", uid, len(lr.KVs), err)
		}
	}
}

func TestMeasureCDC(t *testing.T) {
	needMeasure(t)
	c := startLDC(t, "--log-level", "info", "--change-log-count", "250000")
	byName := map[string]*Node{}
	for _, n := range c.Nodes {
		byName[n.Name] = n
	}
	cz1 := byName["cz1"]
	cl := newClient(t, byName["gz1"], byName["rz1a"], byName["rz2a"])
	waitPinned(t, cl, nil, 90*time.Second)
	ctx := context.Background()
	waitFor(t, "cz1 following", 30*time.Second, func() (bool, string) {
		s, ok := cdcOf(ctx, cl, "cz1")
		return ok && s.Connected, fmt.Sprint(s)
	})

	// Sustained global writes; a prober measures write-ack to visible at
	// the CZone node (a min_index read, which waits for the copy).
	stop := make(chan struct{})
	wait := startLoad(8, loadOps, stop, func(w, i int) bool {
		cl.GlobalPut(ctx, fmt.Sprintf("load-%d-%d", w, i%100), []byte("x"))
		return true
	})
	var lags []time.Duration
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		v, err := cl.GlobalPut(ctx, "probe", []byte("p"))
		if err != nil {
			continue
		}
		acked := time.Now()
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v1/global/probe?min_index=%d", cz1.HTTP, v), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.Header.Get(client.HeaderAppliedIndex) != "" {
			lags = append(lags, time.Since(acked))
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wait()
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	q := func(p float64) time.Duration { return lags[int(p*float64(len(lags)-1))] }
	t.Logf("FIGURES CZone replication lag under 8 global writers (write ack to visible at the CZone node, %d probes): p50 %v, p99 %v, max %v",
		len(lags), q(0.5).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond), lags[len(lags)-1].Round(10*time.Microsecond))

	// Catch-up: 100k changes while the CZone node is down.
	c.Kill(cz1)
	load := time.Now()
	var n atomic.Int64
	startLoad(16, loadOps, nil, func(_, _ int) bool {
		k := n.Add(1)
		if k > 100_000 {
			return false
		}
		for try := 0; try < 100; try++ { // retried: each change must land
			if _, err := cl.GlobalPut(ctx, fmt.Sprintf("bulk-%d", k%5000), []byte("value-of-thirty-two-bytes-......")); err == nil {
				break
			}
		}
		return true
	})()
	target := uint64(0)
	info, _ := cl.Cluster(ctx)
	for _, g := range info.Groups {
		if g.ID == "global" {
			target = g.AppliedIndex
		}
	}
	t.Logf("wrote 100k global changes in %v while cz1 was down (global index %d)", time.Since(load).Round(time.Millisecond), target)
	restart := time.Now()
	if err := c.Start(cz1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cz1 to catch up", 5*time.Minute, func() (bool, string) {
		var h struct {
			Groups []Digest `json:"groups"`
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := GetJSON(cctx, cz1, "/v1/internal/digest", &h); err != nil {
			return false, err.Error()
		}
		for _, g := range h.Groups {
			if g.ID == "global" && g.AppliedIndex >= target {
				return true, ""
			}
		}
		return false, fmt.Sprint(h.Groups)
	})
	t.Logf("FIGURES CZone catch-up of 100k changes after a restart: %v (process start to applied index %d)", time.Since(restart).Round(time.Millisecond), target)
}
