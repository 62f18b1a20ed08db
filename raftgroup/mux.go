package raftgroup

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/yamux"
)

// The wire header of a multiplexed connection: a magic byte, the length of
// the group id, the group id. Everything after it belongs to hashicorp/raft's
// NetworkTransport of that group.
const muxMagic = 'L'

// sessionMagic starts a connection that carries a yamux session instead:
// each stream of it is one group connection, starting with the header above.
// A node with SharedConnections keeps one such session per peer, so all its
// groups' Raft traffic to that peer travels in one TCP connection; a node
// accepts both kinds whatever its own setting. A stream cannot start a
// session of its own.
const sessionMagic = 'Y'

// mux serves one TCP listener for every group of the host: each accepted
// connection names its group first and is handed to that group's stream
// layer.
type mux struct {
	ln        net.Listener
	advertise net.Addr
	logger    *slog.Logger

	mu     sync.Mutex // guards layers and closed
	layers map[string]*streamLayer
	closed bool

	wg sync.WaitGroup // the accept loop, sessions and handshakes in flight

	accepted atomic.Int64 // TCP connections accepted (tests count them)

	shared  bool       // dial group connections as streams of one session per peer
	smu     sync.Mutex // guards out and in
	out     map[string]*peerSession
	in      map[*yamux.Session]struct{}
	sclosed bool
}

// peerSession is the session this node dialled to one peer.
type peerSession struct {
	mu sync.Mutex // held while dialling
	s  *yamux.Session
}

func newMux(ln net.Listener, advertise string, logger *slog.Logger, shared bool) (*mux, error) {
	addr, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("raftgroup: advertise address %q: %w", advertise, err)
	}
	m := &mux{ln: ln, advertise: addr, logger: logger, layers: make(map[string]*streamLayer),
		shared: shared, out: make(map[string]*peerSession), in: make(map[*yamux.Session]struct{})}
	m.wg.Add(1)
	go m.acceptLoop()
	return m, nil
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			m.logger.Warn("raft listener accept failed", "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		m.accepted.Add(1)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.handshake(conn)
		}()
	}
}

func (m *mux) handshake(conn net.Conn) {
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [2]byte
	if _, err := io.ReadFull(conn, hdr[:1]); err != nil {
		conn.Close()
		return
	}
	if _, stream := conn.(closingStream); hdr[0] == sessionMagic && !stream {
		conn.SetReadDeadline(time.Time{})
		m.serveSession(conn)
		return
	}
	if _, err := io.ReadFull(conn, hdr[1:]); err != nil || hdr[0] != muxMagic || hdr[1] == 0 {
		conn.Close()
		return
	}
	id := make([]byte, hdr[1])
	if _, err := io.ReadFull(conn, id); err != nil {
		conn.Close()
		return
	}
	conn.SetReadDeadline(time.Time{})
	m.mu.Lock()
	l := m.layers[string(id)]
	m.mu.Unlock()
	if l == nil {
		// Not hosted here (yet, or any more): the peer's transport retries.
		conn.Close()
		return
	}
	select {
	case l.acceptCh <- conn:
	case <-l.done:
		conn.Close()
	}
}

// layer registers and returns the stream layer of group id.
func (m *mux) layer(id string) (*streamLayer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if _, ok := m.layers[id]; ok {
		return nil, fmt.Errorf("raftgroup: group %s already has a stream layer", id)
	}
	l := &streamLayer{m: m, id: id, acceptCh: make(chan net.Conn), done: make(chan struct{})}
	m.layers[id] = l
	return l, nil
}

func (m *mux) unregister(l *streamLayer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.layers[l.id] == l {
		delete(m.layers, l.id)
	}
}

func (m *mux) close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.ln.Close()
	m.smu.Lock()
	m.sclosed = true
	for _, p := range m.out {
		if p.s != nil {
			p.s.Close()
		}
	}
	for s := range m.in {
		s.Close()
	}
	m.smu.Unlock()
	m.wg.Wait()
}

func sessionConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	// A peer that stopped answering is found by the keepalive: its pings
	// must be answered within ConnectionWriteTimeout. The streams' own
	// deadlines (hashicorp/raft sets them on every RPC) fail sooner.
	c.KeepAliveInterval = 5 * time.Second
	c.ConnectionWriteTimeout = 5 * time.Second
	c.AcceptBacklog = 1024
	return c
}

// serveSession accepts the streams of a session a peer dialled: each is a
// group connection with its header.
func (m *mux) serveSession(conn net.Conn) {
	bc := newBatchConn(conn)
	s, err := yamux.Server(bc, sessionConfig())
	if err != nil {
		bc.Close()
		return
	}
	m.smu.Lock()
	if m.sclosed {
		m.smu.Unlock()
		s.Close()
		return
	}
	m.in[s] = struct{}{}
	m.smu.Unlock()
	defer func() {
		m.smu.Lock()
		delete(m.in, s)
		m.smu.Unlock()
		s.Close()
	}()
	for {
		st, err := s.AcceptStream()
		if err != nil {
			return
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.handshake(closingStream{st})
		}()
	}
}

// openStream opens a stream of this node's session to address, dialling
// the session if there is none or it failed.
func (m *mux) openStream(address string, timeout time.Duration) (net.Conn, error) {
	m.smu.Lock()
	if m.sclosed {
		m.smu.Unlock()
		return nil, ErrClosed
	}
	p := m.out[address]
	if p == nil {
		p = &peerSession{}
		m.out[address] = p
	}
	m.smu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.s == nil || p.s.IsClosed() {
		d := net.Dialer{Timeout: timeout}
		conn, err := d.Dial("tcp", address)
		if err != nil {
			return nil, err
		}
		conn.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := conn.Write([]byte{sessionMagic}); err != nil {
			conn.Close()
			return nil, err
		}
		conn.SetWriteDeadline(time.Time{})
		bc := newBatchConn(conn)
		s, err := yamux.Client(bc, sessionConfig())
		if err != nil {
			bc.Close()
			return nil, err
		}
		m.smu.Lock()
		closed := m.sclosed
		m.smu.Unlock()
		if closed {
			s.Close()
			return nil, ErrClosed
		}
		p.s = s
	}
	st, err := p.s.OpenStream()
	if err != nil {
		return nil, err
	}
	return closingStream{st}, nil
}

// closingStream is a stream whose Close also ends a Read blocked on it, as
// closing a TCP connection does: yamux's Close only half-closes, and a
// reader waits for the peer's side, which is what the code closing a
// connection to stop its reader (the heartbeat server, on shutdown) does
// not expect.
type closingStream struct{ *yamux.Stream }

func (s closingStream) Close() error {
	s.Stream.SetReadDeadline(time.Now())
	return s.Stream.Close()
}

// maxBatched bounds what a batchConn holds before Write waits for it to be
// written.
const maxBatched = 4 << 20

// batchConn gathers a session's writes and writes them in one system call
// per batch: yamux writes every frame's header and body separately, two
// system calls per message where NetworkTransport's own connections made
// one.
type batchConn struct {
	net.Conn
	mu    sync.Mutex // guards buf and err
	drain sync.Cond  // signalled when buf was taken
	buf   []byte
	err   error
	kick  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c, kick: make(chan struct{}, 1), done: make(chan struct{})}
	b.drain.L = &b.mu
	go b.loop()
	return b
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && len(c.buf) >= maxBatched {
		c.drain.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.buf = append(c.buf, p...)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *batchConn) loop() {
	var out []byte
	for {
		select {
		case <-c.kick:
		case <-c.done:
			return
		}
		runtime.Gosched() // let the frames being queued join this write
		c.mu.Lock()
		out, c.buf = c.buf, out[:0]
		c.drain.Broadcast()
		c.mu.Unlock()
		if len(out) == 0 {
			continue
		}
		if _, err := c.Conn.Write(out); err != nil {
			c.mu.Lock()
			c.err = err
			c.drain.Broadcast()
			c.mu.Unlock()
			c.Conn.Close()
			return
		}
	}
}

func (c *batchConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.mu.Lock()
		if c.err == nil {
			c.err = net.ErrClosed
		}
		c.drain.Broadcast()
		c.mu.Unlock()
	})
	return c.Conn.Close()
}

// streamLayer is one group's view of the shared listener. Closing it stops
// deliveries to this group only; the listener stays open.
type streamLayer struct {
	m        *mux
	id       string
	acceptCh chan net.Conn
	done     chan struct{}
	once     sync.Once
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.acceptCh:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamLayer) Close() error {
	l.once.Do(func() {
		l.m.unregister(l)
		close(l.done)
	})
	return nil
}

func (l *streamLayer) Addr() net.Addr { return l.m.advertise }

func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.m.dial(l.id, address, timeout)
}

// dial connects to the mux at address and names id as the connection's
// receiver there.
func (m *mux) dial(id string, address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	var err error
	if m.shared {
		conn, err = m.openStream(string(address), timeout)
	} else {
		d := net.Dialer{Timeout: timeout}
		conn, err = d.Dial("tcp", string(address))
	}
	if err != nil {
		return nil, err
	}
	hdr := append([]byte{muxMagic, byte(len(id))}, id...)
	conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(hdr); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetWriteDeadline(time.Time{})
	return conn, nil
}
