package jepsen

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

// ldcTopology is the runner's: two cities, a GZone, three RZones, a CZone.
const ldcTopology = runTopology

// startLDC starts a two-city LDC: gz1 (GZone, bootstraps with the
// topology), two nodes in rz0, one in rz1, one in rz2, one in the CZone.
func startLDC(t *testing.T, args ...string) *Cluster {
	t.Helper()
	if len(args) == 0 {
		args = fastArgs
	}
	return startLDCWith(t, &Cluster{Bin: bin, Dir: t.TempDir(), Args: append([]string{}, args...)})
}

// startLDCWith starts startLDC's nodes in c (its binary, flags and
// environment set).
func startLDCWith(t *testing.T, c *Cluster) *Cluster {
	t.Helper()
	t.Cleanup(func() {
		c.Close()
		checkRaces(t, c)
		if t.Failed() {
			for _, node := range c.Nodes {
				dumpLog(t, node, 40)
			}
		}
	})
	topo := filepath.Join(c.Dir, "topology.yaml")
	writeFile(t, topo, ldcTopology)
	for i, spec := range []struct{ name, zone, city string }{
		{"gz1", "gz", "hz"}, {"rz0a", "rz0", "hz"}, {"rz0b", "rz0", "hz"}, {"rz1a", "rz1", "hz"}, {"rz2a", "rz2", "sh"}, {"cz1", "cz-sh", "sh"},
	} {
		n, err := c.NewNode(spec.name, spec.zone, spec.city)
		if err != nil {
			t.Fatal(err)
		}
		var join []string
		if i == 0 {
			n.Args = []string{"--topology", topo}
		} else {
			join = []string{c.Nodes[0].Gossip}
		}
		if err := c.Start(n, join...); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// waitPinned waits until every group has a leader in its serving zone and
// three voters in three zones, none in the CZone, and the serving zones are
// as want says (group → zone; groups not named: their owner zone).
func waitPinned(t *testing.T, cl *client.Client, want map[string]string, timeout time.Duration) *client.ClusterInfo {
	t.Helper()
	var info *client.ClusterInfo
	waitFor(t, fmt.Sprintf("every leader pinned (serving %v)", want), timeout, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		if info, err = cl.Cluster(ctx); err != nil {
			return false, err.Error()
		}
		if len(info.Groups) != 5 {
			return false, fmt.Sprintf("%d groups", len(info.Groups))
		}
		for _, g := range info.Groups {
			serving := g.OwnerZone
			if z, ok := want[g.ID]; ok {
				serving = z
			}
			if g.Leader == "" || !g.Pinned || g.ServingZone != serving || g.LeaderZone != serving {
				return false, fmt.Sprintf("%s: leader %s@%s serving %s pinned %v, want serving %s", g.ID, g.Leader, g.LeaderZone, g.ServingZone, g.Pinned, serving)
			}
			zones := map[string]bool{}
			for _, v := range g.Voters {
				zones[g.Zones[v]] = true
				if g.Zones[v] == "cz-sh" {
					return false, fmt.Sprintf("%s has a voter in the czone", g.ID)
				}
			}
			if len(g.Voters) != 3 || len(zones) != 3 || len(g.Nonvoters) != 0 {
				return false, fmt.Sprintf("%s: voters %v in zones %v", g.ID, g.Voters, g.Zones)
			}
		}
		return true, ""
	})
	return info
}

func TestZoneFailoverAndFailback(t *testing.T) {
	c := startLDC(t)
	byName := map[string]*Node{}
	for _, n := range c.Nodes {
		byName[n.Name] = n
	}
	cl := newClient(t, c.Nodes...)
	before := waitPinned(t, cl, nil, 90*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var a acked
	stop := make(chan struct{})
	wcl := newClient(t, byName["gz1"], byName["rz1a"], byName["rz2a"])
	wait := writeAcked(t, ctx, wcl, &a, 4, 100000, 2*time.Second, stop,
		func(w, i int) uint64 { return uint64(w*1_000_000 + i*37%100) }, nil)
	waitMoreAcked(t, &a, 50, 30*time.Second)

	// The owner zone of 00-49 dies.
	killed := time.Now()
	c.Kill(byName["rz0a"])
	c.Kill(byName["rz0b"])
	for _, uid := range []uint64{7, 33} { // shards 07 (g-00-24) and 33 (g-25-49)
		waitWritable(t, ctx, wcl, &a, uid, "after rz0 died", 30*time.Second)
		t.Logf("uid %d (shard %02d) took writes %v after rz0 was killed", uid, uid%100, time.Since(killed).Round(time.Millisecond))
	}
	// The serving zones follow the failover lists, as far as each group
	// has a voter there.
	after := waitFor2(t, cl, 30*time.Second, func(info *client.ClusterInfo) (bool, string) {
		for _, g := range info.Groups {
			if g.OwnerZone == "rz0" && (g.ServingZone == "rz0" || g.ServingZone == "" || !g.Pinned || g.Epoch == 0) {
				return false, fmt.Sprintf("%s serving %s pinned %v", g.ID, g.ServingZone, g.Pinned)
			}
		}
		return true, ""
	})
	if after.Epoch <= before.Epoch {
		t.Errorf("routing epoch %d after failover, was %d", after.Epoch, before.Epoch)
	}
	for _, g := range after.Groups {
		if g.OwnerZone != "rz0" {
			continue
		}
		failover := map[string][]string{"g-00-24": {"rz1", "rz2"}, "g-25-49": {"rz2", "rz1"}}[g.ID]
		want := ""
		for _, z := range failover {
			for _, v := range g.Voters {
				if g.Zones[v] == z && want == "" {
					want = z
				}
			}
		}
		if g.ServingZone != want {
			t.Errorf("%s failed over to %s, want %s (first zone of %v holding a voter)", g.ID, g.ServingZone, want, failover)
		}
	}

	// rz0 returns: once caught up, leadership goes back.
	returned := time.Now()
	for _, n := range []string{"rz0a", "rz0b"} {
		if err := c.Start(byName[n]); err != nil {
			t.Fatal(err)
		}
	}
	waitPinned(t, cl, nil, 60*time.Second)
	t.Logf("failback: every group pinned to its owner zone %v after rz0 restarted", time.Since(returned).Round(time.Millisecond))

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

// waitFor2 polls the cluster view until cond holds.
func waitFor2(t *testing.T, cl *client.Client, timeout time.Duration, cond func(*client.ClusterInfo) (bool, string)) *client.ClusterInfo {
	t.Helper()
	var info *client.ClusterInfo
	waitFor(t, "cluster condition", timeout, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		if info, err = cl.Cluster(ctx); err != nil {
			return false, err.Error()
		}
		return cond(info)
	})
	return info
}
