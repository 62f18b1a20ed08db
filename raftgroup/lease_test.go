package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// sequentialReads runs n linearizable reads one after another on g and
// returns how many VerifyLeader rounds they took.
func sequentialReads(t *testing.T, g *Group, n int) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := g.verify.rounds.Load()
	for i := 0; i < n; i++ {
		if err := g.ReadBarrier(ctx); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	return g.verify.rounds.Load() - before
}

func TestReadLease(t *testing.T) {
	t.Run("a leader with a lease reads without heartbeat rounds", func(t *testing.T) {
		nodes := threeNodes(t, nil)
		bootstrap(t, nodes, "g-00-09")
		applyRetry(t, nodes, "g-00-09", putCmd("k", "v"))
		l := waitLeader(t, nodes, "g-00-09")
		waitFor(t, "the lease", 5*time.Second, l.leased)
		if r := sequentialReads(t, l, 200); r > 5 {
			t.Fatalf("200 reads under a lease took %d VerifyLeader rounds, want almost none", r)
		}
		// A leadership transfer ends the lease for the rest of the term,
		// even one that fails (to a server that is not a member).
		if err := l.TransferLeadership(context.Background(), "nobody", "127.0.0.1:1"); err == nil {
			t.Fatal("transfer to a non-member succeeded")
		}
		if l.leased() {
			t.Fatal("the lease outlived the start of a leadership transfer")
		}
		if r := sequentialReads(t, l, 20); r < 20 {
			t.Fatalf("20 reads after a transfer began took %d VerifyLeader rounds, want one each", r)
		}
	})
	t.Run("without leases every read confirms leadership", func(t *testing.T) {
		nodes := threeNodes(t, func(c *Config) { c.NoReadLease = true })
		bootstrap(t, nodes, "g-00-09")
		applyRetry(t, nodes, "g-00-09", putCmd("k", "v"))
		l := waitLeader(t, nodes, "g-00-09")
		if r := sequentialReads(t, l, 50); r < 50 {
			t.Fatalf("50 reads took %d VerifyLeader rounds, want one each", r)
		}
	})
	t.Run("a restarted replica waits a heartbeat timeout before it votes", func(t *testing.T) {
		nodes := threeNodes(t, nil)
		bootstrap(t, nodes, "g-00-09")
		applyRetry(t, nodes, "g-00-09", putCmd("k", "v"))
		for i, n := range nodes {
			if g, _ := n.h.Group("g-00-09"); g.IsLeader() {
				continue
			}
			g, _ := n.h.Group("g-00-09")
			if !g.trans.quietUntil.Before(time.Now()) {
				t.Fatal("a freshly bootstrapped replica is not voting")
			}
			n.h.Close()
			restarted := time.Now()
			nodes[i] = startNode(t, n.name, n.dir, n.addr, nil)
			g, _ = nodes[i].h.Group("g-00-09")
			if want := restarted.Add(300 * time.Millisecond); g.trans.quietUntil.Before(want) {
				t.Fatalf("restarted replica votes from %v, want not before %v", g.trans.quietUntil, want)
			}
			break
		}
		applyRetry(t, nodes, "g-00-09", putCmd("k", "after"))
		checkReplicasAgree(t, nodes, "g-00-09")
	})
}

// TestLeaseTransportFilter sends real RPCs over TCP to a lease transport:
// votes are refused until its quiet period ends, and TimeoutNow only comes
// through from the leader the replica follows.
func TestLeaseTransportFilter(t *testing.T) {
	server, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	lt := newLeaseTransport(server, "g-00-09", nil, false, nil, 500*time.Millisecond, false)
	defer lt.Close()
	leader := func() raft.ServerID { return "the-leader" }
	lt.leader.Store(&leader)
	go func() {
		for rpc := range lt.Consumer() {
			switch rpc.Command.(type) {
			case *raft.RequestVoteRequest:
				rpc.Respond(&raft.RequestVoteResponse{Granted: true}, nil)
			case *raft.TimeoutNowRequest:
				rpc.Respond(&raft.TimeoutNowResponse{}, nil)
			}
		}
	}()
	client, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	target := server.LocalAddr()
	vote := func() error {
		var resp raft.RequestVoteResponse
		return client.RequestVote("srv", target, &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("candidate")}, Term: 2}, &resp)
	}
	timeoutNow := func(from string) error {
		var resp raft.TimeoutNowResponse
		return client.TimeoutNow("srv", target, &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ID: []byte(from)}}, &resp)
	}
	if err := vote(); err == nil || !strings.Contains(err.Error(), "not voting yet") {
		t.Fatalf("vote during the quiet period: %v, want a refusal", err)
	}
	if err := timeoutNow("a-former-leader"); err == nil || !strings.Contains(err.Error(), "not the leader") {
		t.Fatalf("TimeoutNow from a former leader: %v, want a refusal", err)
	}
	if err := timeoutNow("the-leader"); err != nil {
		t.Fatalf("TimeoutNow from the leader: %v", err)
	}
	time.Sleep(time.Until(lt.quietUntil))
	if err := vote(); err != nil {
		t.Fatalf("vote after the quiet period: %v", err)
	}
}

func TestReadLeaseQuorum(t *testing.T) {
	cfg := raft.Configuration{Servers: []raft.Server{
		{ID: "a", Suffrage: raft.Voter}, {ID: "b", Suffrage: raft.Voter}, {ID: "c", Suffrage: raft.Voter},
		{ID: "d", Suffrage: raft.Nonvoter}, {ID: "e", Suffrage: raft.Nonvoter},
	}}
	now := time.Now()
	l := newReadLease(100 * time.Millisecond)
	if l.valid(3, "a", cfg, now) {
		t.Fatal("valid with no acknowledgement")
	}
	l.ack(3, "d", now)
	l.ack(3, "e", now)
	if l.valid(3, "a", cfg, now) {
		t.Fatal("nonvoters made a quorum")
	}
	l.ack(3, "b", now.Add(-150*time.Millisecond))
	if l.valid(3, "a", cfg, now) {
		t.Fatal("an acknowledgement older than the lease counted")
	}
	l.ack(3, "b", now.Add(-50*time.Millisecond))
	if !l.valid(3, "a", cfg, now) {
		t.Fatal("self and a fresh voter are a quorum of three")
	}
	if l.valid(4, "a", cfg, now) {
		t.Fatal("acknowledgements of term 3 counted in term 4")
	}
	l.ack(4, "c", now)
	if l.valid(3, "a", cfg, now) || !l.valid(4, "a", cfg, now) {
		t.Fatal("a newer term's acknowledgement did not replace the older term's")
	}
	l.disable(4)
	if l.valid(4, "a", cfg, now) {
		t.Fatal("valid after disable")
	}
	var nilLease *readLease
	if nilLease.valid(4, "a", cfg, now) {
		t.Fatal("a nil lease is valid")
	}
}

// TestHeartbeatBatching runs 20 groups on three nodes: their heartbeats
// travel in shared frames, and the groups stay stable on them (no
// elections), with batching, without it, and with one node sending its
// heartbeats one by one (n2: the leaders, on n0 where the groups were
// bootstrapped, still batch heartbeats to it, which it must answer).
// It runs on the default timeouts: the tests' short ones (a leader lease
// of 150 ms) left the race build on a loaded two-core machine one stalled
// scheduler away from an election, which is not what this test asks about.
func TestHeartbeatBatching(t *testing.T) {
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = fmt.Sprintf("g-%02d", i)
	}
	for _, mode := range []string{"on", "off", "mixed"} {
		t.Run("batching="+mode, func(t *testing.T) {
			batching := mode != "off"
			def := DefaultConfig()
			nodes := threeNodes(t, func(c *Config) {
				c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout, c.LeaderHeartbeatTimeout = def.HeartbeatTimeout, def.ElectionTimeout, def.LeaderLeaseTimeout, def.LeaderHeartbeatTimeout
				c.NoHeartbeatBatching = mode == "off" || (mode == "mixed" && c.NodeID == "n2")
			})
			interval := def.HeartbeatTimeout * 3 / 20 // between rounds
			bootstrap(t, nodes, ids...)
			terms := map[string]uint64{}
			for _, id := range ids {
				applyRetry(t, nodes, id, putCmd("k", "v"))
				terms[id] = waitLeader(t, nodes, id).Status().Term
			}
			// A leader with batched heartbeats runs raft with the leader's
			// heartbeat timeout; a follower, and a leader that sends its
			// heartbeats one by one, with the configured one.
			waitFor(t, "every raft on its heartbeat timeout", 5*time.Second, func() bool {
				for _, id := range ids {
					l := waitLeader(t, nodes, id)
					for _, n := range nodes {
						g, _ := n.h.Group(id)
						want := def.HeartbeatTimeout
						if g == l && !n.h.cfg.NoHeartbeatBatching {
							want = def.LeaderHeartbeatTimeout
						}
						if g.Raft().ReloadableConfig().HeartbeatTimeout != want {
							return false
						}
					}
				}
				return true
			})
			counts := func() (sent, frames, asks uint64) {
				for _, n := range nodes {
					sent, frames, asks = sent+n.h.hb.sent.Load(), frames+n.h.hb.frames.Load(), asks+n.h.hb.asks.Load()
				}
				return sent, frames, asks
			}
			sent0, frames0, asks0 := counts()
			const idle = 3 * time.Second // about 20 rounds
			time.Sleep(idle)
			sent, frames, asks := counts()
			sent, frames, asks = sent-sent0, frames-frames0, asks-asks0
			for _, id := range ids {
				l := waitLeader(t, nodes, id)
				if term := l.Status().Term; term != terms[id] {
					t.Errorf("%s: term moved from %d to %d while idle", id, terms[id], term)
				}
				for _, n := range nodes {
					g, _ := n.h.Group(id)
					if g != l {
						if ago := time.Since(g.Raft().LastContact()); ago > 3*interval {
							t.Errorf("%s on %s last heard from its leader %v ago", id, n.name, ago)
						}
					}
				}
			}
			if !batching {
				if sent != 0 {
					t.Fatalf("%d heartbeats batched with batching off", sent)
				}
				return
			}
			if sent < 200 {
				t.Fatalf("%d heartbeats batched in %v over 20 groups, want hundreds", sent, idle)
			}
			if per := float64(sent) / float64(frames); per < 2 {
				t.Fatalf("%d heartbeats in %d frames (%.1f a frame), want several a frame", sent, frames, per)
			}
			// One round per node pair and direction each interval, whatever
			// the number of groups.
			if max := uint64(6 * idle / interval * 3 / 2); frames > max {
				t.Fatalf("%d frames in %v between 3 nodes, want at most %d", frames, idle, max)
			}
			var stored uint64
			for _, n := range nodes {
				stored += n.h.hb.stored.Load()
			}
			if stored == 0 {
				t.Fatal("no heartbeat was answered from a round already made")
			}
			// raft asks for each follower's heartbeat a tenth of its heartbeat
			// timeout apart at the least: with the leader's timeout, at most
			// once each 250 ms (about 800 asks in all at the 1 s timeout).
			if mode == "on" {
				if max := uint64(len(ids) * 2 * (int(idle/(def.LeaderHeartbeatTimeout/10)) + 1)); asks > max {
					t.Fatalf("leaders asked for %d heartbeats in %v, want at most %d", asks, idle, max)
				}
			}
			t.Logf("%d heartbeats in %d frames, %d asks, %d answered from rounds already made", sent, frames, asks, stored)
			if mode != "on" {
				return
			}
			// A leader that hands its leadership over goes back to the
			// configured heartbeat timeout.
			l := waitLeader(t, nodes, ids[0])
			if err := l.Raft().LeadershipTransfer().Error(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the old leader back on the configured heartbeat timeout", 5*time.Second, func() bool {
				return !l.IsLeader() && l.Raft().ReloadableConfig().HeartbeatTimeout == def.HeartbeatTimeout
			})
		})
	}
}

// TestUrgentHeartbeats: the heartbeats of a VerifyLeader round (every
// linearizable read without a lease) skip the batch delay; an idle group's
// wait for their batch.
func TestUrgentHeartbeats(t *testing.T) {
	nodes := threeNodes(t, func(c *Config) { c.NoReadLease = true })
	bootstrap(t, nodes, "g")
	applyRetry(t, nodes, "g", putCmd("k", "v"))
	l := waitLeader(t, nodes, "g")
	var host *Host
	for _, n := range nodes {
		if g, _ := n.h.Group("g"); g == l {
			host = n.h
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := host.hb.urgentFrames.Load()
	time.Sleep(time.Second)
	if n := host.hb.urgentFrames.Load() - before; n != 0 {
		t.Fatalf("%d urgent frames from an idle group", n)
	}
	rounds := l.verify.rounds.Load()
	for i := 0; i < 50; i++ {
		if err := l.ReadBarrier(ctx); err != nil {
			t.Fatal(err)
		}
	}
	urgent := host.hb.urgentFrames.Load() - before
	if r := l.verify.rounds.Load() - rounds; r == 0 || urgent < r {
		t.Fatalf("%d VerifyLeader rounds sent %d urgent frames, want one or more each", r, urgent)
	}
}

// TestCloseWaitsForHeartbeatHandlers: raft's heartbeat handler runs on the
// transports' goroutines, which raft's Shutdown does not wait for. Close
// waits for a handler still running (it may be writing a new term to the
// log store the group closes next), and no handler runs after it. CI saw
// "failed to save current term: closed" panic before this.
func TestCloseWaitsForHeartbeatHandlers(t *testing.T) {
	nt, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	lt := newLeaseTransport(nt, "g", nil, false, nil, 0, false)
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	lt.SetHeartbeatHandler(func(rpc raft.RPC) {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
	})
	fn := *lt.heartbeatFn.Load()
	go fn(raft.RPC{Command: &raft.AppendEntriesRequest{}, RespChan: make(chan raft.RPCResponse, 1)})
	<-entered
	closed := make(chan struct{})
	go func() { lt.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a heartbeat handler was still running")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the handler finished")
	}
	resp := make(chan raft.RPCResponse, 1)
	fn(raft.RPC{Command: &raft.AppendEntriesRequest{}, RespChan: resp})
	if r := <-resp; !errors.Is(r.Error, ErrClosed) || calls.Load() != 1 {
		t.Fatalf("after Close: answer %v, handler calls %d; want ErrClosed and no call", r.Error, calls.Load())
	}
}
