package jepsen

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

func TestChangeFeedExactlyOnce(t *testing.T) {
	c := startCluster(t, 3)
	cl := newClient(t, c.Nodes...)
	waitReplicated(t, cl, 3, c.Nodes, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Follow g-00-09 from its first index.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	events := cl.Watch(wctx, "g-00-09", 1)
	type seen struct{ index, version uint64 }
	var mu sync.Mutex
	got := map[string][]seen{} // uid/key → puts seen
	var lastIndex, lastHeartbeat uint64
	var orderErr error
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		for ev := range events {
			mu.Lock()
			switch {
			case ev.Err != nil:
				orderErr = ev.Err
			case ev.Heartbeat:
				lastHeartbeat = ev.Index
			default:
				if ev.Index <= lastIndex && orderErr == nil {
					orderErr = fmt.Errorf("index %d after %d: out of order or duplicated", ev.Index, lastIndex)
				}
				lastIndex = ev.Index
				for _, ch := range ev.Changes {
					if ch.Op == "put" && ch.Space == "user" {
						k := fmt.Sprintf("%d/%s", *ch.UID, ch.Key)
						got[k] = append(got[k], seen{ev.Index, ch.Version})
					}
				}
			}
			mu.Unlock()
		}
	}()

	// Writers on shards 00-09 while the busiest leader is killed and
	// restarted.
	var a acked
	stop := make(chan struct{})
	wait := writeAcked(t, ctx, cl, &a, 4, 100000, 2*time.Second, stop,
		func(w, i int) uint64 { return uint64(w*1000 + i%10) }, nil) // shards 00-09
	waitMoreAcked(t, &a, 50, 30*time.Second)
	info, err := cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var victim *Node
	for _, n := range c.Nodes {
		if n.Name == leaderCounts(info)[0] {
			victim = n
		}
	}
	c.Kill(victim)
	waitMoreAcked(t, &a, 50, 30*time.Second) // the group took writes without the victim
	if err := c.Start(victim); err != nil {
		t.Fatal(err)
	}
	waitReady(t, victim, 60*time.Second)
	waitMoreAcked(t, &a, 50, 30*time.Second)
	close(stop)
	wait()

	var maxVersion uint64
	for _, w := range a.want {
		maxVersion = max(maxVersion, w.version)
	}
	waitFor(t, fmt.Sprintf("the feed to reach index %d", maxVersion), 60*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return lastHeartbeat >= maxVersion && lastIndex > 0, fmt.Sprintf("heartbeat %d, last change %d", lastHeartbeat, lastIndex)
	})
	wcancel()
	<-feedDone
	if orderErr != nil {
		t.Fatal(orderErr)
	}
	missing := 0
	for _, w := range a.want {
		s := got[fmt.Sprintf("%d/%s", w.uid, w.key)]
		if len(s) != 1 || s[0].version != w.version || s[0].index != w.version {
			missing++
			if missing < 5 {
				t.Errorf("%d/%s acknowledged at %d; the feed showed %v", w.uid, w.key, w.version, s)
			}
		}
	}
	t.Logf("%d acknowledged writes, each seen exactly once; feed reached index %d", len(a.want), lastIndex)
	if missing > 0 {
		t.Fatalf("%d acknowledged writes not seen exactly once", missing)
	}

	// A from older than what is kept is not served: 410 with the oldest
	// index (no pruning here, so from 1 is fine, and the snapshot works).
	for _, n := range c.Nodes {
		waitReady(t, n, 60*time.Second)
	}
	resp, err := http.Get("http://" + c.Nodes[0].HTTP + "/v1/changes/g-00-09/snapshot")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("snapshot: %v %v", resp, err)
	}
	resp.Body.Close()
}
