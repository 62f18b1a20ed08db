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

	"github.com/ldcd/ldcd/internal/readn"
)

// Coalesced heartbeats. hashicorp/raft sends a heartbeat to every follower
// of every group each tenth of a heartbeat timeout, one RPC each, from a
// goroutine per group and follower; with 100 groups that was most of an idle
// node's CPU (a write and a read syscall and a msgpack round on both sides,
// about 90 µs a heartbeat).
//
// Here a node sends its peer one frame per round, every 0.15 heartbeat
// timeouts (150 ms by default), over one connection per node pair. The frame
// carries a heartbeat for each group this node leads, in the term its raft
// last asked to heartbeat in, with a follower on that peer. The receiver
// hands each heartbeat to its group's raft exactly as NetworkTransport would
// (the heartbeat fast path), and answers all of them in one frame (CockroachDB
// coalesces heartbeats the same way).
//
// raft's own heartbeat goroutines still ask, on their own schedule. A call
// is answered at once with its group's answer from the newest round, if that
// round was sent in the same term within hbFresh (0.25 heartbeat timeouts);
// otherwise it waits for the next round. So what raft learns is never older
// than hbFresh: its leader lease check (a quorum heard from within
// LeaderLeaseTimeout) is off by at most that. A leading raft runs with
// Config.LeaderHeartbeatTimeout (2.5 heartbeat timeouts by default), so it
// asks every 250-500 ms, not every 100-200 ms: followers are kept in touch
// by the rounds, not by the asks (Group.paceHeartbeats).
//
// The read lease runs from the time the round was sent (lease.go). Every
// acknowledged round renews it, asked for or not, and rounds every 150 ms
// renew a lease of 500 ms long before it runs out.
//
// The heartbeats of a VerifyLeader round (how a leader without a lease
// confirms a read) are urgent: they never take a stored answer, and they
// start a round at once, so the answer comes from a frame sent after the
// round began.
//
// Only what NetworkTransport itself treats as a heartbeat is sent this way:
// an AppendEntries with a term and a leader, no entries, no previous entry
// and no commit index.

// hbMuxID names heartbeat connections on the mux; it can never be a group
// id (CheckGroupID).
const hbMuxID = "_heartbeats"

// hbMaxBatch bounds the heartbeats in one frame and hbMaxFrame the bytes a
// frame may claim.
const (
	hbMaxBatch = 512
	hbMaxFrame = 8 << 20
)

// hbForget is the least time a group stays in the rounds after its raft last
// asked to heartbeat (it stopped leading, or the follower left); a host
// raises it to twice the longest wait between a leading raft's asks.
const hbForget = time.Second

func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	leader := req.RPCHeader.Addr
	if len(leader) == 0 {
		leader = req.Leader
	}
	return req.Term != 0 && leader != nil && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

// heartbeats is a host's heartbeat sender, one hbPeer per peer, and the
// receiving side for the host's groups.
type heartbeats struct {
	peerService // mu guards peers too
	m           *mux
	interval    time.Duration // between rounds
	fresh       time.Duration // how old a stored answer may be
	forget      time.Duration // how long a group stays in the rounds after raft last asked
	timeout     time.Duration

	peers map[raft.ServerAddress]*hbPeer

	sent, frames atomic.Uint64 // heartbeats and frames sent, for tests
	urgentFrames atomic.Uint64 // rounds started at once for an urgent heartbeat
	stored       atomic.Uint64 // calls answered from a round already made
	asks         atomic.Uint64 // calls, for tests
}

func newHeartbeats(m *mux, interval, fresh, forget, timeout, idle time.Duration) (*heartbeats, error) {
	h := &heartbeats{
		m: m, interval: interval, fresh: fresh, forget: max(forget, hbForget), timeout: timeout,
		peers: map[raft.ServerAddress]*hbPeer{},
	}
	if err := h.start(m, hbMuxID, idle, timeout, h.serve); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *heartbeats) close() {
	if !h.shut(func() {
		for _, p := range h.peers {
			p.closeConn()
		}
	}) {
		return
	}
	h.wg.Wait()
}

// call answers one heartbeat of group t to target, from the newest round if
// it is fresh, else from the next one, and returns when the round that
// answered was sent. An urgent heartbeat (one of a VerifyLeader round)
// starts a round at once and takes its answer.
// With stored false, a call always waits for the next round.
func (h *heartbeats) call(id raft.ServerID, target raft.ServerAddress, t *leaseTransport, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, urgent, stored bool) (time.Time, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return time.Time{}, ErrClosed
	}
	p := h.peers[target]
	if p == nil {
		p = &hbPeer{h: h, addr: target, kick: make(chan struct{}, 1), groups: map[string]*hbGroup{}}
		h.peers[target] = p
		h.wg.Add(1)
		go p.run()
	}
	h.mu.Unlock()
	h.asks.Add(1)

	now := time.Now()
	p.mu.Lock()
	g := p.groups[t.group]
	if g == nil || g.t != t { // new here, or the group was opened again
		g = &hbGroup{t: t}
		p.groups[t.group] = g
	}
	g.req = *req
	g.asked = now
	g.id = id
	if stored && !urgent && !g.sent.IsZero() && g.err == nil && g.sentTerm == req.Term && now.Sub(g.sent) < h.fresh {
		*resp = g.resp
		sent := g.sent
		p.mu.Unlock()
		h.stored.Add(1)
		return sent, nil
	}
	c := &hbCall{group: t.group, resp: resp, done: make(chan error, 1)}
	p.waiting = append(p.waiting, c)
	wake := urgent || len(p.waiting) == 1 && g.sent.IsZero() // a new group need not wait a whole interval
	p.urgent = p.urgent || urgent
	p.mu.Unlock()
	if wake {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	select {
	case err := <-c.done:
		return c.sent, err
	case <-h.done:
		return time.Time{}, ErrClosed
	}
}

// hbGroup is one group's heartbeating to one peer.
type hbGroup struct {
	t     *leaseTransport
	id    raft.ServerID             // the follower's
	req   raft.AppendEntriesRequest // the newest heartbeat raft asked for
	asked time.Time                 // when

	// The answer of the newest round that carried it.
	sent     time.Time // when that round was sent; zero: none yet
	sentTerm uint64    // the term its heartbeat carried
	resp     raft.AppendEntriesResponse
	err      error
}

type hbCall struct {
	group string
	resp  *raft.AppendEntriesResponse
	sent  time.Time
	done  chan error
}

// hbPeer sends the rounds to one node.
type hbPeer struct {
	h    *heartbeats
	addr raft.ServerAddress
	kick chan struct{}

	gen atomic.Uint64 // connections dialed: a new one means the peer may have restarted

	mu      sync.Mutex // guards groups, waiting, urgent, conn and used
	groups  map[string]*hbGroup
	waiting []*hbCall // calls the next round answers
	urgent  bool      // an urgent call waits
	conn    net.Conn
	used    time.Time // when conn last carried a round
	r       *bufio.Reader
	w       *bufio.Writer
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
	tick := time.NewTicker(p.h.interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-p.kick:
		case <-p.h.done:
			p.mu.Lock()
			waiting := p.waiting
			p.waiting = nil
			p.mu.Unlock()
			for _, c := range waiting {
				c.done <- ErrClosed
			}
			return
		}
		p.round()
	}
}

// hbItem is one heartbeat of a round.
type hbItem struct {
	g    *hbGroup
	name string
	id   raft.ServerID
	req  raft.AppendEntriesRequest
	resp raft.AppendEntriesResponse
	err  error
}

// round sends one frame with the heartbeat of every group that still leads
// in the term it last asked to heartbeat in, or has a call waiting, and
// hands out the answers.
func (p *hbPeer) round() {
	now := time.Now()
	p.mu.Lock()
	waiting := p.waiting
	p.waiting = nil
	urgent := p.urgent
	p.urgent = false
	// The groups calls wait for, and then their items; nil when no call
	// waits (the usual round).
	var wanted map[string]*hbItem
	if len(waiting) > 0 {
		wanted = make(map[string]*hbItem, len(waiting))
		for _, c := range waiting {
			wanted[c.group] = nil
		}
	}
	var items []*hbItem
	for name, g := range p.groups {
		_, waited := wanted[name]
		switch {
		case waited:
		case now.Sub(g.asked) > p.h.forget:
			delete(p.groups, name)
			continue
		case !g.t.leads(g.req.Term):
			continue
		}
		it := &hbItem{g: g, name: name, id: g.id, req: g.req}
		items = append(items, it)
		if waited {
			wanted[name] = it
		}
	}
	p.mu.Unlock()
	if len(items) == 0 && len(waiting) == 0 {
		return
	}
	if urgent {
		p.h.urgentFrames.Add(1)
	}
	sent := time.Now()
	var err error
	for i := 0; i < len(items) && err == nil; i += hbMaxBatch {
		err = p.roundTrip(items[i:min(i+hbMaxBatch, len(items))])
	}
	if err != nil {
		p.closeConn()
	}
	p.mu.Lock()
	for _, it := range items {
		if err != nil {
			it.err = err
		}
		it.g.sent, it.g.sentTerm, it.g.resp, it.g.err = sent, it.req.Term, it.resp, it.err
	}
	p.mu.Unlock()
	// Every acknowledged round renews the group's lease, whether or not
	// raft asked for it: a leader's raft asks a fifth of a heartbeat
	// timeout apart or more, longer than a lease would wait.
	for _, it := range items {
		if it.err == nil && it.resp.Success && it.resp.Term == it.req.Term && it.g.t.lease != nil {
			it.g.t.lease.ack(it.req.Term, it.id, sent)
		}
	}
	for _, c := range waiting {
		it := wanted[c.group]
		if it == nil {
			c.done <- errors.New("raftgroup: heartbeat not sent")
			continue
		}
		if it.err == nil {
			*c.resp = it.resp
		}
		c.sent = sent
		c.done <- it.err
	}
}

// roundTrip sends one frame of heartbeats and reads the answers into items.
// Any error leaves the connection unusable.
func (p *hbPeer) roundTrip(items []*hbItem) error {
	p.mu.Lock()
	conn, r, w := p.conn, p.r, p.w
	if conn != nil && time.Since(p.used) > p.h.idle/2 {
		// Quiet for half the time the peer keeps an idle connection:
		// replace it rather than race the peer closing it.
		conn.Close()
		p.conn, conn = nil, nil
	}
	p.used = time.Now()
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
	e.u64(uint64(len(items)))
	for _, it := range items {
		e.str(it.name)
		e.u64(uint64(it.req.ProtocolVersion))
		e.bytes(it.req.ID)
		e.bytes(it.req.Addr)
		e.u64(it.req.Term)
		e.bytes(it.req.Leader)
	}
	if err := writeFrame(w, e.b); err != nil {
		return err
	}
	p.h.frames.Add(1)
	p.h.sent.Add(uint64(len(items)))
	frame, err := readFrame(r)
	if err != nil {
		return err
	}
	d := hbDecoder{b: frame}
	if n := d.u64(); n != uint64(len(items)) && d.err == nil {
		return fmt.Errorf("raftgroup: heartbeat batch of %d answered with %d", len(items), n)
	}
	for _, it := range items {
		if msg := decodeResponse(&d, &it.resp); msg != "" {
			it.err = errors.New(msg)
		}
	}
	return d.err
}

// serve answers the heartbeat batches of one peer's connection.
func (h *heartbeats) serve(conn net.Conn) {
	r, w := h.reader(conn, 4096), bufio.NewWriter(conn)
	for {
		frame, err := r.next(hbMaxFrame)
		if err != nil {
			return
		}
		batch, err := decodeHeartbeats(frame)
		if err != nil {
			return
		}
		var e hbEncoder
		e.u64(uint64(len(batch)))
		for _, hb := range batch {
			resp, err := h.deliver(hb.group, hb.req)
			encodeResponse(&e, resp, err, "heartbeat failed")
		}
		if err := writeFrame(w, e.b); err != nil {
			return
		}
	}
}

// hbIn is one heartbeat of a received batch.
type hbIn struct {
	group string
	req   *raft.AppendEntriesRequest
}

// hbMinBytes is the least one heartbeat of a batch takes on the wire: a
// length or a number of one byte each for its six fields.
const hbMinBytes = 6

// decodeHeartbeats reads a batch frame (hbPeer.roundTrip writes it). The
// count it declares is checked against hbMaxBatch and against what the
// frame's bytes could hold before anything is allocated for it.
func decodeHeartbeats(frame []byte) ([]hbIn, error) {
	d := hbDecoder{b: frame}
	n := d.u64()
	if d.err != nil {
		return nil, d.err
	}
	if n > hbMaxBatch || n > uint64(len(d.b)/hbMinBytes) {
		return nil, fmt.Errorf("raftgroup: heartbeat batch of %d in %d bytes", n, len(d.b))
	}
	batch := make([]hbIn, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		group := d.str()
		req := &raft.AppendEntriesRequest{}
		req.ProtocolVersion = raft.ProtocolVersion(d.u64())
		req.ID = d.bytes()
		req.Addr = d.bytes()
		req.Term = d.u64()
		req.Leader = d.bytes()
		batch = append(batch, hbIn{group: group, req: req})
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("raftgroup: %d bytes after a heartbeat batch", len(d.b))
	}
	return batch, nil
}

// deliver hands one heartbeat to its group's raft the way NetworkTransport
// does, through the heartbeat handler raft set.
func (h *heartbeats) deliver(group string, req *raft.AppendEntriesRequest) (*raft.AppendEntriesResponse, error) {
	t := h.handler(group)
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
		return appendAnswer(r)
	default:
		return nil, errors.New("raftgroup: group shutting down")
	}
}

// appendAnswer is raft's answer to an AppendEntries (a heartbeat or an
// append) handed to it as an RPC.
func appendAnswer(r raft.RPCResponse) (*raft.AppendEntriesResponse, error) {
	if r.Error != nil {
		return nil, r.Error
	}
	resp, ok := r.Response.(*raft.AppendEntriesResponse)
	if !ok {
		return nil, errors.New("raftgroup: AppendEntries answered with something else")
	}
	return resp, nil
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

func readFrame(r *bufio.Reader) ([]byte, error) { return readFrameMax(r, hbMaxFrame) }

// readFrameMax reads a frame of at most max bytes.
func readFrameMax(r *bufio.Reader, max uint32) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > max {
		return nil, fmt.Errorf("raftgroup: frame of %d bytes", n)
	}
	// By the bytes that arrive, not the length declared: a peer declaring
	// 1 GiB and sending 1 KiB took 1 GiB.
	return readn.Full(r, int(n))
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

// view splits length-prefixed bytes off the frame without copying them
// (append frames are their requests' own buffers).
func (d *hbDecoder) view() []byte {
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
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// bytes is view, copied: a heartbeat frame's buffer is not kept.
func (d *hbDecoder) bytes() []byte {
	v := d.view()
	if v == nil {
		return nil
	}
	return append([]byte(nil), v...)
}

func (d *hbDecoder) str() string { return string(d.view()) }
