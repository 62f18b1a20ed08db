package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/raftgroup"
	"github.com/ldcd/ldcd/store"
)

// A split runs on the global leader as a sequence of idempotent steps, each
// retried until it succeeds, so a leader change in the middle only delays
// it (see placement.SplitOp):
//
//  1. the target group exists with a leader (the planner grows it);
//  2. the source leader fences the moving shards; the fence's version is
//     stored in the placement;
//  3. the moving keys are exported from the source leader (linearizably:
//     after the fence they cannot change) and ingested into the target in
//     batches, keeping their versions; the target's versions start above
//     the fence;
//  4. the routing switches in one placement write (CompleteSplit);
//  5. the source purges the moved keys.
//
// Between 2 and 4, requests for the moving shards are refused with 409 (the
// client refreshes and retries): that is the split's write pause.

// splitExportBatch bounds the keys of one export page and ingest entry.
const splitExportBatch = 2000

type splitFenceRequest struct {
	Group  string `json:"group"`
	Shards []int  `json:"shards"`
}

type splitIndexResult struct {
	Index uint64 `json:"index"`
}

type splitKV struct {
	Key     []byte `json:"k"`
	Value   []byte `json:"v"`
	Version uint64 `json:"ver"`
}

type splitExport struct {
	KVs  []splitKV `json:"kvs"`
	More bool      `json:"more"`
}

type splitIngestRequest struct {
	Group string    `json:"group"`
	Base  uint64    `json:"base"`
	KVs   []splitKV `json:"kvs"`
}

// leaderGroup returns the local group id if this node leads it, writing an
// error answer otherwise.
func (s *Server) leaderGroup(w http.ResponseWriter, id string) (*raftgroup.Group, bool) {
	g, ok := s.host.Group(id)
	if !ok || !g.IsLeader() {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "not the leader of "+id)
		return nil, false
	}
	return g, true
}

func decodeJSONBody(w http.ResponseWriter, r *http.Request, limit int, out any) bool {
	body, ok := readBody(w, r, limit)
	if !ok {
		return false
	}
	if err := json.Unmarshal(body, out); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// applyAdmin proposes a to group id at its leader here. Every field is
// checked first (these routes are reachable by anyone who can reach the
// HTTP port until node certificates guard them): a refused request is
// answered 400 and nothing is proposed. The state machine checks the same
// again when it applies, so a command that got past here anyway is refused
// there, alike on every replica.
func (s *Server) applyAdmin(w http.ResponseWriter, r *http.Request, id string, a *store.Admin) {
	if id == "" {
		writeError(w, http.StatusBadRequest, "group: required")
		return
	}
	if err := s.checkAdmin(a); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	g, ok := s.leaderGroup(w, id)
	if !ok {
		return
	}
	if a.Kind == store.AdminPurge {
		for _, sh := range a.Shards {
			if !g.Store().Fenced(sh) {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("purge: shard %02d is not fenced in %s: only moved shards are purged", sh, id))
				return
			}
		}
	}
	ctx, cancel, err := s.requestContext(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	defer cancel()
	res, err := g.ApplyAdmin(ctx, a)
	if errors.Is(err, store.ErrBadCommand) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, splitIndexResult{Index: res.Index})
}

// checkAdmin applies the API's limits to an admin command on top of
// store.Admin.Validate: ingested keys are stored keys a valid user or
// global key makes, and values are within the configured size.
func (s *Server) checkAdmin(a *store.Admin) error {
	if err := a.Validate(); err != nil {
		return err
	}
	for _, kv := range a.KVs {
		if len(kv.Key) > store.MaxStoredKeySize {
			return fmt.Errorf("ingest: key of %d bytes, the limit is %d", len(kv.Key), store.MaxStoredKeySize)
		}
		if len(kv.Value) > s.cfg.MaxValueSize {
			return fmt.Errorf("ingest: value of %d bytes, the limit is %d", len(kv.Value), s.cfg.MaxValueSize)
		}
	}
	return nil
}

func (s *Server) handleSplitFence(w http.ResponseWriter, r *http.Request) {
	var req splitFenceRequest
	if !decodeJSONBody(w, r, 64<<10, &req) {
		return
	}
	s.applyAdmin(w, r, req.Group, &store.Admin{Kind: store.AdminFence, Shards: req.Shards})
}

func (s *Server) handleSplitPurge(w http.ResponseWriter, r *http.Request) {
	var req splitFenceRequest
	if !decodeJSONBody(w, r, 64<<10, &req) {
		return
	}
	s.applyAdmin(w, r, req.Group, &store.Admin{Kind: store.AdminPurge, Shards: req.Shards})
}

func (s *Server) handleSplitIngest(w http.ResponseWriter, r *http.Request) {
	var req splitIngestRequest
	if !decodeJSONBody(w, r, 256<<20, &req) {
		return
	}
	a := &store.Admin{Kind: store.AdminIngest, Base: req.Base}
	for _, kv := range req.KVs {
		a.KVs = append(a.KVs, store.KV{Key: kv.Key, Value: kv.Value, Version: kv.Version})
	}
	s.applyAdmin(w, r, req.Group, a)
}

// handleSplitExport serves GET /v1/internal/split/export?group=G&lo=&hi=&after=
// at G's leader: a linearizable page of the keys of shards lo..hi.
func (s *Server) handleSplitExport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	g, ok := s.leaderGroup(w, q.Get("group"))
	if !ok {
		return
	}
	lo, err1 := strconv.Atoi(q.Get("lo"))
	hi, err2 := strconv.Atoi(q.Get("hi"))
	if err1 != nil || err2 != nil || lo < 0 || hi > 99 || lo > hi {
		writeError(w, http.StatusBadRequest, "lo and hi: want shards 0-99")
		return
	}
	var after []byte
	if a := q.Get("after"); a != "" {
		b, err := base64.StdEncoding.DecodeString(a)
		if err != nil {
			writeError(w, http.StatusBadRequest, "after: want base64")
			return
		}
		after = b
	}
	ctx, cancel, err := s.requestContext(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	defer cancel()
	if err := g.ReadBarrier(ctx); err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	shards := map[int]bool{}
	for sh := lo; sh <= hi; sh++ {
		shards[sh] = true
	}
	kvs, more, err := g.Store().ScanShards(shards, after, splitExportBatch)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	out := splitExport{KVs: make([]splitKV, len(kvs)), More: more}
	for i, kv := range kvs {
		out.KVs[i] = splitKV{Key: kv.Key, Value: kv.Value, Version: kv.Version}
	}
	writeJSON(w, http.StatusOK, out)
}

// postJSON POSTs in to a peer and decodes its JSON answer into out.
func (s *Server) postJSON(ctx context.Context, addr, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := s.fwd.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb client.ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		return fmt.Errorf("server: %s%s: %d %s", addr, path, resp.StatusCode, eb.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// runSplits drives the splits in flight while this node leads the global
// group.
func (s *Server) runSplits() {
	defer s.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if !s.pd.Leading() {
			continue
		}
		p, _ := s.currentPlacement()
		if p == nil || len(p.Splits) == 0 {
			continue
		}
		for _, op := range p.Splits {
			ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
			if err := s.stepSplit(ctx, op); err != nil && s.ctx.Err() == nil {
				s.logger.Info("split step pending", "source", op.Source, "target", op.Target, "shards", op.Shards, "reason", err)
			}
			cancel()
		}
	}
}

// leaderHTTP returns the HTTP address of group id's leader as the driver
// last observed it.
func (s *Server) leaderHTTP(id string) (string, error) {
	obs := s.pd.lastObservation()
	if obs == nil {
		return "", errors.New("no observation yet")
	}
	gs, ok := obs.State.Groups[id]
	if !ok || gs.Leader == "" {
		return "", fmt.Errorf("group %s has no leader yet", id)
	}
	if gs.Leader == s.cfg.Name {
		return s.httpAdv, nil
	}
	m, ok := s.mem.member(gs.Leader)
	if !ok {
		return "", fmt.Errorf("leader %s of %s is unknown", gs.Leader, id)
	}
	return m.HTTP, nil
}

func (s *Server) stepSplit(ctx context.Context, op placement.SplitOp) error {
	lo, hi, err := placement.ParseRange(op.Shards)
	if err != nil {
		return err
	}
	var shards []int
	for sh := lo; sh <= hi; sh++ {
		shards = append(shards, sh)
	}
	src, err := s.leaderHTTP(op.Source)
	if err != nil {
		return err
	}
	tgt, err := s.leaderHTTP(op.Target)
	if err != nil {
		return err
	}
	start := time.Now()
	if op.Fence == 0 {
		var res splitIndexResult
		if err := s.postJSON(ctx, src, "/v1/internal/split/fence", splitFenceRequest{Group: op.Source, Shards: shards}, &res); err != nil {
			return fmt.Errorf("fence: %w", err)
		}
		if _, err := s.runPlacementChange(ctx, func(p *placement.Placement) (*placement.Placement, error) {
			return placement.RecordFence(p, op.Target, res.Index)
		}); err != nil {
			return fmt.Errorf("record fence: %w", err)
		}
		op.Fence = res.Index
		s.logger.Info("split fenced", "source", op.Source, "shards", op.Shards, "fence", res.Index)
	}
	// Copy, page by page.
	var after []byte
	copied := 0
	for {
		path := fmt.Sprintf("/v1/internal/split/export?group=%s&lo=%d&hi=%d", op.Source, lo, hi)
		if after != nil {
			path += "&after=" + url.QueryEscape(base64.StdEncoding.EncodeToString(after))
		}
		var page splitExport
		if err := s.getJSON(ctx, src, path, 30*time.Second, &page); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if len(page.KVs) > 0 {
			var res splitIndexResult
			if err := s.postJSON(ctx, tgt, "/v1/internal/split/ingest", splitIngestRequest{Group: op.Target, Base: op.Fence, KVs: page.KVs}, &res); err != nil {
				return fmt.Errorf("ingest: %w", err)
			}
			copied += len(page.KVs)
			after = page.KVs[len(page.KVs)-1].Key
		}
		if !page.More {
			break
		}
	}
	if _, err := s.runPlacementChange(ctx, func(p *placement.Placement) (*placement.Placement, error) {
		return placement.CompleteSplit(p, op.Target)
	}); err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	s.logger.Info("split switched", "source", op.Source, "target", op.Target, "shards", op.Shards, "keys", copied, "copy", time.Since(start))
	var res splitIndexResult
	if err := s.postJSON(ctx, src, "/v1/internal/split/purge", splitFenceRequest{Group: op.Source, Shards: shards}, &res); err != nil {
		s.logger.Warn("purging moved keys failed (they are fenced; retry by hand is not needed for correctness)", "source", op.Source, "error", err)
	}
	return nil
}
