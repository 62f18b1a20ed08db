package readn

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

func TestFull(t *testing.T) {
	for _, n := range []int{0, 1, chunk, chunk + 1, 5*chunk + 3} {
		src := bytes.Repeat([]byte{7}, n)
		got, err := Full(iotest.HalfReader(bytes.NewReader(append(src, 1, 2))), n)
		if err != nil || !bytes.Equal(got, src) {
			t.Fatalf("n=%d: %d bytes, %v", n, len(got), err)
		}
		if n > 0 {
			want := io.ErrUnexpectedEOF
			if n == 1 {
				want = io.EOF // nothing arrived
			}
			if _, err := Full(bytes.NewReader(src[:n-1]), n); err != want {
				t.Fatalf("n=%d, one byte short: %v, want %v", n, err, want)
			}
		}
	}
}

// TestFullAllocatesByBytesReceived: a 1 GiB promise backed by 1 KiB costs
// about a chunk, not a gigabyte.
func TestFullAllocatesByBytesReceived(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			Full(bytes.NewReader(make([]byte, 1024)), 1<<30)
		}
	})
	got := uint64(res.AllocedBytesPerOp())
	if got > 4*chunk {
		t.Fatalf("a 1 GiB frame with 1 KiB sent allocated %d bytes", got)
	}
}
