package jepsen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

// TestBitFlipRebuilt stops a follower, flips one bit in the middle of its
// newest log segment, and restarts it. The node must start, report its
// damaged replicas (log line naming the file and offset, /v1/cluster,
// ldcd_replica_damaged), never serve or vote from them; the groups keep
// taking writes from the other two replicas; the leaders remove the
// damaged replicas, the node wipes them, and they are added back as
// learners and rebuilt; at the end every replica of every group is
// identical and every acknowledged write reads back.
func TestBitFlipRebuilt(t *testing.T) {
	c := startCluster(t, 3)
	cl := newClient(t, c.Nodes...)
	waitReplicated(t, cl, 3, c.Nodes, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var a acked
	stopWriters := startWriters(t, ctx, cl, &a, 4, 3*time.Second,
		func(w, i int) uint64 { return uint64(w*1_000_000 + i*37%100) })
	defer stopWriters()
	waitMoreAcked(t, &a, 300, 60*time.Second)

	victim := c.Nodes[2]
	c.Stop(victim)
	segs, err := filepath.Glob(filepath.Join(victim.DataDir, "shared-log", "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no log segments on %s: %v", victim.Name, err)
	}
	newest := segs[len(segs)-1]
	b, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	if end < 4096 {
		t.Fatalf("%s holds %d bytes: too little to flip a bit in its middle", newest, end)
	}
	at := end / 2
	b[at] ^= 0x04
	if err := os.WriteFile(newest, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped a bit at offset %d of %s (%d bytes written)", at, filepath.Base(newest), end)
	waitMoreAcked(t, &a, 50, 30*time.Second) // the others go on
	if err := c.Start(victim); err != nil {
		t.Fatal(err)
	}

	// Reported: the view names the damaged replicas, the log the file.
	waitFor2(t, cl, 60*time.Second, func(info *client.ClusterInfo) (bool, string) {
		for _, g := range info.Groups {
			for _, n := range g.Damaged {
				if n == victim.Name {
					return true, ""
				}
			}
		}
		return false, "no damaged replica reported"
	})
	logb, _ := os.ReadFile(victim.LogPath)
	if !strings.Contains(string(logb), "shared log damaged") || !strings.Contains(string(logb), filepath.Base(newest)) {
		t.Errorf("%s's log does not report the damaged file %s", victim.Name, filepath.Base(newest))
	}
	if m := metricLine(t, victim, "ldcd_replica_damaged{"); m == "" {
		t.Errorf("ldcd_replica_damaged not exported by %s", victim.Name)
	}
	waitMoreAcked(t, &a, 50, 30*time.Second) // still serving

	// Rebuilt: three voters everywhere again, none damaged.
	waitReplicated(t, cl, 3, c.Nodes, 120*time.Second)
	waitFor2(t, cl, 120*time.Second, func(info *client.ClusterInfo) (bool, string) {
		for _, g := range info.Groups {
			if len(g.Damaged) > 0 || len(g.Voters) != 3 {
				return false, fmt.Sprintf("%s: damaged on %v, voters %v", g.ID, g.Damaged, g.Voters)
			}
		}
		return true, ""
	})
	waitMoreAcked(t, &a, 50, 30*time.Second)
	stopWriters()
	counts := verifyAll(t, ctx, c, cl, &a)
	for gid, n := range counts {
		if n != 3 {
			t.Errorf("%s: %d replicas compared, want 3", gid, n)
		}
	}
}
