package raftgroup

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Heartbeat batching. hashicorp/raft sends a heartbeat to every follower of
// every group each tenth of a heartbeat timeout, one RPC each; with 100
// groups that was most of an idle node's CPU (a write and a read syscall and
// a msgpack round on both sides, about 90 µs a heartbeat). Here a group's
// heartbeat waits up to a twentieth of the heartbeat timeout (50 ms by
// default) for others bound to the same node, and
// the batch travels as one frame over one connection per node pair; the
// receiver hands each heartbeat to its group's raft exactly as
// NetworkTransport would (the heartbeat fast path), and answers all of them
// in one frame.
//
// The delay costs nothing that waits on it: linearizable reads are served
// under the read lease, which heartbeats renew long before it runs out
// (every 100-250 ms against a lease of 500 ms by default), and the
// heartbeats of a VerifyLeader round (how a leader without a lease confirms
// a read) are urgent: they send their batch at once.
//
// Only what NetworkTransport itself treats as a heartbeat is batched: an
// AppendEntries with a term and a leader, no entries, no previous entry and
// no commit index.

// hbMuxID names heartbeat connections on the mux; it can never be a group
// id (CheckGroupID).
const hbMuxID = "_heartbeats"

// hbMaxBatch bounds the heartbeats in one frame (a full batch is sent at
// once) and hbMaxFrame the bytes a frame may claim.
const (
	hbMaxBatch = 512
	hbMaxFrame = 8 << 20
)

func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	leader := req.RPCHeader.Addr
	if len(leader) == 0 {
		leader = req.Leader
	}
	return req.Term != 0 && leader != nil && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

// heartbeats is a host's batcher: the sending side per peer, the receiving
// side for the host's groups.
type heartbeats struct {
	m       *mux
	layer   *streamLayer
	delay   time.Duration
	timeout time.Duration

	mu       sync.Mutex // guards peers, handlers and closed
	peers    map[raft.ServerAddress]*hbPeer
	handlers map[string]*leaseTransport // the groups hosted here, by id
	conns    map[net.Conn]struct{}      // connections being served
	closed   bool

	done chan struct{}
	wg   sync.WaitGroup

	sent, frames atomic.Uint64 // heartbeats and frames sent, for tests
	urgentFrames atomic.Uint64 // frames sent before the delay for an urgent heartbeat
}

func newHeartbeats(m *mux, delay, timeout time.Duration) (*heartbeats, error) {
	h := &heartbeats{
		m: m, delay: delay, timeout: timeout,
		peers:    map[raft.ServerAddress]*hbPeer{},
		handlers: map[string]*leaseTransport{},
		conns:    map[net.Conn]struct{}{},
		done:     make(chan struct{}),
	}
	layer, err := m.layer(hbMuxID)
	if err != nil {
		return nil, err
	}
	h.layer = layer
	h.wg.Add(1)
	go h.accept(layer)
	return h, nil
}

func (h *heartbeats) register(id string, t *leaseTransport) {
	h.mu.Lock()
	h.handlers[id] = t
	h.mu.Unlock()
}

func (h *heartbeats) unregister(id string, t *leaseTransport) {
	h.mu.Lock()
	if h.handlers[id] == t {
		delete(h.handlers, id)
	}
	h.mu.Unlock()
}

func (h *heartbeats) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.done)
	h.layer.Close()
	for c := range h.conns {
		c.Close()
	}
	for _, p := range h.peers {
		p.closeConn()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// call sends one group's heartbeat in the next batch to target and waits
// for its answer.
// An urgent heartbeat (one of a VerifyLeader round) sends its batch at once.
func (h *heartbeats) call(target raft.ServerAddress, group string, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, urgent bool) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	p := h.peers[target]
	if p == nil {
		p = &hbPeer{h: h, addr: target, kick: make(chan struct{}, 1)}
		h.peers[target] = p
		h.wg.Add(1)
		go p.run()
	}
	h.mu.Unlock()
	c := &hbCall{group: group, req: req, resp: resp, urgent: urgent, done: make(chan error, 1)}
	p.enqueue(c)
	select {
	case err := <-c.done:
		return err
	case <-h.done:
		return ErrClosed
	}
}

// peerGen reports how many connections the heartbeats to target have
// dialed; false if none were sent there yet.
func (h *heartbeats) peerGen(target raft.ServerAddress) (uint64, bool) {
	h.mu.Lock()
	p := h.peers[target]
	h.mu.Unlock()
	if p == nil {
		return 0, false
	}
	return p.gen.Load(), true
}

type hbCall struct {
	group  string
	req    *raft.AppendEntriesRequest
	resp   *raft.AppendEntriesResponse
	urgent bool
	done   chan error
}

// hbPeer batches the heartbeats bound to one node. One batch is in flight
// at a time; the next one gathers meanwhile.
type hbPeer struct {
	h    *heartbeats
	addr raft.ServerAddress
	kick chan struct{}

	gen atomic.Uint64 // connections dialed: a new one means the peer may have restarted

	mu     sync.Mutex // guards queue, since, urgent and conn
	queue  []*hbCall
	since  time.Time // when the oldest queued call arrived
	urgent bool      // an urgent call is queued
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
}

func (p *hbPeer) enqueue(c *hbCall) {
	p.mu.Lock()
	if len(p.queue) == 0 {
		p.since = time.Now()
	}
	p.queue = append(p.queue, c)
	p.urgent = p.urgent || c.urgent
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *hbPeer) closeConn() {
	p.mu.Lock()
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
	p.mu.Unlock()
}

func (p *hbPeer) run() {
	defer p.h.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-p.kick:
		case <-p.h.done:
			p.fail(p.take(), ErrClosed)
			return
		}
		// Wait out the batch delay from the oldest heartbeat queued, unless
		// the batch is full.
		p.mu.Lock()
		wait := p.h.delay - time.Since(p.since)
		now := len(p.queue) >= hbMaxBatch || p.urgent
		p.mu.Unlock()
		if wait > 0 && !now {
			timer.Reset(wait)
		delay:
			for {
				select {
				case <-timer.C:
					break delay
				case <-p.kick: // more queued: an urgent call ends the delay
					p.mu.Lock()
					now := len(p.queue) >= hbMaxBatch || p.urgent
					p.mu.Unlock()
					if now {
						timer.Stop()
						break delay
					}
				case <-p.h.done:
					timer.Stop()
					p.fail(p.take(), ErrClosed)
					return
				}
			}
		}
		batch := p.take()
		if len(batch) == 0 {
			continue
		}
		if err := p.roundTrip(batch); err != nil {
			p.closeConn()
			p.fail(batch, err)
		}
		p.mu.Lock()
		more := len(p.queue) > 0
		p.mu.Unlock()
		if more {
			select {
			case p.kick <- struct{}{}:
			default:
			}
		}
	}
}

func (p *hbPeer) take() []*hbCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(p.queue), hbMaxBatch)
	batch := p.queue[:n:n]
	p.queue = p.queue[n:]
	p.urgent = false
	for _, c := range p.queue {
		p.urgent = p.urgent || c.urgent
	}
	if len(p.queue) > 0 {
		p.since = time.Now()
	} else {
		p.queue = nil
	}
	return batch
}

func (p *hbPeer) fail(batch []*hbCall, err error) {
	for _, c := range batch {
		c.done <- err
	}
}

// roundTrip sends batch and hands out the answers. Any error leaves the
// connection unusable.
func (p *hbPeer) roundTrip(batch []*hbCall) error {
	p.mu.Lock()
	conn, r, w := p.conn, p.r, p.w
	p.mu.Unlock()
	if conn == nil {
		c, err := p.h.m.dial(hbMuxID, p.addr, p.h.timeout)
		if err != nil {
			return err
		}
		conn, r, w = c, bufio.NewReader(c), bufio.NewWriter(c)
		p.mu.Lock()
		p.conn, p.r, p.w = conn, r, w
		p.mu.Unlock()
		p.gen.Add(1)
	}
	conn.SetDeadline(time.Now().Add(p.h.timeout))
	var e hbEncoder
	e.u64(uint64(len(batch)))
	for _, c := range batch {
		e.str(c.group)
		e.u64(uint64(c.req.ProtocolVersion))
		e.bytes(c.req.ID)
		e.bytes(c.req.Addr)
		e.u64(c.req.Term)
		e.bytes(c.req.Leader)
	}
	if err := writeFrame(w, e.b); err != nil {
		return err
	}
	p.h.frames.Add(1)
	p.h.sent.Add(uint64(len(batch)))
	for _, c := range batch {
		if c.urgent {
			p.h.urgentFrames.Add(1)
			break
		}
	}
	frame, err := readFrame(r)
	if err != nil {
		return err
	}
	d := hbDecoder{b: frame}
	if n := d.u64(); n != uint64(len(batch)) && d.err == nil {
		return fmt.Errorf("raftgroup: heartbeat batch of %d answered with %d", len(batch), n)
	}
	answers := make([]error, len(batch))
	for i, c := range batch {
		if msg := d.str(); msg != "" {
			answers[i] = errors.New(msg)
			continue
		}
		c.resp.ProtocolVersion = raft.ProtocolVersion(d.u64())
		c.resp.ID = d.bytes()
		c.resp.Addr = d.bytes()
		c.resp.Term = d.u64()
		c.resp.LastLog = d.u64()
		c.resp.Success = d.u64() == 1
		c.resp.NoRetryBackoff = d.u64() == 1
	}
	if d.err != nil {
		return d.err
	}
	for i, c := range batch {
		c.done <- answers[i]
	}
	return nil
}

func (h *heartbeats) accept(l *streamLayer) {
	defer h.wg.Done()
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			conn.Close()
			return
		}
		h.conns[conn] = struct{}{}
		h.wg.Add(1)
		h.mu.Unlock()
		go h.serve(conn)
	}
}

// serve answers the heartbeat batches of one peer's connection.
func (h *heartbeats) serve(conn net.Conn) {
	defer h.wg.Done()
	defer func() {
		h.mu.Lock()
		delete(h.conns, conn)
		h.mu.Unlock()
		conn.Close()
	}()
	r, w := bufio.NewReader(conn), bufio.NewWriter(conn)
	for {
		frame, err := readFrame(r)
		if err != nil {
			return
		}
		d := hbDecoder{b: frame}
		n := d.u64()
		if n > hbMaxBatch {
			return
		}
		var e hbEncoder
		e.u64(n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			group := d.str()
			req := &raft.AppendEntriesRequest{}
			req.ProtocolVersion = raft.ProtocolVersion(d.u64())
			req.ID = d.bytes()
			req.Addr = d.bytes()
			req.Term = d.u64()
			req.Leader = d.bytes()
			if d.err != nil {
				break
			}
			resp, err := h.deliver(group, req)
			if err != nil {
				msg := err.Error()
				if msg == "" {
					msg = "heartbeat failed"
				}
				e.str(msg)
				continue
			}
			e.str("")
			e.u64(uint64(resp.ProtocolVersion))
			e.bytes(resp.ID)
			e.bytes(resp.Addr)
			e.u64(resp.Term)
			e.u64(resp.LastLog)
			e.bool(resp.Success)
			e.bool(resp.NoRetryBackoff)
		}
		if d.err != nil {
			return
		}
		if err := writeFrame(w, e.b); err != nil {
			return
		}
	}
}

// deliver hands one heartbeat to its group's raft the way NetworkTransport
// does, through the heartbeat handler raft set.
func (h *heartbeats) deliver(group string, req *raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error) {
	h.mu.Lock()
	t := h.handlers[group]
	h.mu.Unlock()
	if t == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoGroup, group)
	}
	fn := t.heartbeatFn.Load()
	if fn == nil {
		return nil, errors.New("raftgroup: group not running yet")
	}
	// raft's heartbeat handler answers before it returns, or not at all
	// (shutting down): never wait on one group, the batch carries others.
	respCh := make(chan raft.RPCResponse, 1)
	(*fn)(raft.RPC{Command: req, RespChan: respCh})
	select {
	case r := <-respCh:
		if r.Error != nil {
			return nil, r.Error
		}
		resp, ok := r.Response.(*raft.AppendEntriesResponse)
		if !ok {
			return nil, errors.New("raftgroup: heartbeat answered with something else")
		}
		return resp, nil
	default:
		return nil, errors.New("raftgroup: group shutting down")
	}
}

func writeFrame(w *bufio.Writer, b []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	return w.Flush()
}

func readFrame(r *bufio.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > hbMaxFrame {
		return nil, fmt.Errorf("raftgroup: heartbeat frame of %d bytes", n)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}

type hbEncoder struct{ b []byte }

func (e *hbEncoder) u64(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *hbEncoder) bytes(v []byte) {
	e.u64(uint64(len(v)))
	e.b = append(e.b, v...)
}
func (e *hbEncoder) str(v string) {
	e.u64(uint64(len(v)))
	e.b = append(e.b, v...)
}
func (e *hbEncoder) bool(v bool) {
	if v {
		e.u64(1)
	} else {
		e.u64(0)
	}
}

type hbDecoder struct {
	b   []byte
	err error
}

var errHBShort = errors.New("raftgroup: short heartbeat frame")

func (d *hbDecoder) u64() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errHBShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *hbDecoder) bytes() []byte {
	n := d.u64()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errHBShort
		return nil
	}
	if n == 0 {
		return nil
	}
	v := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return v
}

func (d *hbDecoder) str() string { return string(d.bytes()) }
