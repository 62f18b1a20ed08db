package raftgroup

import (
	"fmt"
	"testing"
	"time"
)

// TestQuietAppends: an idle leader stops sending its followers the
// AppendEntries that carry nothing new, yet every one that carries news
// still goes out: a commit index after a write, and the commit index to a
// follower that restarted (and forgot it).
func TestQuietAppends(t *testing.T) {
	for _, quiet := range []bool{true, false} {
		t.Run(fmt.Sprintf("quiet=%v", quiet), func(t *testing.T) {
			tune := func(c *Config) {
				c.CommitTimeout = 100 * time.Millisecond
				c.noQuietAppends = !quiet
			}
			nodes := threeNodes(t, tune)
			bootstrap(t, nodes, "g0")
			applyRetry(t, nodes, "g0", putCmd("k", "v1"))
			l := waitLeader(t, nodes, "g0")
			committed := func(what string) {
				t.Helper()
				want := l.Status().CommitIndex
				waitFor(t, what, 5*time.Second, func() bool {
					for _, n := range nodes {
						if g, _ := n.h.Group("g0"); g.Status().CommitIndex < want || g.Status().AppliedIndex < want {
							return false
						}
					}
					return true
				})
			}
			committed("followers to learn the commit index")

			// Idle: the commit timeout's appends are answered here.
			q0 := l.trans.quietAppends.Load()
			time.Sleep(time.Second) // about 7 commit timeouts for each follower
			q := l.trans.quietAppends.Load() - q0
			if !quiet {
				if q != 0 {
					t.Fatalf("%d appends answered without the network with quiet appends off", q)
				}
				return
			}
			if q < 4 {
				t.Fatalf("%d appends answered without the network in 1s of idle, want several", q)
			}

			// News goes out: a write's commit index reaches the followers.
			applyRetry(t, nodes, "g0", putCmd("k", "v2"))
			committed("followers to learn the commit index of a write made while quiet")

			// A follower restarts: it forgot the commit index, and learns
			// it again with no new write.
			f := followerIndex(t, nodes, "g0", l)
			victim := nodes[f]
			victim.h.Close()
			nodes[f] = startNode(t, victim.name, victim.dir, victim.addr, tune)
			if g, _ := nodes[f].h.Group("g0"); g.Status().CommitIndex != 0 {
				t.Logf("restarted follower starts at commit index %d", g.Status().CommitIndex)
			}
			committed("the restarted follower to learn the commit index")
			if l2 := waitLeader(t, nodes, "g0"); l2 != l {
				t.Fatalf("leadership moved during the test")
			}
		})
	}
}
