package raftgroup

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Node-level appends. hashicorp/raft's NetworkTransport pipelines each
// group's AppendEntries to each follower over a connection of its own, each
// request and answer a msgpack message written by itself; on the follower a
// goroutine per connection decodes them and hands them to raft through the
// group's consumer channel (and here through the lease filter, one more
// hand-off). Under 256 writing clients that was about a sixth of the
// servers' CPU (msgpack alone 6%).
//
// Here the pipelined appends of all of a node's groups to one peer share one
// connection: requests are encoded with a fixed binary layout, what the
// groups queue while the connection is busy goes out in one write, and the
// answers come back the same way. On the receiving node one reader decodes
// them and hands each to its group's inbox, a goroutine per group and
// connection that gives it to raft (straight to its consumer channel) and
// queues the answer, in order: a group's appends are handled in the order
// they were sent, as on a connection of their own, and one group's slow
// append never holds up another's.
//
// Only pipelined appends go this way (raft's steady replication). The
// AppendEntries raft sends on its own (probing a follower's log, after a
// failure), votes, snapshots and TimeoutNow use NetworkTransport as before,
// and heartbeats their own rounds (heartbeat.go). A connection that fails
// fails every append in flight on it: raft sees unsuccessful answers, stops
// the pipeline, replicates through NetworkTransport and pipelines again
// later, over a new connection. A peer that does not take these connections
// (an older version) is sent NetworkTransport's pipelines for a while.

// apMuxID names append connections on the mux; it can never be a group id
// (CheckGroupID).
const apMuxID = "_appends"

// apMaxInFlight bounds a pipeline's appends sent and not yet taken by raft,
// as NetworkTransport's pipeline does (rpcMaxPipeline).
const apMaxInFlight = 128

// apWriterYields is how many times a connection's writer yields before it
// takes what is queued, so that appends (or answers) of other groups about
// to be queued join the same write (as the frames' writers do).
const apWriterYields = 2

// apRefusedFor is how long a peer that closed an append connection before
// answering anything gets NetworkTransport's pipelines instead.
const apRefusedFor = 30 * time.Second

// appends is a host's append sender, one apPeer per peer, and the receiving
// side for the host's groups.
type appends struct {
	peerService // mu guards peers too
	m           *mux
	timeout     time.Duration

	peers map[raft.ServerAddress]*apPeer

	sent, frames atomic.Uint64 // appends and frames sent, for tests
}

func newAppends(m *mux, timeout, idle time.Duration) (*appends, error) {
	a := &appends{
		m: m, timeout: timeout,
		peers: map[raft.ServerAddress]*apPeer{},
	}
	if err := a.start(m, apMuxID, idle, timeout, a.serve); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *appends) close() {
	var peers []*apPeer
	if !a.shut(func() {
		for _, p := range a.peers {
			peers = append(peers, p)
		}
	}) {
		return
	}
	// Outside the lock: a sender takes it while holding its peer's.
	for _, p := range peers {
		p.fail(nil, ErrClosed)
	}
	a.wg.Wait()
}

// peer returns the sender to target; nil if target refused append
// connections lately or the host is closing.
func (a *appends) peer(target raft.ServerAddress) *apPeer {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	p := a.peers[target]
	if p == nil {
		p = &apPeer{a: a, addr: target, pending: map[uint64]*apFuture{}}
		a.peers[target] = p
	}
	if time.Now().Before(p.refusedUntil) {
		return nil
	}
	return p
}

// apPeer sends the appends of this node's groups to one peer.
type apPeer struct {
	a    *appends
	addr raft.ServerAddress

	mu           sync.Mutex // guards everything below
	conn         net.Conn   // nil: none yet, or the last one failed
	kick         chan struct{}
	out          []byte // frames not yet written
	seq          uint64
	pending      map[uint64]*apFuture // sent, not yet answered, by seq
	answered     bool                 // conn answered something
	lastSend     time.Time            // when an append was last queued
	refusedUntil time.Time
}

// send queues f's request on the connection, dialing one if there is none.
func (p *apPeer) send(group string, f *apFuture) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && len(p.pending) == 0 && time.Since(p.lastSend) > p.a.idle/2 {
		// Quiet for half the time the peer keeps an idle connection:
		// replace it rather than race the peer closing it. Nothing is in
		// flight on it; its reader and writer see it is gone and end.
		p.conn.Close()
		p.conn = nil
		p.out = p.out[:0]
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	p.lastSend = time.Now()
	if p.conn == nil {
		conn, err := p.a.m.dial(apMuxID, p.addr, p.a.timeout)
		if err != nil {
			return err
		}
		p.a.mu.Lock()
		closed := p.a.closed
		if !closed {
			p.a.wg.Add(2) // the reader and the writer
		}
		p.a.mu.Unlock()
		if closed {
			conn.Close()
			return ErrClosed
		}
		p.conn, p.answered, p.kick = conn, false, make(chan struct{}, 1)
		go p.read(conn)
		go p.write(conn, p.kick)
	}
	p.seq++
	f.seq = p.seq
	start := len(p.out)
	p.out = append(p.out, 0, 0, 0, 0)
	p.out = appendRequest(p.out, f.seq, group, f.req)
	putFrameLen(p.out[start:], len(p.out)-start-4)
	if len(p.pending) == 0 {
		// An answer is due: a peer gone silent fails the appends in
		// flight after the timeout, as NetworkTransport's pipeline does.
		p.conn.SetReadDeadline(time.Now().Add(p.a.timeout))
	}
	p.pending[f.seq] = f
	p.a.sent.Add(1)
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return nil
}

// write writes what is queued on conn until conn fails or is replaced.
func (p *apPeer) write(conn net.Conn, kick chan struct{}) {
	defer p.a.wg.Done()
	err := writeQueued(conn, kick, p.a.done, p.a.timeout, func(spare []byte) ([]byte, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.conn != conn {
			return nil, false
		}
		b := p.out
		p.out = spare
		if len(b) > 0 {
			p.a.frames.Add(1)
		}
		return b, true
	})
	if err != nil {
		p.fail(conn, err)
	}
}

// writeQueued is a connection's writer: woken by kick, it yields
// apWriterYields times, so that what other goroutines are about to queue
// joins this write, then writes what take hands it (take gets the buffer
// of the previous write back, emptied, to queue into next; false: stop).
// It returns at done, or with the error of a write.
func writeQueued(conn net.Conn, kick, done <-chan struct{}, timeout time.Duration, take func(spare []byte) ([]byte, bool)) error {
	var buf []byte
	for {
		select {
		case <-kick:
		case <-done:
			return nil
		}
		for range apWriterYields {
			runtime.Gosched()
		}
		var ok bool
		if buf, ok = take(buf[:0]); !ok {
			return nil
		}
		if len(buf) == 0 {
			continue
		}
		conn.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := conn.Write(buf); err != nil {
			return err
		}
	}
}

// read hands the answers that arrive on conn to their pipelines.
func (p *apPeer) read(conn net.Conn) {
	defer p.a.wg.Done()
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		frame, err := readFrameMax(r, hbMaxFrame)
		if err != nil {
			p.fail(conn, err)
			return
		}
		d := hbDecoder{b: frame}
		seq := d.u64()
		var resp raft.AppendEntriesResponse
		msg := decodeResponse(&d, &resp)
		if d.err != nil {
			p.fail(conn, d.err)
			return
		}
		p.mu.Lock()
		f := p.pending[seq]
		delete(p.pending, seq)
		p.answered = true
		if p.conn == conn {
			if len(p.pending) == 0 {
				conn.SetReadDeadline(time.Time{}) // nothing due: an idle connection may stay quiet
			} else {
				conn.SetReadDeadline(time.Now().Add(p.a.timeout))
			}
		}
		p.mu.Unlock()
		if f == nil {
			p.fail(conn, fmt.Errorf("raftgroup: append answer %d matches no request", seq))
			return
		}
		if msg != "" {
			f.err = errors.New(msg)
		} else {
			*f.resp = resp
		}
		f.p.deliver(f)
	}
}

// fail closes conn (any connection if nil) and fails every append in
// flight on it, in the order they were sent.
func (p *apPeer) fail(conn net.Conn, err error) {
	p.mu.Lock()
	if p.conn == nil || conn != nil && p.conn != conn {
		p.mu.Unlock()
		return
	}
	var ne net.Error
	if !p.answered && !errors.Is(err, ErrClosed) && !(errors.As(err, &ne) && ne.Timeout()) {
		// Closed by the peer before answering anything: a node that does
		// not take append connections does that (one that is only slow,
		// or paused, times out instead).
		p.refusedUntil = time.Now().Add(apRefusedFor)
	}
	p.conn.Close()
	p.conn = nil
	p.out = p.out[:0]
	select { // the writer sees the connection is gone
	case p.kick <- struct{}{}:
	default:
	}
	failed := make([]*apFuture, 0, len(p.pending))
	for seq, f := range p.pending {
		failed = append(failed, f)
		delete(p.pending, seq)
	}
	p.mu.Unlock()
	slices.SortFunc(failed, func(x, y *apFuture) int { return cmp.Compare(x.seq, y.seq) })
	for _, f := range failed {
		f.err = err
		f.p.deliver(f)
	}
}

// apPipeline is one group's pipeline of appends to one follower.
type apPipeline struct {
	peer  *apPeer
	group string
	slots chan struct{} // one per append sent and not yet taken by raft
	out   chan raft.AppendFuture
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup

	ready *queue[*apFuture] // answered or failed, for raft in order
}

func newAPPipeline(p *apPeer, group string) *apPipeline {
	pl := &apPipeline{
		peer: p, group: group,
		slots: make(chan struct{}, apMaxInFlight),
		out:   make(chan raft.AppendFuture),
		done:  make(chan struct{}),
		ready: newQueue[*apFuture](),
	}
	pl.wg.Add(1)
	go pl.pump()
	return pl
}

// AppendEntries implements raft.AppendPipeline.
func (pl *apPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	select {
	case pl.slots <- struct{}{}:
	case <-pl.done:
		return nil, raft.ErrPipelineShutdown
	}
	f := &apFuture{p: pl, start: time.Now(), req: args, resp: resp}
	if err := pl.peer.send(pl.group, f); err != nil {
		<-pl.slots
		return nil, err
	}
	return f, nil
}

// deliver queues an answered (or failed) append for raft, in order. After
// Close nothing takes it, and it goes with the pipeline.
func (pl *apPipeline) deliver(f *apFuture) { pl.ready.push(f) }

// pump hands the answers to raft, never holding up the connection's
// reader (which serves every group) while raft is busy.
func (pl *apPipeline) pump() {
	defer pl.wg.Done()
	for {
		select {
		case <-pl.ready.kick:
		case <-pl.done:
			return
		}
		for {
			f, ok := pl.ready.pop()
			if !ok {
				break
			}
			select {
			case pl.out <- f:
				<-pl.slots
			case <-pl.done:
				return
			}
		}
	}
}

// Consumer implements raft.AppendPipeline.
func (pl *apPipeline) Consumer() <-chan raft.AppendFuture { return pl.out }

// Close implements raft.AppendPipeline. Appends still in flight are
// answered to no one.
func (pl *apPipeline) Close() error {
	pl.once.Do(func() { close(pl.done) })
	pl.wg.Wait()
	return nil
}

// apFuture is one append sent by an apPipeline.
type apFuture struct {
	p     *apPipeline
	seq   uint64
	start time.Time
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error
}

func (f *apFuture) Error() error                          { return f.err }
func (f *apFuture) Start() time.Time                      { return f.start }
func (f *apFuture) Request() *raft.AppendEntriesRequest   { return f.req }
func (f *apFuture) Response() *raft.AppendEntriesResponse { return f.resp }

// The receiving side.

// apConn is one peer's append connection, being served.
type apConn struct {
	a    *appends
	conn net.Conn
	done chan struct{} // closed when the connection ends

	mu   sync.Mutex // guards out
	out  []byte
	kick chan struct{}
	wg   sync.WaitGroup
}

type apRequest struct {
	seq uint64
	req *raft.AppendEntriesRequest
}

// serve reads one peer's appends and hands each to its group's inbox.
func (a *appends) serve(conn net.Conn) {
	c := &apConn{a: a, conn: conn, done: make(chan struct{}), kick: make(chan struct{}, 1)}
	inboxes := map[string]*queue[apRequest]{} // a group's appends from this connection, for its raft in order
	c.wg.Add(1)
	go c.write()
	defer func() {
		conn.Close()
		close(c.done)
		c.wg.Wait()
	}()
	r := a.reader(conn, 64<<10)
	for {
		frame, err := r.next(apMaxFrame)
		if err != nil {
			return
		}
		d := hbDecoder{b: frame}
		seq := d.u64()
		group := d.str()
		req := &raft.AppendEntriesRequest{}
		decodeRequest(&d, req)
		if d.err != nil {
			return
		}
		in := inboxes[group]
		if in == nil {
			in = newQueue[apRequest]()
			inboxes[group] = in
			c.wg.Add(1)
			go c.run(group, in)
		}
		in.push(apRequest{seq: seq, req: req})
	}
}

// run gives group's appends to its raft one at a time and queues the
// answers.
func (c *apConn) run(group string, in *queue[apRequest]) {
	defer c.wg.Done()
	respCh := make(chan raft.RPCResponse, 1)
	for {
		select {
		case <-in.kick:
		case <-c.done:
			return
		}
		for {
			r, ok := in.pop()
			if !ok {
				break
			}
			resp, err := c.deliver(group, r.req, respCh)
			if errors.Is(err, errConnDone) {
				return
			}
			c.answer(r.seq, resp, err)
		}
	}
}

var errConnDone = errors.New("raftgroup: append connection closed")

// deliver hands req to group's raft as NetworkTransport would, and waits
// for the answer.
func (c *apConn) deliver(group string, req *raft.AppendEntriesRequest, respCh chan raft.RPCResponse) (*raft.AppendEntriesResponse, error) {
	t := c.a.handler(group)
	if t == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoGroup, group)
	}
	select {
	case t.rpcs <- raft.RPC{Command: req, RespChan: respCh}:
	case <-t.done:
		return nil, ErrClosed
	case <-c.done:
		return nil, errConnDone
	}
	select {
	case r := <-respCh:
		return appendAnswer(r)
	case <-t.done:
		return nil, ErrClosed
	case <-c.done:
		return nil, errConnDone
	}
}

// answer queues the answer to request seq and starts a writer if none runs.
func (c *apConn) answer(seq uint64, resp *raft.AppendEntriesResponse, err error) {
	var e hbEncoder
	e.b = append(e.b, 0, 0, 0, 0)
	e.u64(seq)
	encodeResponse(&e, resp, err, "append failed")
	putFrameLen(e.b, len(e.b)-4)
	c.mu.Lock()
	c.out = append(c.out, e.b...)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// write writes the queued answers until the connection ends.
func (c *apConn) write() {
	defer c.wg.Done()
	err := writeQueued(c.conn, c.kick, c.done, c.a.timeout, func(spare []byte) ([]byte, bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		b := c.out
		c.out = spare
		return b, true
	})
	if err != nil {
		c.conn.Close() // the reader sees it and ends the connection
	}
}

// queue is an unbounded FIFO with a one-slot kick channel: push never
// blocks (the connection's reader serves every group), and one goroutine
// drains it when kicked.
type queue[T any] struct {
	mu    sync.Mutex
	items []T
	kick  chan struct{}
}

func newQueue[T any]() *queue[T] { return &queue[T]{kick: make(chan struct{}, 1)} }

func (q *queue[T]) push(v T) {
	q.mu.Lock()
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *queue[T]) pop() (T, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var v T
	if len(q.items) == 0 {
		return v, false
	}
	v, q.items = q.items[0], q.items[1:]
	return v, true
}

// apMaxFrame bounds the bytes an append frame may claim; raft sends at
// most MaxAppendEntries entries in one. A frame is allocated as its bytes
// arrive (readFrameMax), never by this bound.
const apMaxFrame = 1 << 30

// apMaxEntries is the most entries an append frame may carry: raft refuses
// a MaxAppendEntries above 1024. apMinEntryBytes is the least an entry
// takes on the wire (six fields of a byte at least).
const (
	apMaxEntries    = 1024
	apMinEntryBytes = 6
)

// The wire format: a frame (writeFrame's 4-byte length) per request or
// answer; uvarints and length-prefixed bytes as in heartbeat frames.

func putFrameLen(b []byte, n int) {
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

func appendRequest(b []byte, seq uint64, group string, req *raft.AppendEntriesRequest) []byte {
	e := hbEncoder{b: b}
	e.u64(seq)
	e.str(group)
	e.u64(uint64(req.ProtocolVersion))
	e.bytes(req.ID)
	e.bytes(req.Addr)
	e.u64(req.Term)
	e.bytes(req.Leader)
	e.u64(req.PrevLogEntry)
	e.u64(req.PrevLogTerm)
	e.u64(req.LeaderCommitIndex)
	e.u64(uint64(len(req.Entries)))
	for _, l := range req.Entries {
		e.u64(l.Index)
		e.u64(l.Term)
		e.u64(uint64(l.Type))
		e.bytes(l.Data)
		e.bytes(l.Extensions)
		var at int64
		if !l.AppendedAt.IsZero() {
			at = l.AppendedAt.UnixNano()
		}
		e.u64(uint64(at))
	}
	return e.b
}

func decodeRequest(d *hbDecoder, req *raft.AppendEntriesRequest) {
	req.ProtocolVersion = raft.ProtocolVersion(d.u64())
	req.ID = d.bytes()
	req.Addr = d.bytes()
	req.Term = d.u64()
	req.Leader = d.bytes()
	req.PrevLogEntry = d.u64()
	req.PrevLogTerm = d.u64()
	req.LeaderCommitIndex = d.u64()
	n := d.u64()
	// Allocate for what the frame can hold, never for the count it
	// declares: an entry takes apMinEntryBytes at least, and raft sends at
	// most apMaxEntries (its own MaxAppendEntries limit). One byte each
	// let an 8 MiB frame of zeros take 840 MiB (104 bytes a raft.Log).
	if d.err != nil || n > apMaxEntries || n > uint64(len(d.b)/apMinEntryBytes) {
		d.err = errHBShort
		return
	}
	if n > 0 {
		req.Entries = make([]*raft.Log, n)
		logs := make([]raft.Log, n)
		for i := range logs {
			l := &logs[i]
			l.Index = d.u64()
			l.Term = d.u64()
			l.Type = raft.LogType(d.u64())
			l.Data = d.view()
			l.Extensions = d.view()
			if at := int64(d.u64()); at != 0 {
				l.AppendedAt = time.Unix(0, at)
			}
			req.Entries[i] = l
		}
	}
}

// encodeResponse writes an AppendEntries answer, or err's message (failed
// where it has none); heartbeat frames answer the same way.
func encodeResponse(e *hbEncoder, resp *raft.AppendEntriesResponse, err error, failed string) {
	if err != nil {
		msg := err.Error()
		if msg == "" {
			msg = failed
		}
		e.str(msg)
		return
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

// decodeResponse reads an answer into resp, or returns its error message.
func decodeResponse(d *hbDecoder, resp *raft.AppendEntriesResponse) string {
	if msg := d.str(); msg != "" {
		return msg
	}
	resp.ProtocolVersion = raft.ProtocolVersion(d.u64())
	resp.ID = d.bytes()
	resp.Addr = d.bytes()
	resp.Term = d.u64()
	resp.LastLog = d.u64()
	resp.Success = d.u64() == 1
	resp.NoRetryBackoff = d.u64() == 1
	return ""
}
