package server

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ldcd/ldcd/cdc"
	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/store"
)

// A node in a CZone holds no voters; it follows the global group's change
// feed into a local copy (<data-dir>/cdc/global.db) and serves global reads
// from it.

// startFollower starts the CZone follower once.
func (s *Server) startFollower() {
	s.czMu.Lock()
	defer s.czMu.Unlock()
	if s.follower != nil || s.ctx.Err() != nil {
		return
	}
	dir := filepath.Join(s.cfg.DataDir, "cdc")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.logger.Error("cdc follower", "error", err)
		return
	}
	st, err := store.Open(filepath.Join(dir, "global.db"), store.Options{ChangeLogCount: s.cfg.ChangeLogCount, ChangeLogAge: s.cfg.ChangeLogAge})
	if err != nil {
		s.logger.Error("cdc follower", "error", err)
		return
	}
	s.czStore = st
	s.follower = cdc.StartFollower(cdc.FollowerConfig{
		Group:   placement.GlobalGroup,
		Store:   st,
		Sources: s.cdcSources,
		HTTP:    &http.Client{Transport: s.fwd.Transport},
		Logger:  s.logger.With("component", "cdc"),
		OnApply: func(lag time.Duration) { s.metrics.cdcLag.Observe(lag.Seconds()) },
	})
	s.logger.Info("following the global group as a CZone copy", "applied_index", st.AppliedIndex())
}

// czone returns the follower and its store on a CZone node.
func (s *Server) czone() (*cdc.Follower, *store.Store) {
	s.czMu.Lock()
	defer s.czMu.Unlock()
	return s.follower, s.czStore
}

// cdcSources lists where to follow the global group from, best first: the
// pinned source; global voters in this city; other CZone nodes in this
// city (a cascade); any other global voter. A node cascades only from CZone
// nodes whose names sort before its own: a total order, so copies can
// never follow each other in a cycle, and the first copy of a city always
// pulls from a voter.
func (s *Server) cdcSources() []string {
	if s.cfg.CDCSource != "" {
		return []string{s.cfg.CDCSource}
	}
	p, _ := s.currentPlacement()
	if p == nil {
		return nil
	}
	voters := map[string]bool{}
	if g, ok := p.Group(placement.GlobalGroup); ok {
		for _, r := range g.Replicas {
			if r.Voter {
				voters[r.Node] = true
			}
		}
	}
	var near, cascade, far []string
	for _, m := range s.mem.members() {
		if !m.alive() || m.Name == s.cfg.Name || m.HTTP == "" {
			continue
		}
		z, _ := p.Topology.Zone(m.Zone)
		switch {
		case voters[m.Name] && m.City == s.cfg.City:
			near = append(near, m.HTTP)
		case z.Kind == placement.KindCZone && m.City == s.cfg.City && m.Name < s.cfg.Name:
			cascade = append(cascade, m.HTTP)
		case voters[m.Name]:
			far = append(far, m.HTTP)
		}
	}
	return append(append(near, cascade...), far...)
}

// serveCZoneRead serves a global read from the local copy, if the request's
// bounds allow; it reports false when the read must go to the leader.
func (s *Server) serveCZoneRead(w http.ResponseWriter, r *http.Request, serve func(http.ResponseWriter, *store.Store)) bool {
	f, st := s.czone()
	if f == nil {
		return false
	}
	q := r.URL.Query()
	if q.Get("consistency") == "linearizable" {
		return false
	}
	if ms := q.Get("max_staleness"); ms != "" {
		bound, err := time.ParseDuration(ms)
		if err != nil || bound < 0 {
			writeError(w, http.StatusBadRequest, "max_staleness: want a duration such as 500ms")
			return true
		}
		if f.Lag() > bound {
			return false
		}
	}
	if mi := q.Get("min_index"); mi != "" {
		want, err := strconv.ParseUint(mi, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "min_index: want an index (the version a write returned)")
			return true
		}
		if !waitApplied(r.Context(), st, want, time.Second) {
			return false
		}
	}
	status := f.Status()
	w.Header().Set(client.HeaderAppliedIndex, strconv.FormatUint(st.AppliedIndex(), 10))
	w.Header().Set(client.HeaderLagMs, strconv.FormatInt(status.LagMs, 10))
	w.Header().Set(client.HeaderGroup, placement.GlobalGroup)
	serve(w, st)
	return true
}

// waitApplied waits up to d for st to apply index.
func waitApplied(ctx context.Context, st *store.Store, index uint64, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		ch := st.AppliedChan()
		if st.AppliedIndex() >= index {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
