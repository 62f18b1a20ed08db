// Package readn reads length-prefixed frames from the network without
// trusting their length: what it allocates follows the bytes that actually
// arrive, not the length a peer declared.
package readn

import (
	"errors"
	"io"
)

// chunk is the most Full allocates ahead of the bytes received.
const chunk = 64 << 10

// Full reads exactly n bytes from r. A frame's declared length is only a
// promise: allocating it up front let a peer that sent a 4-byte header
// declaring 1 GiB take 1 GiB. Full allocates at most chunk bytes ahead of
// what has arrived and grows by doubling, so a sender must send about
// half of what it makes the reader hold. A stream that ends early is
// io.ErrUnexpectedEOF (io.EOF if nothing arrived).
func Full(r io.Reader, n int) ([]byte, error) {
	if n < 0 {
		return nil, errors.New("readn: negative length")
	}
	if n <= chunk {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	b := make([]byte, 0, chunk)
	for len(b) < n {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(n, 2*cap(b)))
			copy(nb, b)
			b = nb
		}
		m, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err != nil && len(b) < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return b, nil
}
