package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/sync/semaphore"
)

// Limits on what clients may make a node hold. Every request's body bytes
// count against one bound per node (Config.MaxInflightBytes) from the
// moment they are read until the request is answered; a request that
// would go over it waits up to Config.InflightWait for room, then is
// refused with 503. A body's declared length is taken whole before it is
// read (all or nothing: counted chunk by chunk, 64 bodies of 1 MiB under
// an 8 MiB bound each took a part and all starved); what a client that
// declares a length and sends nothing holds is released after ReadTimeout.
// A body of unknown length (chunked) is counted as it arrives, and a
// framed request when its frame has arrived.
//
// Deadlines: a request's headers and body must arrive within ReadTimeout
// (the read deadline is set only while a body is read, so that a handler
// that runs long, or a change feed that streams for hours, is not cut by
// it); its answer must be written within RequestTimeout + WriteTimeout,
// and each write of a stream within WriteTimeout; a connection waits at
// most IdleTimeout for its next request (http.Server.IdleTimeout, and the
// framed connections of frames.go between frames).

// errBusy is returned (wrapped) by a body read that found no room under
// the in-flight bound in time.
var errBusy = errors.New("server: too many request bytes in flight")

// requestBytes is what one request holds of the node's in-flight bound.
// It is used by the request's goroutine only.
type requestBytes struct {
	sem  *semaphore.Weighted
	max  int64
	wait time.Duration
	ctx  context.Context
	held int64
	// prepaid marks a framed request: its frame was counted whole when
	// it was read, so its body is not counted again.
	prepaid bool
}

type requestBytesKey struct{}

func (s *Server) newRequestBytes(ctx context.Context) *requestBytes {
	return &requestBytes{sem: s.inflight, max: s.cfg.MaxInflightBytes, wait: s.cfg.InflightWait, ctx: ctx}
}

// take counts n more bytes, waiting up to wait for room.
func (b *requestBytes) take(n int64) error {
	if n <= 0 {
		return nil
	}
	if n > b.max {
		return fmt.Errorf("%w: %d bytes in one request, the bound is %d", errBusy, n, b.max)
	}
	if !b.sem.TryAcquire(n) {
		ctx, cancel := context.WithTimeout(b.ctx, b.wait)
		err := b.sem.Acquire(ctx, n)
		cancel()
		if err != nil {
			return fmt.Errorf("%w (bound %d bytes)", errBusy, b.max)
		}
	}
	b.held += n
	return nil
}

// release gives back everything held.
func (b *requestBytes) release() {
	if b.held > 0 {
		b.sem.Release(b.held)
		b.held = 0
	}
}

// countedReader counts what it reads against a request's bytes.
type countedReader struct {
	r io.Reader
	b *requestBytes
}

func (c *countedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		if terr := c.b.take(int64(n)); terr != nil {
			return n, terr
		}
	}
	return n, err
}

// limitRequest sets what instrument applies to every request: its bytes
// under the in-flight bound (unless a framed connection counted them
// already), a read deadline while it has a body to read, and a write
// deadline for its answer. It returns the request to serve and what to
// run when it is answered.
func (s *Server) limitRequest(w http.ResponseWriter, r *http.Request) (*http.Request, func()) {
	if _, ok := r.Context().Value(requestBytesKey{}).(*requestBytes); ok {
		return r, func() {} // framed: frames.go set it up and releases it
	}
	rb := s.newRequestBytes(r.Context())
	r = r.WithContext(context.WithValue(r.Context(), requestBytesKey{}, rb))
	rc := http.NewResponseController(w)
	now := time.Now()
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		rc.SetReadDeadline(now.Add(s.cfg.ReadTimeout))
	}
	rc.SetWriteDeadline(now.Add(s.cfg.RequestTimeout + s.cfg.WriteTimeout))
	return r, rb.release
}

// streamWriter is a ResponseWriter for answers that stream for as long as
// the client reads (change feeds, snapshots): each write and flush must
// complete within timeout, however long the stream lasts.
type streamWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func newStreamWriter(w http.ResponseWriter, timeout time.Duration) *streamWriter {
	sw := &streamWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}
	sw.rc.SetWriteDeadline(time.Time{})
	return sw
}

func (w *streamWriter) Write(b []byte) (int, error) {
	w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.ResponseWriter.Write(b)
}

func (w *streamWriter) Flush() {
	w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
