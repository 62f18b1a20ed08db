package raftgroup

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// peerService is the receiving half shared by a host's node-level services
// (heartbeats, appends): a mux layer of their own, the groups hosted here
// by id, and the connections being served.
type peerService struct {
	layer *streamLayer

	// idle is how long a served connection may wait for its next frame,
	// and progress how long a frame once begun may go without a byte.
	idle, progress time.Duration

	mu       sync.Mutex // guards handlers, conns, closed, and the service's own peers
	handlers map[string]*leaseTransport
	conns    map[net.Conn]struct{}
	closed   bool

	done chan struct{} // closed by shut
	wg   sync.WaitGroup
}

// start registers the layer id on m and serves each connection that
// arrives there with serve, on a goroutine of its own. A served connection
// is read through frames, with the idle and progress deadlines.
func (s *peerService) start(m *mux, id string, idle, progress time.Duration, serve func(net.Conn)) error {
	s.idle, s.progress = idle, min(progress, idle)
	s.handlers = map[string]*leaseTransport{}
	s.conns = map[net.Conn]struct{}{}
	s.done = make(chan struct{})
	layer, err := m.layer(id)
	if err != nil {
		return err
	}
	s.layer = layer
	s.wg.Add(1)
	go s.accept(serve)
	return nil
}

func (s *peerService) accept(serve func(net.Conn)) {
	defer s.wg.Done()
	for {
		conn, err := s.layer.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, conn)
				s.mu.Unlock()
				conn.Close()
			}()
			serve(conn)
		}()
	}
}

func (s *peerService) register(id string, t *leaseTransport) {
	s.mu.Lock()
	s.handlers[id] = t
	s.mu.Unlock()
}

func (s *peerService) unregister(id string, t *leaseTransport) {
	s.mu.Lock()
	if s.handlers[id] == t {
		delete(s.handlers, id)
	}
	s.mu.Unlock()
}

// handler returns the transport of group id, nil if it is not hosted here.
func (s *peerService) handler(id string) *leaseTransport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handlers[id]
}

// shut stops accepting and closes the connections being served, running
// also under the lock; false if it was shut already. The caller waits
// for wg.
func (s *peerService) shut(also func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	close(s.done)
	s.layer.Close()
	for c := range s.conns {
		c.Close()
	}
	if also != nil {
		also()
	}
	return true
}

// frameReader reads the frames a peer sends on a served connection with
// deadlines: idle while it waits for a frame's first byte (a peer's
// connection may be quiet between appends), progress for each read once a
// frame has begun, so that a frame cut short, or trickled, ends the
// connection instead of holding it (and the goroutine serving it) forever.
type frameReader struct {
	conn           net.Conn
	r              *bufio.Reader
	idle, progress time.Duration
	waiting        bool
}

func (s *peerService) reader(conn net.Conn, size int) *frameReader {
	f := &frameReader{conn: conn, idle: s.idle, progress: s.progress}
	f.r = bufio.NewReaderSize(f, size)
	return f
}

// Read is the bufio.Reader's source: one deadline per read of the socket.
func (f *frameReader) Read(p []byte) (int, error) {
	d := f.progress
	if f.waiting {
		d = f.idle
	}
	f.conn.SetReadDeadline(time.Now().Add(d))
	return f.conn.Read(p)
}

// next reads the next frame of at most max bytes.
func (f *frameReader) next(max uint32) ([]byte, error) {
	if f.r.Buffered() == 0 {
		f.waiting = true
		_, err := f.r.Peek(1)
		f.waiting = false
		if err != nil {
			return nil, err
		}
	}
	return readFrameMax(f.r, max)
}
