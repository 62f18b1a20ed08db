package jepsen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

// cdcOf returns the CZone copy status of node from the cluster view.
func cdcOf(ctx context.Context, cl *client.Client, node string) (client.CDCInfo, bool) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := cl.Cluster(cctx)
	if err != nil {
		return client.CDCInfo{}, false
	}
	for _, c := range info.CDC {
		if c.Node == node {
			return c, true
		}
	}
	return client.CDCInfo{}, false
}

func TestCZoneCopies(t *testing.T) {
	c := startLDC(t, append(append([]string{}, fastArgs...), "--change-log-count", "300")...)
	byName := map[string]*Node{}
	for _, n := range c.Nodes {
		byName[n.Name] = n
	}
	cz1 := byName["cz1"]
	cz2, err := c.NewNode("cz2", "cz-sh", "sh")
	if err != nil {
		t.Fatal(err)
	}
	cz2.Args = []string{"--cdc-source", cz1.HTTP} // a cascade: cz2 follows cz1
	if err := c.Start(cz2, byName["gz1"].Gossip); err != nil {
		t.Fatal(err)
	}
	byName["cz2"] = cz2
	writers := newClient(t, byName["gz1"], byName["rz1a"], byName["rz2a"])
	waitPinned(t, writers, nil, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	rec := NewRecorder()
	stop := make(chan struct{})
	var writes, freshOK, inflight atomic.Int64
	var paused atomic.Bool // writers idle while copies are compared
	waitWriters := startLoad(4, loadOps, stop, func(w, i int) bool {
		inflight.Add(1)
		defer inflight.Add(-1)
		if paused.Load() {
			inflight.Add(-1)
			time.Sleep(20 * time.Millisecond) // idle, not synchronisation
			inflight.Add(1)
			return true
		}
		key := fmt.Sprintf("k%d", i%50)
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := writers.GlobalPut(wctx, key, []byte(fmt.Sprintf("w%d-%d", w, i)))
		wcancel()
		if err != nil {
			return true
		}
		writes.Add(1)
		// Read-your-writes across cities: min_index at the CZone.
		if i%20 == 0 {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/v1/global/%s?min_index=%d&timeout=2s", cz1.HTTP, key, v), nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				got, _ := strconv.ParseUint(resp.Header.Get(client.HeaderVersion), 10, 64)
				resp.Body.Close()
				if resp.StatusCode == 200 && got < v {
					t.Errorf("min_index=%d read at cz1 returned version %d", v, got)
				} else if resp.StatusCode == 200 {
					freshOK.Add(1)
				}
			}
		}
		return true
	})
	// Readers at cz1 record the applied index each read was served at.
	waitReaders := startLoad(2, loadOps, stop, func(p, i int) bool {
		op := Op{Process: p, F: "read", Node: "cz1", Call: rec.Now()}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/v1/global/k%d?max_staleness=1h", cz1.HTTP, i%50), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			time.Sleep(20 * time.Millisecond) // back off, not synchronisation
			return true
		}
		resp.Body.Close()
		if idx := resp.Header.Get(client.HeaderAppliedIndex); resp.StatusCode == 200 && idx != "" {
			op.Index, _ = strconv.ParseUint(idx, 10, 64)
			op.Status = StatusOK
			rec.Add(op)
		}
		return true
	})

	// converge pauses the writers and requires every copy of the global
	// group (three voters, cz1, cz2) to hold exactly the same data.
	converge := func(what string, copies int) {
		t.Helper()
		paused.Store(true)
		defer paused.Store(false)
		waitFor(t, "writes in flight to land", 30*time.Second, func() (bool, string) {
			n := inflight.Load()
			return n == 0, fmt.Sprintf("%d writers busy", n)
		})
		cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
		defer ccancel()
		counts, err := c.CompareReplicas(cctx)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if counts["global"] != copies {
			t.Fatalf("%s: compared %d copies of the global group, want %d", what, counts["global"], copies)
		}
		t.Logf("%s: all %d copies of the global group identical (%d writes so far)", what, counts["global"], writes.Load())
	}
	// Steady load: the copies keep up.
	waitFor(t, "writes to flow", 30*time.Second, func() (bool, string) {
		return writes.Load() > 100, fmt.Sprint(writes.Load())
	})
	waitFor(t, "cz1 and cz2 to follow", 30*time.Second, func() (bool, string) {
		a, ok1 := cdcOf(ctx, writers, "cz1")
		b, ok2 := cdcOf(ctx, writers, "cz2")
		return ok1 && ok2 && a.Connected && b.Connected && a.AppliedIndex > 0, fmt.Sprintf("%+v %+v", a, b)
	})
	converge("steady load", 5) // 3 voters, cz1, cz2

	// kill -9 of the follower under load, then restart.
	c.Kill(cz1)
	if err := c.Start(cz1); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cz1, 60*time.Second)
	converge("kill -9 of the follower under load, then restart", 5)
	// Kill cz1's source: it moves to another.
	var src client.CDCInfo
	waitFor(t, "cz1 to reconnect", 30*time.Second, func() (bool, string) {
		var ok bool
		src, ok = cdcOf(ctx, writers, "cz1")
		return ok && src.Connected, fmt.Sprintf("%+v", src)
	})
	var victim *Node
	for _, n := range c.Nodes {
		if n.HTTP == src.Source {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("cz1's source %s is not a node", src.Source)
	}
	c.Kill(victim)
	waitFor(t, "cz1 to follow another source", 30*time.Second, func() (bool, string) {
		s, ok := cdcOf(ctx, writers, "cz1")
		return ok && s.Connected && s.Source != victim.HTTP, fmt.Sprintf("%+v", s)
	})
	converge("kill -9 of the follower's source", 4) // the source is down
	if err := c.Start(victim); err != nil {
		t.Fatal(err)
	}
	waitReady(t, victim, 60*time.Second)
	converge("the source back", 5)

	// A gap longer than what the source keeps: cz1 is down while more than
	// 300 changes happen, then catches up from a snapshot (and cz2, which
	// follows cz1, from cz1's snapshot in turn).
	c.Kill(cz1)
	start := writes.Load()
	waitFor(t, "600 writes while cz1 is down", 60*time.Second, func() (bool, string) {
		return writes.Load()-start > 600, fmt.Sprint(writes.Load() - start)
	})
	if err := c.Start(cz1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cz1 to catch up from a snapshot", 60*time.Second, func() (bool, string) {
		s, ok := cdcOf(ctx, writers, "cz1")
		return ok && s.Snapshots > 0 && s.Connected, fmt.Sprintf("%+v", s)
	})
	converge("a gap longer than the source keeps (snapshot catch-up), and the cascade cz1 → cz2", 5)
	close(stop)
	waitWriters()
	waitReaders()

	if v := CheckMonotonic(rec.Ops()); !v.Valid {
		t.Fatalf("reads at cz1: %s", v)
	}
	t.Logf("%d reads at cz1, monotonic across its restarts; %d min_index reads fresh enough; %d global writes", len(rec.Ops()), freshOK.Load(), writes.Load())
	if freshOK.Load() == 0 {
		t.Fatal("no min_index read was checked")
	}
	if _, err := writers.GlobalGet(ctx, "k1", client.MinIndex(1)); err != nil && !errors.Is(err, client.ErrNotFound) {
		t.Fatal(err)
	}
}
