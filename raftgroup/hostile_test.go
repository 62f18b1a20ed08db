package raftgroup

import (
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"
)

// dialService connects to a real host's raft port as a peer's service id
// would (the mux header), without any of this package's sending code.
func dialService(t testing.TB, addr, id string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(append([]byte{muxMagic, byte(len(id))}, id...)); err != nil {
		t.Fatal(err)
	}
	return c
}

// allocatedBy reports the bytes the process allocated while f ran.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// appendsBomb is an _appends frame of size bytes that declares as many
// entries as it has bytes, then holds zeros.
func appendsBomb(size int) []byte {
	var e hbEncoder
	e.u64(1)                            // seq
	e.str("g1")                         // group
	e.u64(3)                            // protocol version
	e.bytes(nil)                        // id
	e.bytes(nil)                        // addr
	e.u64(1)                            // term
	e.bytes(nil)                        // leader
	e.u64(0)                            // prev entry
	e.u64(0)                            // prev term
	e.u64(0)                            // commit
	e.u64(uint64(size - len(e.b) - 10)) // entries declared: one per byte left
	b := make([]byte, 4+size)
	binary.BigEndian.PutUint32(b, uint32(size))
	copy(b[4:], e.b)
	return b
}

// waitClosed waits for the host to close c, up to timeout.
func waitClosed(t testing.TB, c net.Conn, timeout time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	var b [1]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			ne, ok := err.(net.Error)
			return !(ok && ne.Timeout())
		}
	}
}

// TestDecoderBombs sends a real host, over its raft port, frames that
// declare far more than they carry: an _appends frame declaring one entry
// per byte (each decoded entry took about 104 bytes: an 8 MiB frame took
// 832 MiB), frame lengths of 1 GiB and 8 MiB followed by a trickle of
// bytes (the whole length was allocated up front). What the host
// allocates must stay within a small multiple of the bytes it received,
// and it must go on replicating.
func TestDecoderBombs(t *testing.T) {
	nodes := []*testNode{startNode(t, "n1", t.TempDir(), "", nil)}
	bootstrap(t, nodes, "g1")
	addr := nodes[0].addr

	const bombSize = 8 << 20
	bomb := appendsBomb(bombSize)
	got := allocatedBy(func() {
		c := dialService(t, addr, apMuxID)
		if _, err := c.Write(bomb); err != nil {
			t.Fatal(err)
		}
		if !waitClosed(t, c, 10*time.Second) {
			t.Fatal("the host kept a connection that sent a corrupt append frame")
		}
	})
	t.Logf("an 8 MiB _appends frame declaring an entry per byte: the host allocated %.1f MiB", float64(got)/(1<<20))
	if limit := uint64(4 * bombSize); got > limit {
		t.Errorf("an 8 MiB _appends bomb allocated %.1f MiB, want at most %d MiB", float64(got)/(1<<20), limit>>20)
	}

	// Frame lengths that promise much and deliver a few bytes.
	const conns = 32
	var held []net.Conn
	got = allocatedBy(func() {
		for i := range conns {
			id, size := apMuxID, uint32(apMaxFrame)
			if i%2 == 1 {
				id, size = hbMuxID, hbMaxFrame
			}
			c := dialService(t, addr, id)
			var hdr [4]byte
			binary.BigEndian.PutUint32(hdr[:], size)
			c.Write(hdr[:])
			c.Write(make([]byte, 1024))
			held = append(held, c)
		}
		time.Sleep(500 * time.Millisecond) // let the host read what arrived
	})
	t.Logf("%d connections declaring 1 GiB or 8 MiB frames, 1 KiB sent on each: the host allocated %.1f MiB", conns, float64(got)/(1<<20))
	if limit := uint64(32 << 20); got > limit {
		t.Errorf("truncated frames allocated %.1f MiB, want at most %d MiB", float64(got)/(1<<20), limit>>20)
	}
	for _, c := range held {
		c.Close()
	}
	applyRetry(t, nodes, "g1", putCmd("after", "bombs"))
}

// TestPeerConnectionsTimeOut: connections to the node-level services of
// the raft port (_appends, _heartbeats) that stay idle, or stop in the
// middle of a frame, are closed after PeerIdleTimeout (they were held
// forever); and the nodes' own connections, which go idle between writes,
// are replaced before that without failing an append.
func TestPeerConnectionsTimeOut(t *testing.T) {
	tune := func(c *Config) { c.PeerIdleTimeout = time.Second }
	nodes := threeNodes(t, tune)
	bootstrap(t, nodes, "g1")
	addr := nodes[0].addr
	conns := map[string]net.Conn{}
	for _, id := range []string{apMuxID, hbMuxID} {
		conns[id+" idle"] = dialService(t, addr, id)
		c := dialService(t, addr, id)
		c.Write([]byte{0, 0, 1, 0, 1, 2, 3}) // 256 bytes declared, 3 sent
		conns[id+" truncated"] = c
	}
	for name, c := range conns {
		if !waitClosed(t, c, 5*time.Second) {
			t.Errorf("%s: still open after 5 s (idle timeout 1 s)", name)
		}
	}
	// Writes with idle gaps longer than the timeout all succeed.
	for i := range 3 {
		applyRetry(t, nodes, "g1", putCmd("k", fmt.Sprint(i)))
		time.Sleep(1500 * time.Millisecond)
	}
	checkReplicasAgree(t, nodes, "g1")
}
