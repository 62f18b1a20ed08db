package raftgroup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/ldcd/ldcd/store"
)

type testNode struct {
	name, dir, addr string
	h               *Host
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("LDCD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startNode(t testing.TB, name, dir, addr string, tune func(*Config)) *testNode {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // a restarted node may wait for its old port
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeID = name
	cfg.DataDir = dir
	cfg.Listener = ln
	cfg.Advertise = ln.Addr().String()
	cfg.Logger = testLogger(t).With("node", name)
	cfg.HeartbeatTimeout = 300 * time.Millisecond
	cfg.ElectionTimeout = 300 * time.Millisecond
	cfg.LeaderLeaseTimeout = 300 * time.Millisecond
	cfg.LeaderHeartbeatTimeout = 750 * time.Millisecond
	if tune != nil {
		tune(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{name: name, dir: dir, addr: ln.Addr().String(), h: h}
	t.Cleanup(func() { n.h.Close() })
	return n
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leaderOf(nodes []*testNode, id string) *Group {
	for _, n := range nodes {
		if n == nil {
			continue
		}
		if g, ok := n.h.Group(id); ok && g.IsLeader() {
			return g
		}
	}
	return nil
}

// followerIndex returns the index in nodes of a node whose replica of id
// is not l.
func followerIndex(t testing.TB, nodes []*testNode, id string, l *Group) int {
	t.Helper()
	for i, n := range nodes {
		if g, _ := n.h.Group(id); g != l {
			return i
		}
	}
	t.Fatalf("%s has no follower", id)
	return -1
}

func waitLeader(t testing.TB, nodes []*testNode, id string) *Group {
	t.Helper()
	var g *Group
	waitFor(t, "a leader of "+id, 10*time.Second, func() bool { g = leaderOf(nodes, id); return g != nil })
	return g
}

func putCmd(k, v string) *store.Command {
	return &store.Command{Then: []store.Op{{Type: store.OpPut, Key: []byte(k), Value: []byte(v)}}}
}

// applyRetry applies cmd at whichever node leads, retrying definite failures.
func applyRetry(t testing.TB, nodes []*testNode, id string, cmd *store.Command) *store.Result {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		g := leaderOf(nodes, id)
		if g == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := g.Apply(ctx, cmd)
		cancel()
		if err == nil {
			return r
		}
		if !errors.Is(err, ErrNotLeader) {
			t.Fatalf("apply: %v", err)
		}
	}
	t.Fatal("no leader accepted the write")
	return nil
}

// grow adds every other node to group id, as a nonvoter first, then promotes.
func grow(t testing.TB, nodes []*testNode, id string) {
	t.Helper()
	for _, n := range nodes[1:] {
		if _, err := n.h.Create(id, nil); err != nil {
			t.Fatal(err)
		}
		l := waitLeader(t, nodes, id)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := l.AddNonvoter(ctx, n.name, n.addr); err != nil {
			t.Fatal(err)
		}
		g, _ := n.h.Group(id)
		waitFor(t, n.name+" catching up", 10*time.Second, func() bool { return g.Store().AppliedIndex() >= l.Store().AppliedIndex() })
		if err := l.AddVoter(ctx, n.name, n.addr); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
}

// digests compares every running replica of group id once they have
// applied the same index.
func checkReplicasAgree(t testing.TB, nodes []*testNode, id string) {
	t.Helper()
	var groups []*Group
	for _, n := range nodes {
		if n == nil {
			continue
		}
		if g, ok := n.h.Group(id); ok {
			groups = append(groups, g)
		}
	}
	l := waitLeader(t, nodes, id)
	target := l.Store().AppliedIndex()
	for _, g := range groups {
		waitFor(t, "replicas applying "+fmt.Sprint(target), 10*time.Second, func() bool { return g.Store().AppliedIndex() >= target })
	}
	var first []byte
	for i, g := range groups {
		var b bytes.Buffer
		if _, err := g.Store().Digest(&b); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = b.Bytes()
		} else if !bytes.Equal(first, b.Bytes()) {
			t.Fatalf("replica %d of %s differs from replica 0", i, id)
		}
	}
	if len(first) == 0 {
		t.Fatalf("replicas of %s are empty", id)
	}
}

func threeNodes(t testing.TB, tune func(*Config)) []*testNode {
	root := t.TempDir()
	var nodes []*testNode
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("n%d", i)
		nodes = append(nodes, startNode(t, name, filepath.Join(root, name), "", tune))
	}
	return nodes
}

func bootstrap(t testing.TB, nodes []*testNode, ids ...string) {
	for _, id := range ids {
		if _, err := nodes[0].h.Create(id, []raft.Server{{ID: raft.ServerID(nodes[0].name), Address: raft.ServerAddress(nodes[0].addr)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		waitLeader(t, nodes, id)
		grow(t, nodes, id)
	}
}

func TestManyGroupsOneListener(t *testing.T) {
	nodes := threeNodes(t, nil)
	ids := []string{"global", "g-00-09", "g-10-19", "g-20-29"}
	bootstrap(t, nodes, ids...)
	for _, id := range ids {
		for i := 0; i < 20; i++ {
			applyRetry(t, nodes, id, putCmd(fmt.Sprintf("k%d", i), id))
		}
		l := waitLeader(t, nodes, id)
		st := l.Status()
		voters := 0
		for _, s := range st.Servers {
			if s.Voter {
				voters++
			}
		}
		if voters != 3 {
			t.Fatalf("%s has %d voters, want 3: %+v", id, voters, st.Servers)
		}
	}
	for _, id := range ids {
		checkReplicasAgree(t, nodes, id)
	}
}

// TestSharedConnections: with SharedConnections every group's Raft traffic
// from one node to another travels in one TCP connection (yamux streams),
// the groups replicate as before, a restarted peer is reached again, and a
// node without it talks with nodes that have it.
func TestSharedConnections(t *testing.T) {
	for _, mode := range []string{"shared", "mixed", "off"} {
		t.Run(mode, func(t *testing.T) {
			nodes := threeNodes(t, func(c *Config) {
				c.SharedConnections = mode == "shared" || (mode == "mixed" && c.NodeID != "n1")
			})
			ids := []string{"g0", "g1", "g2", "g3", "g4", "g5"}
			bootstrap(t, nodes, ids...)
			write := func(tag string) {
				for _, id := range ids {
					for i := 0; i < 10; i++ {
						applyRetry(t, nodes, id, putCmd(fmt.Sprintf("k%d", i), tag))
					}
				}
			}
			write("before")
			// What the nodes accepted: a session per node pair and
			// direction when they share connections, a pool per group and
			// peer when not.
			var accepted int64
			for _, n := range nodes {
				accepted += n.h.mux.accepted.Load()
			}
			switch {
			case mode == "shared" && accepted > 6:
				t.Errorf("3 nodes sharing connections accepted %d, want at most 6", accepted)
			case mode == "off" && accepted < int64(2*len(ids)):
				t.Errorf("3 nodes without shared connections accepted %d for %d groups: the shared check above could not fail", accepted, len(ids))
			}
			t.Logf("%s: %d connections accepted", mode, accepted)
			// Restart a node: its peers' sessions to it failed and are
			// dialled again.
			victim := nodes[2]
			victim.h.Close()
			nodes[2] = startNode(t, victim.name, victim.dir, victim.addr, func(c *Config) {
				c.SharedConnections = mode != "off"
			})
			write("after")
			for _, id := range ids {
				checkReplicasAgree(t, nodes, id)
			}
		})
	}
}

// TestLeaderKillRestartCatchUp runs with each log kind: the restarted node
// reopens its log, and installs a snapshot past it.
func TestLeaderKillRestartCatchUp(t *testing.T) {
	for _, kind := range []string{LogWAL, LogShared} {
		t.Run("log="+kind, func(t *testing.T) { testLeaderKillRestartCatchUp(t, kind) })
	}
}

func testLeaderKillRestartCatchUp(t *testing.T, kind string) {
	nodes := threeNodes(t, func(c *Config) {
		c.SnapshotThreshold = 50
		c.TrailingLogs = 10
		c.SnapshotInterval = 100 * time.Millisecond
		c.LogStore = kind
	})
	bootstrap(t, nodes, "g-00-09")
	for i := 0; i < 30; i++ {
		applyRetry(t, nodes, "g-00-09", putCmd(fmt.Sprintf("k%d", i), "before"))
	}
	// Kill the leader's host: the others elect a new leader and take writes.
	l := waitLeader(t, nodes, "g-00-09")
	var dead int
	for i, n := range nodes {
		if g, _ := n.h.Group("g-00-09"); g == l {
			dead = i
		}
	}
	victim := nodes[dead]
	victim.h.Close()
	nodes[dead] = nil
	for i := 0; i < 300; i++ {
		applyRetry(t, nodes, "g-00-09", putCmd(fmt.Sprintf("k%d", i%40), fmt.Sprintf("after-%d", i)))
	}
	// Restart it from disk: it reopens the group and catches up (from a
	// snapshot, since the log was compacted past what it had).
	nodes[dead] = startNode(t, victim.name, victim.dir, victim.addr, func(c *Config) { c.SnapshotThreshold = 50; c.TrailingLogs = 10; c.LogStore = kind })
	if _, ok := nodes[dead].h.Group("g-00-09"); !ok {
		t.Fatal("restarted host did not reopen its group")
	}
	applyRetry(t, nodes, "g-00-09", putCmd("final", "x"))
	checkReplicasAgree(t, nodes, "g-00-09")
	_, walErr := os.Stat(filepath.Join(victim.dir, "groups", "g-00-09", "wal"))
	_, markErr := os.Stat(filepath.Join(victim.dir, "groups", "g-00-09", sharedMarker))
	if (walErr == nil) != (kind == LogWAL) || (markErr == nil) != (kind == LogShared) {
		t.Fatalf("log kind %s: wal dir %v, shared marker %v", kind, walErr, markErr)
	}
}

func TestLinearizableReadOnlyAtLeader(t *testing.T) {
	nodes := threeNodes(t, nil)
	bootstrap(t, nodes, "g-00-09")
	applyRetry(t, nodes, "g-00-09", putCmd("k", "v"))
	l := waitLeader(t, nodes, "g-00-09")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Many concurrent readers share verification rounds and all succeed.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- l.ReadBarrier(ctx)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		g, _ := n.h.Group("g-00-09")
		if g == l {
			continue
		}
		err := g.ReadBarrier(ctx)
		var nle *NotLeaderError
		if !errors.As(err, &nle) || nle.LeaderID == "" {
			t.Fatalf("follower read barrier: %v, want a NotLeaderError naming the leader", err)
		}
	}
	// A leader cut off from its quorum must refuse reads. hashicorp/raft
	// credits a verification round with any heartbeat answer that arrives
	// after the round began, even one sent just before the followers went
	// away; so for about one round trip after isolation a read may still be
	// confirmed. That is safe: followers that just acknowledged this leader
	// vote for no one else for a heartbeat timeout (300ms here). Past that
	// margin, no read may be served.
	for _, n := range nodes {
		if g, _ := n.h.Group("g-00-09"); g != l {
			n.h.Close()
		}
	}
	isolated := time.Now()
	margin := 300 * time.Millisecond
	refused := false
	for time.Since(isolated) < 5*time.Second {
		start := time.Now()
		rctx, rcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := l.ReadBarrier(rctx)
		rcancel()
		if err == nil && start.Sub(isolated) > margin {
			t.Fatalf("an isolated leader served a linearizable read %v after losing its quorum", start.Sub(isolated))
		}
		if err != nil && start.Sub(isolated) > margin {
			refused = true
			break
		}
	}
	if !refused {
		t.Fatal("an isolated leader kept serving reads for 5s")
	}
}

func TestRemoveGroup(t *testing.T) {
	nodes := threeNodes(t, nil)
	bootstrap(t, nodes, "g-00-09", "g-10-19")
	applyRetry(t, nodes, "g-10-19", putCmd("k", "v"))
	n := nodes[2]
	l := waitLeader(t, nodes, "g-10-19")
	if l == nil {
		t.Fatal("no leader")
	}
	if g, _ := n.h.Group("g-10-19"); g == l {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := l.TransferLeadership(ctx, "", ""); err != nil {
			t.Fatal(err)
		}
		cancel()
		l = waitLeader(t, nodes[:2], "g-10-19")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.RemoveServer(ctx, n.name); err != nil {
		t.Fatal(err)
	}
	if err := n.h.Remove("g-10-19"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "groups", "g-10-19")); !os.IsNotExist(err) {
		t.Fatalf("group files still there: %v", err)
	}
	// The other group on the same listener is untouched.
	applyRetry(t, nodes, "g-00-09", putCmd("still", "works"))
	checkReplicasAgree(t, nodes, "g-00-09")
	applyRetry(t, nodes[:2], "g-10-19", putCmd("k2", "v"))
	checkReplicasAgree(t, nodes[:2], "g-10-19")
}

func TestBadGroupID(t *testing.T) {
	n := startNode(t, "n0", t.TempDir(), "", nil)
	for _, id := range []string{"", "UPPER", "a/b", "../x", string(bytes.Repeat([]byte("a"), 65))} {
		if _, err := n.h.Create(id, nil); !errors.Is(err, ErrBadGroupID) {
			t.Errorf("Create(%q) = %v, want ErrBadGroupID", id, err)
		}
	}
}

func TestPeerReachableAfterRemoveAndReAdd(t *testing.T) {
	nodes := threeNodes(t, nil)
	bootstrap(t, nodes, "g-00-09")
	l := waitLeader(t, nodes, "g-00-09")
	victim := followerIndex(t, nodes, "g-00-09", l)
	v := nodes[victim]
	v.h.Close()
	waitFor(t, "the leader to see the peer's heartbeats fail", 10*time.Second, func() bool { return !l.PeerReachable(v.name) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.RemoveServer(ctx, v.name); err != nil {
		t.Fatal(err)
	}
	// The node comes back empty and is added again.
	os.RemoveAll(filepath.Join(v.dir, "groups"))
	nodes[victim] = startNode(t, v.name, v.dir, v.addr, nil)
	if _, err := nodes[victim].h.Create("g-00-09", nil); err != nil {
		t.Fatal(err)
	}
	if err := l.AddNonvoter(ctx, v.name, nodes[victim].addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the re-added peer to be reachable", 10*time.Second, func() bool { return l.PeerReachable(v.name) })
}

// TestInTouch: a replica's data counts as current only while it is the
// leader or a follower in touch with one: not once it has lost its leader,
// and not after a restart until a leader has replicated to it.
func TestInTouch(t *testing.T) {
	nodes := threeNodes(t, nil)
	bootstrap(t, nodes, "g-00-09")
	applyRetry(t, nodes, "g-00-09", putCmd("k", "v"))
	for _, n := range nodes {
		g, _ := n.h.Group("g-00-09")
		waitFor(t, n.name+" in touch", 5*time.Second, func() bool { return g.InTouch() == nil })
	}
	l := waitLeader(t, nodes, "g-00-09")
	last := nodes[followerIndex(t, nodes, "g-00-09", l)]

	// The leader and the other follower go: the last one loses touch.
	for _, n := range nodes {
		if n != last {
			n.h.Close()
		}
	}
	g, _ := last.h.Group("g-00-09")
	waitFor(t, last.name+" to lose touch", 5*time.Second, func() bool { return g.InTouch() != nil })
	t.Logf("cut off: %v", g.InTouch())

	// Restarted alone, it has heard from no leader.
	last.h.Close()
	last = startNode(t, last.name, last.dir, last.addr, nil)
	g, _ = last.h.Group("g-00-09")
	time.Sleep(time.Second)
	if err := g.InTouch(); err == nil || !strings.Contains(err.Error(), "since it started") {
		t.Fatalf("a replica restarted without a leader: InTouch() = %v", err)
	}
	// The others come back: a leader replicates to it and it is current.
	for i, n := range nodes {
		if n.name != last.name {
			nodes[i] = startNode(t, n.name, n.dir, n.addr, nil)
		} else {
			nodes[i] = last
		}
	}
	applyRetry(t, nodes, "g-00-09", putCmd("k", "again"))
	waitFor(t, last.name+" back in touch", 10*time.Second, func() bool { return g.InTouch() == nil })
}

// TestBatchedAppends: by default the pipelined appends of all groups to a
// peer share one connection; groups replicate as before, through broken
// connections, a restarted peer, a node that does not batch its own, and a
// peer that does not take append connections at all (an older version:
// the others fall back to NetworkTransport's pipelines).
func TestBatchedAppends(t *testing.T) {
	for _, mode := range []string{"batched", "mixed", "off", "old-peer"} {
		t.Run(mode, func(t *testing.T) {
			tune := func(c *Config) {
				c.NoAppendBatching = mode == "off" || (mode == "mixed" && c.NodeID == "n1")
			}
			nodes := threeNodes(t, tune)
			if mode == "old-peer" {
				nodes[2].h.ap.layer.Close()
			}
			ids := []string{"g0", "g1", "g2", "g3", "g4", "g5"}
			bootstrap(t, nodes, ids...)
			write := func(tag string) {
				var wg sync.WaitGroup
				for _, id := range ids {
					for w := 0; w < 4; w++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for i := 0; i < 10; i++ {
								applyRetry(t, nodes, id, putCmd(fmt.Sprintf("k%d-%d", w, i), tag))
							}
						}()
					}
				}
				wg.Wait()
			}
			write("before")
			sent := func() (sent, frames uint64) {
				for _, n := range nodes {
					sent += n.h.ap.sent.Load()
					frames += n.h.ap.frames.Load()
				}
				return
			}
			s, f := sent()
			t.Logf("%s: %d appends batched in %d writes", mode, s, f)
			switch {
			case mode == "off" && s != 0:
				t.Fatalf("%d appends batched with NoAppendBatching everywhere", s)
			case mode != "off" && s == 0:
				t.Fatal("no append went through the batched connections: the checks below test nothing")
			}
			if mode == "old-peer" {
				// Nothing reaches n2 that way, and whoever tried knows it.
				refused := 0
				for _, n := range nodes[:2] {
					n.h.ap.mu.Lock()
					p := n.h.ap.peers[raft.ServerAddress(nodes[2].addr)]
					n.h.ap.mu.Unlock()
					if p == nil {
						continue
					}
					p.mu.Lock()
					conn, until := p.conn, p.refusedUntil
					p.mu.Unlock()
					if conn != nil {
						t.Fatalf("%s keeps an append connection to a peer that refuses them", n.name)
					}
					if time.Now().Before(until) {
						refused++
					}
				}
				if refused == 0 {
					t.Fatal("no node noticed that n2 refuses append connections")
				}
			}
			kept := nodes[0].h.ap.sent.Load() + nodes[2].h.ap.sent.Load()
			// Break every append connection, both ends: what was in flight
			// fails, raft replicates through NetworkTransport and then
			// pipelines again over new connections.
			for _, n := range nodes {
				n.h.ap.mu.Lock()
				for c := range n.h.ap.conns {
					c.Close()
				}
				peers := maps.Values(n.h.ap.peers)
				n.h.ap.mu.Unlock()
				for p := range peers {
					p.fail(nil, errors.New("test: connection broken"))
				}
			}
			write("broken")
			// A restarted peer is reached again.
			victim := nodes[1]
			victim.h.Close()
			nodes[1] = startNode(t, victim.name, victim.dir, victim.addr, tune)
			write("after")
			for _, id := range ids {
				checkReplicasAgree(t, nodes, id)
			}
			if now := nodes[0].h.ap.sent.Load() + nodes[2].h.ap.sent.Load(); mode != "off" && now <= kept {
				t.Fatalf("no batched appends after the connections broke (%d, %d before)", now, kept)
			}
		})
	}
}

// TestCommittedServers: the configuration a replica may be destroyed on is
// the committed one. A leader that has lost its quorum appends a removal it
// cannot commit: its latest configuration no longer lists the removed node,
// but CommittedServers must not say so (the next leader may still list it
// as a voter). Once a quorum is back and the removal commits, it does.
func TestCommittedServers(t *testing.T) {
	nodes := threeNodes(t, nil)
	bootstrap(t, nodes, "g-00-09")
	l := waitLeader(t, nodes, "g-00-09")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	servers, err := l.CommittedServers(ctx)
	cancel()
	if err != nil || len(servers) != 3 {
		t.Fatalf("CommittedServers = %v, %v; want the three members", servers, err)
	}
	for _, n := range nodes {
		if g, _ := n.h.Group("g-00-09"); g != l {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if _, err := g.CommittedServers(ctx); !errors.Is(err, ErrNotLeader) {
				t.Errorf("a follower answered CommittedServers: %v", err)
			}
			cancel()
		}
	}

	// Both followers stop: the leader proposes removing one of them.
	var followers []int
	for i, n := range nodes {
		if g, _ := n.h.Group("g-00-09"); g != l {
			followers = append(followers, i)
		}
	}
	gone := nodes[followers[1]]
	for _, i := range followers {
		nodes[i].h.Close()
	}
	removed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		removed <- l.RemoveServer(ctx, gone.name)
	}()
	waitFor(t, "the uncommitted removal in the leader's latest configuration", 5*time.Second, func() bool {
		s, err := l.Servers()
		return err == nil && len(s) == 2
	})
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	servers, err = l.CommittedServers(ctx)
	cancel()
	if err == nil {
		t.Fatalf("CommittedServers without a quorum = %v: an uncommitted removal taken as committed", servers)
	}
	t.Logf("without a quorum: %v (latest configuration lists 2)", err)
	if err := <-removed; err == nil {
		t.Fatal("the removal committed without a quorum")
	}

	// The other follower comes back: the group has a quorum of the new
	// configuration, and the committed configuration no longer lists gone.
	back := followers[0]
	nodes[back] = startNode(t, nodes[back].name, nodes[back].dir, nodes[back].addr, nil)
	nodes[followers[1]] = nil
	waitFor(t, "a committed configuration without "+gone.name, 20*time.Second, func() bool {
		l := leaderOf(nodes, "g-00-09")
		if l == nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := l.CommittedServers(ctx)
		if err != nil {
			return false
		}
		for _, sv := range s {
			if sv.ID == gone.name {
				return false
			}
		}
		return true
	})
}

// TestRecoverLostQuorum: two of three voters are gone for good; the
// survivor is rebuilt as the group's only voter, keeps every write it
// held, and takes writes again. A replica that leads is refused.
func TestRecoverLostQuorum(t *testing.T) {
	nodes := threeNodes(t, nil)
	bootstrap(t, nodes, "g-00-09")
	for i := 0; i < 20; i++ {
		applyRetry(t, nodes, "g-00-09", putCmd(fmt.Sprintf("k%d", i), "v"))
	}
	l := waitLeader(t, nodes, "g-00-09")
	if _, err := nodes[0].h.Recover("nope"); !errors.Is(err, ErrNoGroup) {
		t.Fatalf("Recover of a missing group: %v", err)
	}
	for _, n := range nodes {
		if g, _ := n.h.Group("g-00-09"); g == l {
			if _, err := n.h.Recover("g-00-09"); !errors.Is(err, ErrHasLeader) {
				t.Fatalf("Recover at the leader: %v, want ErrHasLeader", err)
			}
		}
	}
	s := nodes[followerIndex(t, nodes, "g-00-09", l)]
	target := l.Store().AppliedIndex()
	sg, _ := s.h.Group("g-00-09")
	waitFor(t, "the survivor to apply everything", 10*time.Second, func() bool { return sg.Store().AppliedIndex() >= target })
	for _, n := range nodes {
		if n != s {
			n.h.Close()
		}
	}
	// Without a quorum the survivor cannot take writes.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if _, err := sg.Apply(ctx, putCmd("lost", "x")); err == nil {
		t.Fatal("a write without a quorum succeeded")
	}
	cancel()
	g, err := s.h.Recover("g-00-09")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the recovered replica to lead", 10*time.Second, func() bool { return g.IsLeader() })
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := g.Apply(ctx, putCmd("after", "recovery")); err != nil {
		t.Fatal(err)
	}
	servers, err := g.CommittedServers(ctx)
	if err != nil || len(servers) != 1 || servers[0].ID != s.name {
		t.Fatalf("configuration after recovery: %v %v", servers, err)
	}
	for i := 0; i < 20; i++ {
		if _, found, err := g.Store().Get([]byte(fmt.Sprintf("k%d", i))); err != nil || !found {
			t.Fatalf("k%d lost in the recovery: %v", i, err)
		}
	}
	// It restarts as it is, the only voter.
	s.h.Close()
	s = startNode(t, s.name, s.dir, s.addr, nil)
	g, ok := s.h.Group("g-00-09")
	if !ok {
		t.Fatal("the recovered group did not reopen")
	}
	waitFor(t, "the recovered replica to lead after a restart", 10*time.Second, func() bool { return g.IsLeader() })
}

// TestDamagedReplicaRebuilt: a bit flipped in the middle of a stopped
// follower's shared log (synced data, not a torn tail) is reported, never
// truncated: the node starts, its replicas in that log are damaged and do
// not run (they neither serve nor vote), the group goes on with the other
// two; once the leader has removed it, the replica is wiped, added back as
// a learner, catches up and is promoted, and the replicas agree.
func TestDamagedReplicaRebuilt(t *testing.T) {
	nodes := threeNodes(t, nil)
	bootstrap(t, nodes, "g-00-09")
	for i := 0; i < 200; i++ {
		applyRetry(t, nodes, "g-00-09", putCmd(fmt.Sprintf("k%d", i), strings.Repeat("v", 100)))
	}
	l := waitLeader(t, nodes, "g-00-09")
	vi := followerIndex(t, nodes, "g-00-09", l)
	v := nodes[vi]
	vg, _ := v.h.Group("g-00-09")
	target := l.Store().AppliedIndex()
	waitFor(t, "the follower to apply everything", 10*time.Second, func() bool { return vg.Store().AppliedIndex() >= target })
	v.h.Close()

	segs, err := filepath.Glob(filepath.Join(v.dir, "shared-log", "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segments: %v %v", segs, err)
	}
	newest := segs[len(segs)-1]
	b, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(newest, b, 0o600); err != nil {
		t.Fatal(err)
	}

	nodes[vi] = startNode(t, v.name, v.dir, v.addr, nil)
	v = nodes[vi]
	if why := v.h.Damaged()["g-00-09"]; !strings.Contains(why, "corrupt") {
		t.Fatalf("Damaged() = %v, want g-00-09 damaged by the flipped bit", v.h.Damaged())
	}
	if _, ok := v.h.Group("g-00-09"); ok {
		t.Fatal("a damaged replica is running")
	}
	if _, err := v.h.Create("g-00-09", nil); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Create of a damaged replica: %v, want ErrDamaged", err)
	}
	if aside, _ := filepath.Glob(filepath.Join(v.dir, "shared-log.corrupt-*")); len(aside) != 1 {
		t.Fatalf("the damaged log was not set aside: %v", aside)
	}
	// The others serve; the damaged replica cannot be wiped while listed
	// (the caller's duty), so the leader removes it first.
	applyRetry(t, nodes, "g-00-09", putCmd("while-damaged", "x"))
	l = waitLeader(t, nodes, "g-00-09")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.RemoveServer(ctx, v.name); err != nil {
		t.Fatal(err)
	}
	if err := v.h.Wipe("g-00-09"); err != nil {
		t.Fatal(err)
	}
	if err := v.h.Wipe("g-00-09"); !errors.Is(err, ErrNotDamaged) {
		t.Fatalf("a second wipe: %v", err)
	}
	if _, err := v.h.Create("g-00-09", nil); err != nil {
		t.Fatal(err)
	}
	if err := l.AddNonvoter(ctx, v.name, v.addr); err != nil {
		t.Fatal(err)
	}
	g, _ := v.h.Group("g-00-09")
	waitFor(t, "the rebuilt replica to catch up", 20*time.Second, func() bool { return g.Store().AppliedIndex() >= l.Store().AppliedIndex() })
	if err := l.AddVoter(ctx, v.name, v.addr); err != nil {
		t.Fatal(err)
	}
	checkReplicasAgree(t, nodes, "g-00-09")
}
