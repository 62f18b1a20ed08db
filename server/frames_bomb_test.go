package server

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"
)

// allocatedBy reports the bytes the process allocated while f ran.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// headersBomb is a request frame of size bytes whose header block declares
// as many headers as it has bytes, all empty.
func headersBomb(size int) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 1) // id
	for _, s := range []string{"GET", "/v1/kv/1/k"} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	rest := size - len(b) - binary.MaxVarintLen32
	b = binary.AppendUvarint(b, uint64(rest))
	b = append(b, make([]byte, size-len(b))...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// TestFramesBombs sends a real node, on a framed connection, a 16 MiB
// request frame declaring as many headers as it has bytes (the header map
// was sized by the count: 2.4 GiB), and frame lengths of 64 MiB followed by
// a trickle (allocated up front). The node's allocations stay within a
// small multiple of the bytes it received, and it goes on serving.
func TestFramesBombs(t *testing.T) {
	// Values of 8 MiB: frames up to 17 MiB are taken, so the 16 MiB
	// frame reaches the header decoder.
	s := startNodeWith(t, func(c *Config) { c.MaxValueSize = 8 << 20 })
	const size = 16 << 20
	bomb := headersBomb(size)
	got := allocatedBy(func() {
		conn, r := upgrade(t, s)
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Write(bomb); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := r.Read(b[:]); err == nil {
			t.Fatal("a frame with a corrupt header block was answered")
		}
	})
	t.Logf("a 16 MiB frame declaring a header per byte: the node allocated %.1f MiB", float64(got)/(1<<20))
	if limit := uint64(4 * size); got > limit {
		t.Errorf("a 16 MiB headers bomb allocated %.1f MiB, want at most %d MiB", float64(got)/(1<<20), limit>>20)
	}
	got = allocatedBy(func() {
		for range 16 {
			conn, _ := upgrade(t, s)
			conn.Write([]byte{0x04, 0, 0, 0}) // 64 MiB declared
			conn.Write(make([]byte, 1024))
		}
		time.Sleep(500 * time.Millisecond)
	})
	t.Logf("16 connections declaring 64 MiB frames, 1 KiB sent on each: the node allocated %.1f MiB", float64(got)/(1<<20))
	if limit := uint64(16 << 20); got > limit {
		t.Errorf("truncated frames allocated %.1f MiB, want at most %d MiB", float64(got)/(1<<20), limit>>20)
	}
	if code, body := do(t, "PUT", "http://"+s.HTTPAddr()+"/v1/kv/1/k", "v"); code != 200 {
		t.Fatalf("PUT after the bombs: %d %s", code, body)
	}
}
