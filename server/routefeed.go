package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/store"
)

// A node without a replica of the global group keeps its copy of the
// placement (and so its routing table) fresh by following the global
// group's change feed from a node that has one: it reads the placement
// with the index it is current to, then streams every later change and
// applies those to the placement record.

// handlePlacementAt answers GET /v1/internal/placement/at: the stored
// placement and the global applied index it is consistent with, from a
// local global replica or CZone copy.
func (s *Server) handlePlacementAt(w http.ResponseWriter, r *http.Request) {
	st := s.globalCopy()
	if st == nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "no copy of the global group here")
		return
	}
	kv, found, applied, err := st.GetAt(placementKey)
	if err != nil || !found {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "no placement stored yet")
		return
	}
	w.Header().Set(client.HeaderAppliedIndex, strconv.FormatUint(applied, 10))
	w.Header().Set("Content-Type", "application/json")
	w.Write(kv.Value)
}

// globalCopy returns the local global replica's store, or the CZone copy.
func (s *Server) globalCopy() *store.Store {
	if g, ok := s.host.Group(placement.GlobalGroup); ok {
		return g.Store()
	}
	_, st := s.czone()
	return st
}

// feedPeers lists nodes that can serve the global feed: global replicas
// first, then CZone copies.
func (s *Server) feedPeers() []member {
	p, _ := s.currentPlacement()
	want := map[string]bool{}
	if p != nil {
		if g, ok := p.Group(placement.GlobalGroup); ok {
			for _, r := range g.Replicas {
				want[r.Node] = true
			}
		}
	}
	var first, rest []member
	for _, m := range s.mem.members() {
		if !m.alive() || m.Name == s.cfg.Name || m.HTTP == "" {
			continue
		}
		if want[m.Name] {
			first = append(first, m)
		} else {
			rest = append(rest, m)
		}
	}
	return append(first, rest...)
}

// followPlacementFeed follows the global feed from one of the peers until
// it fails or a local global replica appears; it reports whether it got
// anywhere (a starting point).
func (s *Server) followPlacementFeed(peers []member) bool {
	for _, m := range peers {
		from, err := s.placementAt(m.HTTP)
		if err != nil {
			continue
		}
		err = s.streamPlacement(m.HTTP, from)
		if errors.Is(err, errFeedRefused) {
			continue // not current (restarting, cut off): try the next peer
		}
		if err != nil && s.ctx.Err() == nil {
			s.logger.Debug("placement feed ended", "peer", m.Name, "error", err)
		}
		return true
	}
	return false
}

// errFeedRefused is a feed that answered anything but 200.
var errFeedRefused = errors.New("feed refused")

// refreshPlacement reads the placement once from a peer that holds a copy
// of the global group.
func (s *Server) refreshPlacement() bool {
	for _, m := range s.feedPeers() {
		if _, err := s.placementAt(m.HTTP); err == nil {
			return true
		}
	}
	return false
}

// placementAt fetches the placement and the index it is current to.
func (s *Server) placementAt(addr string) (uint64, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/internal/placement/at", nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.fwd.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return 0, err
	}
	p, err := placement.Decode(raw)
	if err != nil {
		return 0, err
	}
	at, err := strconv.ParseUint(resp.Header.Get(client.HeaderAppliedIndex), 10, 64)
	if err != nil {
		return 0, errors.New("no applied index")
	}
	s.setPlacement(p)
	return at + 1, nil
}

// streamPlacement applies placement changes from the global feed at addr,
// from index from, until the stream fails, goes quiet for 5s, or a local
// global replica appears.
func (s *Server) streamPlacement(addr string, from uint64) error {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/v1/changes/%s?from=%d", addr, placement.GlobalGroup, from), nil)
	if err != nil {
		return err
	}
	resp, err := s.fwd.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: status %d", errFeedRefused, resp.StatusCode)
	}
	lines := make(chan []byte)
	errc := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			select {
			case lines <- append([]byte(nil), sc.Bytes()...):
			case <-ctx.Done():
				return
			}
		}
		errc <- sc.Err()
	}()
	check := time.NewTicker(time.Second)
	defer check.Stop()
	quiet := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			if err == nil {
				err = errors.New("feed ended")
			}
			return err
		case <-check.C:
			if _, ok := s.host.Group(placement.GlobalGroup); ok {
				return nil // a local replica now: read that instead
			}
			if time.Since(quiet) > 5*time.Second {
				return errors.New("feed went quiet")
			}
		case line := <-lines:
			quiet = time.Now()
			var ev client.ChangeEvent
			if err := json.Unmarshal(line, &ev); err != nil {
				return err
			}
			for _, ch := range ev.Changes {
				if ch.Space == "system" && ch.Key == "placement" && ch.Op == "put" {
					if p, err := placement.Decode([]byte(ch.Value)); err == nil {
						s.setPlacement(p)
					}
				}
			}
		}
	}
}
