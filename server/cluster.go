package server

import (
	"net/http"
	"sort"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
)

// clusterView answers for the global group's leader, which holds the
// placement driver's latest observation: it forwards the request there from
// any other node, and returns the view when this node has it.
func (s *Server) clusterView(w http.ResponseWriter, r *http.Request) (client.ClusterInfo, *placement.Placement, bool) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use GET")
		return client.ClusterInfo{}, nil, false
	}
	if !s.pd.Leading() {
		ctx, cancel, err := s.requestContext(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return client.ClusterInfo{}, nil, false
		}
		defer cancel()
		s.forward(ctx, w, r, nil, placement.GlobalGroup, false)
		return client.ClusterInfo{}, nil, false
	}
	obs := s.pd.lastObservation()
	p, _ := s.currentPlacement()
	if obs == nil || p == nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "the cluster view is not ready yet")
		return client.ClusterInfo{}, nil, false
	}
	return clusterInfo(s.cfg.Name, obs, p, s.cfg.DeadNodeTimeout), p, true
}

// handleCluster answers GET /v1/cluster.
func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	if info, _, ok := s.clusterView(w, r); ok {
		writeJSON(w, http.StatusOK, info)
	}
}

// Group statuses of the cluster view.
const (
	// GroupOK: the group has a leader.
	GroupOK = "ok"
	// GroupNoLeader: no leader now, but a majority of its voters has not
	// been down for long: an election or a failover is under way.
	GroupNoLeader = "no-leader"
	// GroupUnavailable: no leader, and a majority of its voters has been
	// down for longer than the dead-node timeout. Raft cannot elect a
	// leader without them and the placement driver cannot replace them
	// without one: the group waits for its voters to come back, or for an
	// operator's `ldcd recover`.
	GroupUnavailable = "unavailable"
)

// groupStatus says whether group id, which has no known leader, lost a
// quorum of its voters for longer than deadAfter: the voters are those of
// the configuration its surviving replicas hold.
func groupStatus(id string, obs *observation, deadAfter time.Duration) (status string, dead []string) {
	alive := map[string]bool{}
	downLong := map[string]bool{}
	for _, m := range obs.Members {
		alive[m.Name] = m.alive()
		downLong[m.Name] = !m.alive() && !m.DownSince.IsZero() && obs.At.Sub(m.DownSince) >= deadAfter
	}
	voters := map[string]bool{}
	hosting := map[string]bool{}
	for node, st := range obs.Statuses {
		for _, gs := range st.Groups {
			if gs.ID != id {
				continue
			}
			hosting[node] = true
			for _, sv := range gs.Servers {
				if sv.Voter {
					voters[sv.ID] = true
				}
			}
		}
	}
	if len(voters) == 0 {
		return GroupNoLeader, nil
	}
	for v := range voters {
		// A voter is lost when its node has been down for long, or is gone
		// from membership, or is up and reports no replica of the group.
		_, known := alive[v]
		_, reported := obs.Statuses[v]
		if downLong[v] || !known || (alive[v] && reported && !hosting[v]) {
			dead = append(dead, v)
		}
	}
	sort.Strings(dead)
	if len(dead) > len(voters)/2 {
		return GroupUnavailable, dead
	}
	return GroupNoLeader, dead
}

func clusterInfo(self string, obs *observation, p *placement.Placement, deadAfter time.Duration) client.ClusterInfo {
	info := client.ClusterInfo{PlacementVersion: p.Version, Epoch: p.Epoch, Leader: self, Nodes: []client.NodeInfo{}, Groups: []client.GroupInfo{}}
	byName := map[string]member{}
	for _, m := range obs.Members {
		byName[m.Name] = m
		info.Nodes = append(info.Nodes, client.NodeInfo{Name: m.Name, Zone: m.Zone, City: m.City, Status: m.Status.String(), HTTPAddr: m.HTTP, RaftAddr: m.Raft, Alarm: m.Alarm})
	}
	var nodes []string
	for n := range obs.Statuses {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		if st := obs.Statuses[n].CDC; st != nil {
			info.CDC = append(info.CDC, client.CDCInfo{Node: n, Zone: byName[n].Zone, Group: st.Group, Source: st.Source,
				Connected: st.Connected, AppliedIndex: st.AppliedIndex, LagIndex: st.LagIndex, LagMs: st.LagMs, Snapshots: st.Snapshots})
		}
	}
	for _, gp := range p.Groups {
		gi := client.GroupInfo{ID: gp.ID, Shards: gp.Shards, OwnerZone: gp.OwnerZone, Voters: []string{}, Nonvoters: []string{},
			ServingZone: gp.ServingZone, Epoch: gp.Epoch, Zones: map[string]string{}}
		for _, n := range nodes {
			if _, bad := obs.Statuses[n].Damaged[gp.ID]; bad {
				gi.Damaged = append(gi.Damaged, n)
			}
		}
		gs, ok := obs.State.Groups[gp.ID]
		gi.Status = GroupOK
		if !ok || gs.Leader == "" {
			gi.Status, gi.LostVoters = groupStatus(gp.ID, obs, deadAfter)
		}
		if ok && gs.Leader != "" {
			gi.Leader = gs.Leader
			gi.LeaderZone = byName[gs.Leader].Zone
			gi.LeaderHTTP = byName[gs.Leader].HTTP
			gi.AppliedIndex = gs.LeaderApplied
			for _, st := range obs.Statuses[gs.Leader].Groups {
				if st.ID == gp.ID {
					gi.Term = st.Term
				}
			}
			gi.Pinned = gp.ServingZone == "" || gi.LeaderZone == gp.ServingZone
			for _, m := range gs.Members {
				gi.Zones[m.Node] = byName[m.Node].Zone
				if m.Voter {
					gi.Voters = append(gi.Voters, m.Node)
				} else {
					gi.Nonvoters = append(gi.Nonvoters, m.Node)
				}
			}
		}
		desired := map[string]bool{}
		for _, r := range gp.Replicas {
			desired[r.Node] = r.Voter
		}
		same := len(desired) == len(gi.Voters)+len(gi.Nonvoters)
		for _, v := range gi.Voters {
			same = same && desired[v]
		}
		if !same {
			for _, r := range gp.Replicas {
				gi.Desired = append(gi.Desired, r.Node)
			}
		}
		info.Groups = append(info.Groups, gi)
	}
	return info
}

// handleRouting answers GET /v1/routing: the routing table with its epoch.
func (s *Server) handleRouting(w http.ResponseWriter, r *http.Request) {
	info, p, ok := s.clusterView(w, r)
	if !ok {
		return
	}
	rt := client.Routing{Epoch: p.Epoch, Ranges: []client.RouteInfo{}}
	for _, g := range info.Groups {
		if g.Shards == "" {
			continue
		}
		rt.Ranges = append(rt.Ranges, client.RouteInfo{Shards: g.Shards, Group: g.ID, OwnerZone: g.OwnerZone,
			ServingZone: g.ServingZone, Epoch: g.Epoch, Leader: g.Leader, LeaderHTTP: g.LeaderHTTP})
	}
	writeJSON(w, http.StatusOK, rt)
}
