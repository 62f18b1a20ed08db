package server

import (
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// pushPullBomb is a push/pull stream on the gossip port whose header
// declares Nodes=-1: a message type byte (6, push/pull) and the msgpack map
// {"Nodes": -1, "UserStateLen": 0, "Join": false}. memberlist v0.5.2 made
// a slice of that length and panicked (makeslice: len out of range).
func pushPullBomb() []byte {
	b := []byte{6, 0x83, 0xa5}
	b = append(b, "Nodes"...)
	b = append(b, 0xff, 0xac)
	b = append(b, "UserStateLen"...)
	b = append(b, 0x00, 0xa4)
	b = append(b, "Join"...)
	return append(b, 0xc2)
}

// TestGossipPushPullBomb sends the packet of issue 22 to a real node's
// gossip port, then checks that the node still serves writes and that its
// gossip still answers.
func TestGossipPushPullBomb(t *testing.T) {
	s := startNode(t)
	for range 3 {
		c, err := net.DialTimeout("tcp", s.cfg.GossipAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(pushPullBomb()); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		c.Read(b[:]) // the node closes it (or answers nothing)
		c.Close()
	}
	if code, body := do(t, "PUT", "http://"+s.HTTPAddr()+"/v1/kv/1/k", "v"); code != http.StatusOK {
		t.Fatalf("PUT after the gossip bomb: %d %s", code, body)
	}
	c, err := net.DialTimeout("tcp", s.cfg.GossipAddr, 5*time.Second)
	if err != nil {
		t.Fatalf("gossip port gone after the bomb: %v", err)
	}
	c.Close()
}

// TestGossipPushPullAllocation measures what one push/pull stream that
// declares memberlist's largest node count (1,048,576, v0.6.0's limit) and
// sends nothing more makes the node allocate. It is held for memberlist's
// stream timeout (10 s). A figure, not a check (LDCD_MEASURE=1): 112 MiB
// for a 33-byte header, as memberlist sizes the slice by the count before
// reading a node; what remains of issue 22's gossip item.
func TestGossipPushPullAllocation(t *testing.T) {
	if os.Getenv("LDCD_MEASURE") == "" {
		t.Skip("a measurement: set LDCD_MEASURE=1")
	}
	s := startNode(t)
	b := []byte{6, 0x83, 0xa5}
	b = append(b, "Nodes"...)
	b = append(b, 0xd2, 0x00, 0x10, 0x00, 0x00, 0xac)
	b = append(b, "UserStateLen"...)
	b = append(b, 0x00, 0xa4)
	b = append(b, "Join"...)
	b = append(b, 0xc2)
	got := allocatedBy(func() {
		c, err := net.DialTimeout("tcp", s.cfg.GossipAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(b)
		time.Sleep(time.Second)
	})
	t.Logf("one %d-byte push/pull header declaring 1,048,576 nodes: the node allocated %.1f MiB", len(b), float64(got)/(1<<20))
}
