package raftgroup

import (
	"net"
	"sync"
)

// peerService is the receiving half shared by a host's node-level services
// (heartbeats, appends): a mux layer of their own, the groups hosted here
// by id, and the connections being served.
type peerService struct {
	layer *streamLayer

	mu       sync.Mutex // guards handlers, conns, closed, and the service's own peers
	handlers map[string]*leaseTransport
	conns    map[net.Conn]struct{}
	closed   bool

	done chan struct{} // closed by shut
	wg   sync.WaitGroup
}

// start registers the layer id on m and serves each connection that
// arrives there with serve, on a goroutine of its own.
func (s *peerService) start(m *mux, id string, serve func(net.Conn)) error {
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
