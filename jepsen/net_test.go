package jepsen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNetPartitionCutsTraffic(t *testing.T) {
	if err := NetAvailable(); err != nil {
		t.Skip(err)
	}
	nw, err := OpenNet()
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	c := &Cluster{Bin: bin, Dir: t.TempDir(), Args: append([]string{}, fastArgs...)}
	os.Chmod(c.Dir, 0o755)
	os.Chmod(filepath.Dir(c.Dir), 0o755) // t.TempDir nests in a private directory
	t.Cleanup(func() {
		c.Close()
		checkRaces(t, c)
		if t.Failed() {
			for _, n := range c.Nodes {
				dumpLog(t, n, 30)
			}
		}
	})
	for i := 1; i <= 3; i++ {
		n, err := c.NewNodeAt(fmt.Sprintf("n%d", i), "z1", "c1", fmt.Sprintf("127.0.0.%d", 40+i))
		if err != nil {
			t.Fatal(err)
		}
		if n.UID, n.GID, err = nodeUser(i); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(n.DataDir, 0o755)
		os.Chown(n.DataDir, int(n.UID), int(n.GID))
		var join []string
		if i > 1 {
			join = []string{c.Nodes[0].Gossip}
		}
		if err := c.Start(n, join...); err != nil {
			t.Fatal(err)
		}
	}
	cl := newClient(t, c.Nodes...)
	waitReplicated(t, cl, 3, c.Nodes, 60*time.Second)

	// Cut n3 off. The majority keeps serving every range through n1;
	// n3 cannot reach a leader.
	n1, n3 := c.Nodes[0], c.Nodes[2]
	if err := nw.Partition([]*Node{n3}, []*Node{c.Nodes[0], c.Nodes[1]}); err != nil {
		t.Fatal(err)
	}
	majority := newClient(t, n1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for s := 0; s < 100; s += 10 {
		waitFor(t, fmt.Sprintf("shard %d writable on the majority side", s), 30*time.Second, func() (bool, string) {
			wctx, wcancel := context.WithTimeout(ctx, time.Second)
			defer wcancel()
			_, err := majority.Put(wctx, uint64(s), "k", []byte("v"))
			return err == nil, fmt.Sprint(err)
		})
	}
	waitFor(t, "n3 to lose every leadership", 30*time.Second, func() (bool, string) {
		r := httpDo(t, "PUT", "http://"+n3.HTTP+"/v1/kv/1/k?timeout=1s", "v")
		return r.code == 503 || r.code == 504, fmt.Sprint(r.code)
	})
	// Heal: n3 serves again.
	if err := nw.Heal(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n3 to serve writes after healing", 30*time.Second, func() (bool, string) {
		r := httpDo(t, "PUT", "http://"+n3.HTTP+"/v1/kv/1/k?timeout=1s", "v")
		return r.code == 200, fmt.Sprint(r.code)
	})
	cctx, ccancel := context.WithTimeout(ctx, time.Minute)
	defer ccancel()
	if _, err := c.CompareReplicas(cctx); err != nil {
		t.Fatal(err)
	}
}
