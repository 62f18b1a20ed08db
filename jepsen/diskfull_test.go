package jepsen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

// TestDiskFull fills the disk of one of three nodes (its data directory on
// a 384 MiB tmpfs the test mounts, a 48 MiB balloon file beside it): once
// free space falls below --min-free-space the node raises the NOSPACE
// alarm, writes to every group with a replica there get 507, reads go on;
// the balloon is deleted and writes resume without a restart; after a
// restart of every node every acknowledged write reads back.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("TestDiskFull needs root to mount a small file system, and CI runs as root")
		}
		t.Skip("SKIPPED: TestDiskFull needs root to mount a tmpfs (CI runs it)")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=384m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { // after the cluster's cleanup (registered later, run first)
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	c := &Cluster{Bin: bin, Dir: dir, Args: append(append([]string{}, fastArgs...), "--min-free-space", "160MiB")}
	t.Cleanup(func() {
		c.Close()
		checkRaces(t, c)
		if t.Failed() {
			for _, node := range c.Nodes {
				dumpLog(t, node, 30)
			}
		}
	})
	for i := 1; i <= 3; i++ {
		n, err := c.NewNode(fmt.Sprintf("n%d", i), "z1", "c1")
		if err != nil {
			t.Fatal(err)
		}
		var join []string
		if i == 3 {
			n.DataDir = filepath.Join(mnt, "n3")
		}
		if i > 1 {
			join = []string{c.Nodes[0].Gossip}
		}
		if err := c.Start(n, join...); err != nil {
			t.Fatal(err)
		}
	}
	balloon := filepath.Join(mnt, "balloon")
	if err := os.WriteFile(balloon, make([]byte, 48<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	full := c.Nodes[2]
	cl := newClient(t, c.Nodes...)
	waitReplicated(t, cl, 3, c.Nodes, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Write 64 KiB values until the writes are refused.
	var a acked
	value := []byte(strings.Repeat("x", 64<<10))
	var refused error
	for i := 0; i < 6000 && refused == nil; i++ {
		uid := uint64(i*37%100 + 100*(i%7))
		key := fmt.Sprintf("k%d", i)
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := cl.Put(wctx, uid, key, value)
		wcancel()
		switch {
		case err == nil:
			a.set(ackedValue{uid: uid, key: key, value: string(value), version: v})
		case errors.Is(err, client.ErrNoSpace):
			refused = err
		case errors.Is(err, client.ErrIndeterminate), errors.Is(err, client.ErrUnavailable):
		default:
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if refused == nil {
		t.Fatalf("6000 writes of 64 KiB and no NOSPACE: the disk never filled (the test proves nothing)")
	}
	t.Logf("after %d acknowledged writes: %v", a.count(), refused)
	if !strings.Contains(refused.Error(), "NOSPACE") {
		t.Errorf("the refusal does not name the cause: %v", refused)
	}
	// Within a gossip round the alarm reaches every node: every write is
	// refused, on every group (n3 holds a replica of each), and reads go
	// on. What the others accepted meanwhile went into n3's reserve.
	waitFor(t, "writes to every range refused", 15*time.Second, func() (bool, string) {
		for s := 0; s < 100; s += 10 {
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			v, err := cl.Put(wctx, uint64(s), "more", []byte("x"))
			wcancel()
			if err == nil {
				a.set(ackedValue{uid: uint64(s), key: "more", value: "x", version: v})
			}
			if !errors.Is(err, client.ErrNoSpace) {
				return false, fmt.Sprintf("write to shard %02d: %v", s, err)
			}
		}
		return true, ""
	})
	n := 0
	for _, w := range a.want {
		if n++; n > 20 {
			break
		}
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		got, err := cl.Get(wctx, w.uid, w.key)
		wcancel()
		if err != nil || got.Version != w.version {
			t.Fatalf("read %d/%s while the disk is full: %+v %v", w.uid, w.key, got, err)
		}
	}
	// The alarm shows in the cluster view, ldcd status and the metric.
	waitFor2(t, cl, 30*time.Second, func(info *client.ClusterInfo) (bool, string) {
		for _, nd := range info.Nodes {
			if nd.Name == full.Name {
				return nd.Alarm == "nospace", fmt.Sprintf("%s alarm %q", nd.Name, nd.Alarm)
			}
		}
		return false, "n3 not listed"
	})
	out, err := exec.Command(bin, "status", "--endpoints", c.Nodes[0].HTTP).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "NOSPACE") {
		t.Errorf("ldcd status does not show the alarm: %v\n%s", err, out)
	}
	if m := metric(t, full, "ldcd_alarm_nospace"); m != "1" {
		t.Errorf("ldcd_alarm_nospace on %s = %q, want 1", full.Name, m)
	}

	// Space comes back: writes resume by themselves.
	if err := os.Remove(balloon); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	waitFor(t, "writes to resume once space is freed", 30*time.Second, func() (bool, string) {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		defer wcancel()
		v, err := cl.Put(wctx, 5, "after", []byte("space"))
		if err != nil {
			return false, err.Error()
		}
		a.set(ackedValue{uid: 5, key: "after", value: "space", version: v})
		return true, ""
	})
	t.Logf("writes resumed %v after the balloon was deleted", time.Since(freed).Round(time.Millisecond))
	if m := metric(t, full, "ldcd_alarm_nospace"); m != "0" {
		t.Errorf("ldcd_alarm_nospace on %s = %q after space came back, want 0", full.Name, m)
	}

	// Every node restarts; everything acknowledged is there.
	for _, nd := range c.Nodes {
		c.Stop(nd)
	}
	for i, nd := range c.Nodes {
		var join []string
		if i > 0 {
			join = []string{c.Nodes[0].Gossip}
		}
		if err := c.Start(nd, join...); err != nil {
			t.Fatal(err)
		}
	}
	waitReplicated(t, cl, 3, c.Nodes, 90*time.Second)
	verifyAll(t, ctx, c, cl, &a)
}
