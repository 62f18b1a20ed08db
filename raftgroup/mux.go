package raftgroup

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The wire header of a multiplexed connection: a magic byte, the length of
// the group id, the group id. Everything after it belongs to hashicorp/raft's
// NetworkTransport of that group.
const muxMagic = 'L'

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

	wg sync.WaitGroup // the accept loop and handshakes in flight
}

func newMux(ln net.Listener, advertise string, logger *slog.Logger) (*mux, error) {
	addr, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("raftgroup: advertise address %q: %w", advertise, err)
	}
	m := &mux{ln: ln, advertise: addr, logger: logger, layers: make(map[string]*streamLayer)}
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
	if _, err := io.ReadFull(conn, hdr[:]); err != nil || hdr[0] != muxMagic || hdr[1] == 0 {
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
	m.wg.Wait()
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
	d := net.Dialer{Timeout: timeout}
	conn, err := d.Dial("tcp", string(address))
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
