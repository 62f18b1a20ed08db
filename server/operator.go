package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/raftgroup"
	"github.com/ldcd/ldcd/store"
)

// handlePlacementShow answers GET /v1/placement with the desired placement
// this node knows.
func (s *Server) handlePlacementShow(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use GET")
		return
	}
	p, _ := s.currentPlacement()
	if p == nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "no placement known yet")
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// operations maps each placement action to its pure function.
var operations = map[string]func(*placement.Placement, client.PlacementRequest) (*placement.Placement, string, error){
	"move": func(p *placement.Placement, req client.PlacementRequest) (*placement.Placement, string, error) {
		q, err := placement.Move(p, req.Shards, req.Zone)
		return q, fmt.Sprintf("range %s: owner zone → %s", req.Shards, req.Zone), err
	},
	"drain": func(p *placement.Placement, req client.PlacementRequest) (*placement.Placement, string, error) {
		q, err := placement.Drain(p, req.Node, req.Zone)
		return q, "drain " + req.Node + req.Zone, err
	},
	"undrain": func(p *placement.Placement, req client.PlacementRequest) (*placement.Placement, string, error) {
		q, err := placement.Undrain(p, req.Node, req.Zone)
		return q, "undrain " + req.Node + req.Zone, err
	},
	"split": func(p *placement.Placement, req client.PlacementRequest) (*placement.Placement, string, error) {
		q, err := placement.Split(p, req.Shards, req.At)
		return q, fmt.Sprintf("split %s at %02d", req.Shards, req.At), err
	},
	// recovered is what ldcd recover records once a group is rebuilt
	// (recover.go): not an operator's action of its own.
	"recovered": func(p *placement.Placement, req client.PlacementRequest) (*placement.Placement, string, error) {
		q, err := placement.Recovered(p, req.Group, req.Nodes)
		return q, fmt.Sprintf("%s recovered on %v", req.Group, req.Nodes), err
	},
	"failback": func(p *placement.Placement, req client.PlacementRequest) (*placement.Placement, string, error) {
		q, err := placement.RequestFailback(p, req.Shards)
		what := req.Shards
		if what == "" {
			what = "every failed-over range"
		}
		return q, "failback " + what, err
	},
}

// handlePlacementOp serves POST /v1/placement/{op} on the global leader.
func (s *Server) handlePlacementOp(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use POST")
		return
	}
	name := r.PathValue("op")
	op, ok := operations[name]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no placement action %q; want move, drain, undrain, failback or split", name))
		return
	}
	body, ok := readBody(w, r, 64<<10)
	if !ok {
		return
	}
	var req client.PlacementRequest
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(bytesReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "placement request: "+err.Error())
			return
		}
	}
	if v := r.URL.Query().Get("dry_run"); v == "true" || v == "1" {
		req.DryRun = true
	}
	ctx, cancel, err := s.requestContext(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	defer cancel()
	if !s.pd.Leading() {
		s.forward(ctx, w, r, body, placement.GlobalGroup, !req.DryRun)
		return
	}
	res, err := s.runOperation(ctx, op, req)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, placement.ErrBadOperation):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, raftgroup.ErrNotLeader):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "the global leader changed; retry")
	case errors.Is(err, raftgroup.ErrIndeterminate):
		writeJSON(w, http.StatusGatewayTimeout, client.ErrorBody{Error: "the change's outcome is unknown: " + err.Error(), Indeterminate: true})
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// loadPlacement reads the stored placement linearizably, with the version
// of its record.
func (s *Server) loadPlacement(ctx context.Context) (*placement.Placement, uint64, error) {
	g, ok := s.host.Group(placement.GlobalGroup)
	if !ok {
		return nil, 0, raftgroup.ErrNoGroup
	}
	if err := g.ReadBarrier(ctx); err != nil {
		return nil, 0, err
	}
	kv, found, err := g.Store().Get(placementKey)
	if err != nil {
		return nil, 0, err
	}
	if !found {
		return nil, 0, fmt.Errorf("server: no placement stored yet")
	}
	p, err := placement.Decode(kv.Value)
	return p, kv.Version, err
}

// runPlacementChange applies change to the stored placement with
// compare-and-set, redoing it on top of whatever the driver stored in
// between.
func (s *Server) runPlacementChange(ctx context.Context, change func(*placement.Placement) (*placement.Placement, error)) (*placement.Placement, error) {
	g, ok := s.host.Group(placement.GlobalGroup)
	if !ok {
		return nil, raftgroup.ErrNoGroup
	}
	for attempt := 0; attempt < 10; attempt++ {
		cur, rev, err := s.loadPlacement(ctx)
		if err != nil {
			return nil, err
		}
		next, err := change(cur)
		if err != nil {
			return nil, err
		}
		cmd := &store.Command{
			Compares: []store.Compare{{Key: placementKey, Target: store.TargetVersion, Op: store.CmpEqual, Version: rev}},
			Then:     []store.Op{{Type: store.OpPut, Key: placementKey, Value: next.Encode()}},
		}
		out, err := g.Apply(ctx, cmd)
		if err != nil {
			return nil, err
		}
		if !out.Succeeded {
			continue
		}
		s.setPlacement(next)
		s.onMembership() // wake the driver to carry the change out now
		return next, nil
	}
	return nil, fmt.Errorf("server: placement kept changing; retry")
}

// runOperation runs an operator action, or plans it on a dry run.
func (s *Server) runOperation(ctx context.Context, op func(*placement.Placement, client.PlacementRequest) (*placement.Placement, string, error), req client.PlacementRequest) (*client.PlacementResult, error) {
	var next *placement.Placement
	var change string
	if req.DryRun {
		cur, _, err := s.loadPlacement(ctx)
		if err != nil {
			return nil, err
		}
		if next, change, err = op(cur, req); err != nil {
			return nil, err
		}
	} else {
		var err error
		next, err = s.runPlacementChange(ctx, func(cur *placement.Placement) (*placement.Placement, error) {
			q, c, err := op(cur, req)
			change = c
			return q, err
		})
		if err != nil {
			return nil, err
		}
		s.logger.Info("placement action", "change", change, "version", next.Version, "epoch", next.Epoch)
	}
	res := &client.PlacementResult{DryRun: req.DryRun, Change: change, Version: next.Version, Epoch: next.Epoch, Decisions: []placement.Decision{}}
	if obs := s.pd.lastObservation(); obs != nil {
		opts := placement.DefaultOptions()
		opts.DeadAfter = s.cfg.DeadNodeTimeout
		if _, ds := placement.Plan(next, obs.State, opts); ds != nil {
			res.Decisions = ds
		}
	}
	return res, nil
}
