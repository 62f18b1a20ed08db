package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/ldcd/ldcd/client"
)

// writerYields is how many times a connection's writer yields before it
// takes the answers queued so far, so that answers about to be queued join
// the same write (as client.writerYields does for requests).
const writerYields = 2

// maxFramesInFlight bounds the requests one framed connection runs at once;
// the reader waits for a slot beyond it.
const maxFramesInFlight = 4096

// handleFrames upgrades the connection to frames (client/frames.go): each
// request frame runs through the same handlers as plain HTTP, concurrently,
// and answers are written in batches.
func (s *Server) handleFrames(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !strings.EqualFold(r.Header.Get("Upgrade"), client.FramesProtocol) {
		w.Header().Set("Upgrade", client.FramesProtocol)
		writeError(w, http.StatusUpgradeRequired, "GET "+client.FramesPath+" upgrades a connection: send Connection: Upgrade and Upgrade: "+client.FramesProtocol)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, http.StatusBadRequest, "this connection cannot be upgraded: "+err.Error())
		return
	}
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + client.FramesProtocol + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		conn.Close()
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serveFrames(conn, brw.Reader)
	}()
}

func (s *Server) serveFrames(conn net.Conn, r *bufio.Reader) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	var (
		mu   sync.Mutex // guards out
		out  []byte
		kick = make(chan struct{}, 1)
		wg   sync.WaitGroup
		sem  = make(chan struct{}, maxFramesInFlight)
	)
	defer func() {
		cancel() // stops the writer and closes the connection
		wg.Wait()
	}()
	wg.Add(1)
	go func() { // the writer: everything answered since its last write, in one write
		defer wg.Done()
		var buf []byte
		for {
			select {
			case <-kick:
			case <-ctx.Done():
				return
			}
			for range writerYields {
				runtime.Gosched()
			}
			mu.Lock()
			buf, out = out, buf[:0]
			mu.Unlock()
			if len(buf) == 0 {
				continue
			}
			conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if _, err := conn.Write(buf); err != nil {
				cancel()
				return
			}
		}
	}()
	// answer runs serve against a fresh writer and queues what it wrote as
	// the answer to request id.
	answer := func(id uint32, serve func(http.ResponseWriter)) {
		rw := &frameWriter{header: http.Header{}}
		serve(rw)
		if rw.code == 0 {
			rw.code = http.StatusOK
		}
		mu.Lock()
		out = client.AppendAnswer(out, id, rw.code, rw.header, rw.body.Bytes())
		mu.Unlock()
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	remote, local := conn.RemoteAddr().String(), conn.LocalAddr().String()
	maxFrame := s.maxFrame()
	for {
		// A connection may wait IdleTimeout for its next frame; once a
		// frame has begun, all of it must arrive within ReadTimeout.
		conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if _, err := r.Peek(1); err != nil {
			return
		}
		conn.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
		hdr, err := r.Peek(4)
		if err != nil || binary.BigEndian.Uint32(hdr) > maxFrame {
			return
		}
		frame, err := client.ReadFrame(r)
		if err != nil {
			return
		}
		// The frame counts against the in-flight bound until it is
		// answered; while there is no room the connection reads nothing
		// more (and is closed if none comes in time).
		rb := s.newRequestBytes(ctx)
		rb.prepaid = true
		if err := rb.take(int64(len(frame))); err != nil {
			return
		}
		id, method, target, header, body, err := client.ParseRequest(frame)
		if err != nil {
			rb.release()
			return // the stream is out of step: nothing after this can be trusted
		}
		if !client.FramedPath(target) {
			rb.release()
			answer(id, func(w http.ResponseWriter) {
				writeError(w, http.StatusBadRequest, "only key-value, global and transaction requests go over frames")
			})
			continue
		}
		rctx, rcancel := ctx, context.CancelFunc(func() {})
		if d, err := time.ParseDuration(header.Get(client.HeaderFrameTimeout)); err == nil {
			rctx, rcancel = context.WithTimeout(ctx, d)
		}
		rctx = context.WithValue(rctx, requestBytesKey{}, rb)
		req, err := http.NewRequestWithContext(rctx, method, target, bytes.NewReader(body))
		if err != nil {
			rcancel()
			rb.release()
			answer(id, func(w http.ResponseWriter) { writeError(w, http.StatusBadRequest, "bad request: "+err.Error()) })
			continue
		}
		req.Header = header
		req.RemoteAddr, req.Host, req.RequestURI = remote, local, target
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			rcancel()
			rb.release()
			return
		}
		wg.Add(1)
		s.runFrame(func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer rb.release()
			defer rcancel()
			answer(id, func(w http.ResponseWriter) { s.handler.ServeHTTP(w, req) })
		})
	}
}

// maxFrame bounds a request frame: the largest body a framed route takes
// (a transaction's) and room for the request line and headers.
func (s *Server) maxFrame() uint32 {
	return uint32(min(int64(2*s.cfg.MaxValueSize)+1<<20, client.MaxFrame))
}

// frameWorkerIdle is how long a frame worker waits for more work before it
// exits.
const frameWorkerIdle = 5 * time.Second

// runFrame runs f on an idle frame worker, or on a new one if none is idle.
// Workers live on between requests: a goroutine started for each request
// grew its stack through the handlers' call chain every time
// (runtime.newstack and copystack were 18% of a node's CPU under 64 clients'
// stale gets).
func (s *Server) runFrame(f func()) {
	select {
	case s.frameWork <- f:
	default:
		s.wg.Add(1)
		go s.frameWorker(f)
	}
}

func (s *Server) frameWorker(f func()) {
	defer s.wg.Done()
	f()
	idle := time.NewTimer(frameWorkerIdle)
	defer idle.Stop()
	for {
		select {
		case f := <-s.frameWork:
			f()
			idle.Reset(frameWorkerIdle)
		case <-idle.C:
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// frameWriter collects a handler's answer for one frame.
type frameWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *frameWriter) Header() http.Header { return w.header }

func (w *frameWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *frameWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.Write(b)
}

func (w *frameWriter) Flush() {}
