package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/raftgroup"
)

// maxHops bounds how many times a request is forwarded between nodes.
const maxHops = 3

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func newForwardClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// leaderCache remembers, per group, the HTTP address that last answered as
// the group's leader, for nodes that host no replica of it.
type leaderCache struct {
	mu sync.Mutex // guards m
	m  map[string]string
}

func (c *leaderCache) get(gid string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[gid]
}

func (c *leaderCache) set(gid, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]string{}
	}
	c.m[gid] = addr
}

func (c *leaderCache) forget(gid, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[gid] == addr {
		delete(c.m, gid)
	}
}

// waitLeader waits (up to 2s, within ctx) for the local replica of a group to
// know a leader, and returns the leader's node name.
func waitLeader(ctx context.Context, g *raftgroup.Group) string {
	deadline := time.Now().Add(2 * time.Second)
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := g.Leader(); id != "" {
			return id
		}
		if time.Now().After(deadline) {
			return ""
		}
		select {
		case <-ctx.Done():
			return ""
		case <-t.C:
		}
	}
}

// forwardTargets lists, best first, the nodes a request for gid may be sent
// to: the leader as the local replica knows it, the cached leader, then the
// group's other replicas.
func (s *Server) forwardTargets(ctx context.Context, gid string) []string {
	var out []string
	seen := map[string]bool{s.httpAdv: true, "": true}
	add := func(addr string) {
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	if g, ok := s.host.Group(gid); ok {
		if id := waitLeader(ctx, g); id != "" {
			if m, ok := s.mem.member(id); ok {
				add(m.HTTP)
			}
		}
	}
	add(s.leaders.get(gid))
	if p, _ := s.currentPlacement(); p != nil {
		if gp, ok := p.Group(gid); ok {
			for _, voter := range []bool{true, false} {
				for _, r := range gp.Replicas {
					if r.Voter != voter {
						continue
					}
					if m, ok := s.mem.member(r.Node); ok && m.alive() {
						add(m.HTTP)
					}
				}
			}
		}
	}
	return out
}

// forward sends the request to another node that can serve group gid and
// copies its answer back. A write that may have reached a node whose answer
// was lost is reported as indeterminate, never retried.
func (s *Server) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, body []byte, gid string, write bool) {
	hops, _ := strconv.Atoi(r.Header.Get(client.HeaderHops))
	if hops >= maxHops {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "no leader reachable for group "+gid+" (forwarded too many times); retry")
		return
	}
	targets := s.forwardTargets(ctx, gid)
	for _, t := range targets {
		req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+t+r.URL.RequestURI(), bytesReader(body))
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		for _, h := range []string{"Content-Type", client.HeaderEpoch} {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		req.Header.Set(client.HeaderHops, strconv.Itoa(hops+1))
		resp, err := s.fwd.Do(req)
		if err != nil {
			var op *net.OpError
			if (errors.As(err, &op) && op.Op == "dial") || !write {
				s.leaders.forget(gid, t)
				if ctx.Err() != nil {
					break
				}
				continue // nothing was sent, or a read: try the next node
			}
			writeJSON(w, http.StatusGatewayTimeout, client.ErrorBody{Error: "the write's outcome is unknown (forwarding to " + t + " failed: " + err.Error() + ")", Indeterminate: true})
			return
		}
		if l := resp.Header.Get(client.HeaderLeaderHTTP); l != "" {
			s.leaders.set(gid, l)
		}
		for k, vs := range resp.Header {
			if k == "Content-Length" || k == "Connection" || k == "Date" {
				continue
			}
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		resp.Body.Close()
		return
	}
	// Every attempt failed before anything was sent: a definite failure.
	w.Header().Set("Retry-After", "1")
	if ctx.Err() != nil {
		writeError(w, http.StatusServiceUnavailable, "timed out finding the leader of group "+gid+"; nothing was applied")
		return
	}
	msg := "no leader known for group " + gid + "; retry"
	if gid == placement.GlobalGroup && len(targets) == 0 {
		msg = "no node of the global group is reachable; retry"
	}
	writeError(w, http.StatusServiceUnavailable, msg)
}
