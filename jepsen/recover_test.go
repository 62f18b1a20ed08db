package jepsen

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

// TestRecoverLostQuorum kills two of a group's three voters for good. The
// group shows as unavailable (ldcd status, /v1/cluster); ldcd recover
// --dry-run names the survivor and what may be lost; ldcd recover rebuilds
// the group from it; the range takes writes again with every write it had
// acknowledged before, the placement driver gives it three voters again, and
// the event is recorded in the global group.
func TestRecoverLostQuorum(t *testing.T) {
	c := startCluster(t, 5, "--dead-node-timeout", "3s")
	cl := newClient(t, c.Nodes...)
	info := waitReplicated(t, cl, 3, c.Nodes, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// A range two of whose voters can die without taking the global
	// group's quorum (the placement driver must go on).
	var global []string
	for _, g := range info.Groups {
		if g.ID == "global" {
			global = g.Voters
		}
	}
	var gid string
	var victims []string
	var lo int
	for _, g := range info.Groups {
		if g.ID == "global" || gid != "" {
			continue
		}
		for i := 0; i < len(g.Voters) && gid == ""; i++ {
			for j := i + 1; j < len(g.Voters) && gid == ""; j++ {
				pair := []string{g.Voters[i], g.Voters[j]}
				inGlobal := 0
				for _, v := range pair {
					if slices.Contains(global, v) {
						inGlobal++
					}
				}
				if inGlobal <= 1 {
					gid, victims = g.ID, pair
					lo, _ = strconv.Atoi(g.Shards[:2])
				}
			}
		}
	}
	if gid == "" {
		t.Fatalf("no group has two voters outside a global majority (global voters %v)", global)
	}
	slices.Sort(victims) // as the view lists lost voters
	t.Logf("%s loses %v for good", gid, victims)
	var a acked
	for i := 0; i < 50; i++ {
		uid := uint64(i*100 + lo)
		key := fmt.Sprintf("k%d", i)
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := cl.Put(wctx, uid, key, []byte(key))
		wcancel()
		if err != nil {
			t.Fatal(err)
		}
		a.set(ackedValue{uid: uid, key: key, value: key, version: v})
	}
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	if _, err := c.CompareReplicas(cctx); err != nil { // every replica holds the writes
		t.Fatal(err)
	}
	ccancel()
	var survivors []*Node
	for _, n := range c.Nodes {
		if slices.Contains(victims, n.Name) {
			c.Kill(n)
		} else {
			survivors = append(survivors, n)
		}
	}
	scl := newClient(t, survivors...)
	// Every group settles as served or unavailable: gid and any other
	// whose majority was on the victims.
	var unavailable []string
	waitFor2(t, scl, 90*time.Second, func(info *client.ClusterInfo) (bool, string) {
		unavailable = nil
		for _, g := range info.Groups {
			switch {
			case g.Status == "unavailable":
				if !slices.Equal(g.LostVoters, victims) {
					return false, fmt.Sprintf("%s: lost %v", g.ID, g.LostVoters)
				}
				unavailable = append(unavailable, g.ID)
			case g.Status != "ok":
				return false, fmt.Sprintf("%s: status %q", g.ID, g.Status)
			}
		}
		if !slices.Contains(unavailable, gid) {
			return false, gid + " not unavailable"
		}
		return true, ""
	})
	t.Logf("unavailable: %v", unavailable)
	ldcd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cmd.Environ(), "LDCD_ENDPOINTS="+survivors[0].HTTP)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ldcd %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := ldcd("status"); !strings.Contains(out, gid+" is unavailable") {
		t.Errorf("ldcd status does not say %s is unavailable:\n%s", gid, out)
	}
	dry := ldcd("recover", "--group", gid, "--dry-run")
	t.Logf("ldcd recover --dry-run:\n%s", dry)
	for _, want := range []string{"(chosen)", "may be lost: writes acknowledged after index", "dry run: nothing changed"} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run output lacks %q", want)
		}
	}
	// Still unavailable: the dry run changed nothing.
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := scl.Put(wctx, uint64(lo), "during", []byte("x")); err == nil {
		t.Error("a write succeeded before the recovery")
	}
	wcancel()

	for _, id := range unavailable {
		out := ldcd("recover", "--group", id)
		t.Logf("ldcd recover --group %s:\n%s", id, out)
		for _, want := range []string{"recovered: " + id, "recorded in the global group as _ldcd/recoveries/" + id + "/"} {
			if !strings.Contains(out, want) {
				t.Errorf("recover output lacks %q", want)
			}
		}
		if strings.Contains(out, "WARNING") {
			t.Errorf("recover of %s warned", id)
		}
	}
	waitFor(t, gid+" to take writes after the recovery", 30*time.Second, func() (bool, string) {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		defer wcancel()
		v, err := scl.Put(wctx, uint64(lo), "after", []byte("recovery"))
		if err != nil {
			return false, err.Error()
		}
		a.set(ackedValue{uid: uint64(lo), key: "after", value: "recovery", version: v})
		return true, ""
	})
	// Asking again is refused: the group has a leader now.
	cmd := exec.Command(bin, "recover", "--group", gid, "--endpoints", survivors[0].HTTP)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "has a leader") {
		t.Errorf("a second recover: err %v, output %s", err, out)
	}
	waitReplicated(t, scl, 3, survivors, 120*time.Second)
	verifyAll(t, ctx, c, scl, &a)
}
