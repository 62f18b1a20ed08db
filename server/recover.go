package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/raftgroup"
)

// handleRecover serves POST /v1/placement/recover: rebuild a group that has
// lost a quorum of its voters for good from its most up-to-date survivor
// (as `cockroach debug recover` and TiKV's online unsafe recovery do). It
// runs on the node that receives it, not on the global leader: the group
// that lost its quorum may be the global group itself.
//
// It refuses while the group has a leader or while a majority of its voters
// is alive (Raft elects a leader by itself then). The chosen survivor, the
// one with the highest last index, becomes the group's only voter: every
// entry it holds counts as committed, and writes that only the lost voters
// had are gone; the answer says from which index. The placement driver adds
// replicas back as for any group short of them. The event is recorded in
// the global group under _ldcd/recoveries/.
func (s *Server) handleRecover(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, 64<<10)
	if !ok {
		return
	}
	var req client.RecoverRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "recover request: "+err.Error())
		return
	}
	if v := r.URL.Query().Get("dry_run"); v == "true" || v == "1" {
		req.DryRun = true
	}
	if err := raftgroup.CheckGroupID(req.Group); err != nil {
		writeError(w, http.StatusBadRequest, "recover request: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	res, code, err := s.recoverGroup(ctx, req)
	if err != nil {
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) recoverGroup(ctx context.Context, req client.RecoverRequest) (*client.RecoverResult, int, error) {
	res := &client.RecoverResult{Group: req.Group, DryRun: req.DryRun, Voters: []string{}, Lost: []string{}, Survivors: []client.RecoverSurvivor{}}
	known := false
	if p, _ := s.currentPlacement(); p != nil {
		_, known = p.Group(req.Group)
	}
	// Ask every live node for its replica of the group.
	voters := map[string]bool{}
	var leaders []string
	for _, m := range s.mem.members() {
		if !m.alive() {
			continue
		}
		var st nodeStatus
		if m.Name == s.cfg.Name {
			st = s.localStatus()
		} else if err := s.getJSON(ctx, m.HTTP, "/v1/internal/status", 3*time.Second, &st); err != nil {
			s.logger.Warn("recover: a live node did not report its status", "group", req.Group, "peer", m.Name, "error", err)
			continue
		}
		for _, gs := range st.Groups {
			if gs.ID != req.Group {
				continue
			}
			known = true
			sv := client.RecoverSurvivor{Node: m.Name, Zone: m.Zone, State: gs.State, Term: gs.Term,
				LastIndex: gs.LastIndex, CommitIndex: gs.CommitIndex, AppliedIndex: gs.AppliedIndex}
			for _, c := range gs.Servers {
				if c.Voter {
					voters[c.ID] = true
				}
				if c.ID == m.Name {
					sv.Voter = c.Voter
				}
			}
			if gs.State == "Leader" {
				leaders = append(leaders, m.Name)
			}
			res.Survivors = append(res.Survivors, sv)
		}
	}
	if !known {
		return nil, http.StatusNotFound, fmt.Errorf("no group %q: not in the placement and no live node hosts it", req.Group)
	}
	if len(res.Survivors) == 0 {
		return nil, http.StatusUnprocessableEntity, fmt.Errorf("no live node holds a replica of %s: nothing to recover from", req.Group)
	}
	if len(leaders) > 0 {
		return nil, http.StatusUnprocessableEntity, fmt.Errorf("%s has a leader (%s): it has its quorum and needs no recovery", req.Group, strings.Join(leaders, ", "))
	}
	survivorVoter := map[string]bool{}
	for _, sv := range res.Survivors {
		survivorVoter[sv.Node] = sv.Voter
	}
	for v := range voters {
		res.Voters = append(res.Voters, v)
		if _, ok := survivorVoter[v]; !ok {
			res.Lost = append(res.Lost, v)
		}
	}
	slices.Sort(res.Voters)
	slices.Sort(res.Lost)
	if len(res.Lost) <= len(res.Voters)/2 {
		return nil, http.StatusUnprocessableEntity, fmt.Errorf("%s has %d of its %d voters alive (%s lost): a majority, so it elects a leader by itself; recover only a group that lost a majority for good",
			req.Group, len(res.Voters)-len(res.Lost), len(res.Voters), strings.Join(res.Lost, ", "))
	}
	// The most up-to-date survivor: the highest last index, then the
	// highest commit index, then a voter.
	best := res.Survivors[0]
	for _, sv := range res.Survivors[1:] {
		if sv.LastIndex > best.LastIndex ||
			sv.LastIndex == best.LastIndex && (sv.CommitIndex > best.CommitIndex || sv.CommitIndex == best.CommitIndex && sv.Voter && !best.Voter) {
			best = sv
		}
	}
	res.Chosen = best.Node
	res.MayLose = fmt.Sprintf("writes acknowledged after index %d (the last entry %s holds) are lost if only %s had them; entries %d-%d, held by %s but not known to be committed, become committed",
		best.LastIndex, best.Node, strings.Join(res.Lost, ", "), best.CommitIndex+1, best.LastIndex, best.Node)
	if best.CommitIndex >= best.LastIndex {
		res.MayLose = fmt.Sprintf("writes acknowledged after index %d (the last entry %s holds) are lost if only %s had them",
			best.LastIndex, best.Node, strings.Join(res.Lost, ", "))
	}
	if req.DryRun {
		return res, http.StatusOK, nil
	}

	s.logger.Warn("recovering a group that lost its quorum", "group", req.Group, "from", best.Node, "last_index", best.LastIndex, "lost", strings.Join(res.Lost, ","))
	if best.Node == s.cfg.Name {
		if _, err := s.host.Recover(req.Group); err != nil {
			return nil, recoverStatus(err), err
		}
	} else {
		m, ok := s.mem.member(best.Node)
		if !ok {
			return nil, http.StatusUnprocessableEntity, fmt.Errorf("%s left membership", best.Node)
		}
		var ans struct {
			LastIndex uint64 `json:"last_index"`
		}
		if err := s.postJSON(ctx, m.HTTP, "/v1/internal/recover/"+req.Group, struct{}{}, &ans); err != nil {
			return nil, http.StatusBadGateway, fmt.Errorf("recover %s at %s: %w", req.Group, best.Node, err)
		}
	}
	res.Recovered = true
	// The rebuilt replica elects itself within an election timeout or so.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && res.Leader == ""; {
		var st nodeStatus
		if m, ok := s.mem.member(best.Node); ok && s.getJSON(ctx, m.HTTP, "/v1/internal/status", 2*time.Second, &st) == nil {
			for _, gs := range st.Groups {
				if gs.ID == req.Group && gs.State == "Leader" {
					res.Leader = best.Node
				}
			}
		}
		if res.Leader == "" {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	// The desired placement lists the survivors alone, so the planner
	// replaces the lost voters on live nodes (it waits for a group's
	// configuration to match its replicas before it changes them).
	nodes := []string{best.Node}
	for _, sv := range res.Survivors {
		if sv.Node != best.Node {
			nodes = append(nodes, sv.Node)
		}
	}
	var pres client.PlacementResult
	err := retryFor(ctx, 20*time.Second, func() error {
		self, ok := s.mem.member(s.cfg.Name)
		if !ok {
			return errors.New("this node is not in membership")
		}
		return s.postJSON(ctx, self.HTTP, "/v1/placement/recovered", client.PlacementRequest{Group: req.Group, Nodes: nodes}, &pres)
	})
	if err != nil {
		res.PlacementError = "the placement still lists the lost voters: " + err.Error()
		s.logger.Warn("recovered group's placement not updated", "group", req.Group, "error", err)
	} else {
		res.PlacementVersion = pres.Version
	}
	s.recordRecovery(ctx, res)
	return res, http.StatusOK, nil
}

// retryFor calls fn every half second until it succeeds, ctx ends or d
// passes, and returns its last error.
func retryFor(ctx context.Context, d time.Duration, fn func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func recoverStatus(err error) int {
	switch {
	case errors.Is(err, raftgroup.ErrNoGroup):
		return http.StatusNotFound
	case errors.Is(err, raftgroup.ErrHasLeader), errors.Is(err, raftgroup.ErrNoState):
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}

// recordRecovery writes res into the global group, as an audit record an
// operator finds with GET /v1/global/_ldcd/recoveries/. A global group
// without a quorum (or the group just recovered being it, still electing)
// leaves it unrecorded, which the answer says.
func (s *Server) recordRecovery(ctx context.Context, res *client.RecoverResult) {
	key := fmt.Sprintf("_ldcd/recoveries/%s/%s", res.Group, time.Now().UTC().Format("20060102T150405.000000000Z"))
	b, _ := json.Marshal(res)
	err := retryFor(ctx, 5*time.Second, func() error {
		self, ok := s.mem.member(s.cfg.Name)
		if !ok {
			return errors.New("this node is not in membership")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+self.HTTP+"/v1/global/"+key, bytes.NewReader(b))
		if err != nil {
			return err
		}
		resp, err := s.fwd.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	if err == nil {
		res.Recorded, res.RecordedKey = true, key
		return
	}
	res.RecordError = "not recorded in the global group: " + err.Error()
	s.logger.Warn("recovery not recorded in the global group", "group", res.Group, "error", err)
}

// handleInternalRecover serves POST /v1/internal/recover/{group}: rebuild
// the local replica as the group's only voter (handleRecover decided it).
func (s *Server) handleInternalRecover(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("group")
	g, err := s.host.Recover(id)
	if err != nil {
		writeError(w, recoverStatus(err), err.Error())
		return
	}
	st := g.Status()
	writeJSON(w, http.StatusOK, map[string]any{"group": id, "node": s.cfg.Name, "last_index": st.LastIndex, "applied_index": st.AppliedIndex})
}
