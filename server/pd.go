package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/ldcd/ldcd/cdc"
	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/raftgroup"
	"github.com/ldcd/ldcd/store"
)

// placementKey is the system record of the global group that holds the
// desired placement.
var placementKey = store.SystemKey("placement")

// nodeStatus answers GET /v1/internal/status: the node's view of each of its
// groups.
type nodeStatus struct {
	Node   string             `json:"node"`
	Groups []raftgroup.Status `json:"groups"`
	// Damaged holds the replicas here that this node cannot vouch for
	// (not running; rebuilt from their groups), with why.
	Damaged map[string]string `json:"damaged,omitempty"`
	// CDC is the CZone follower's progress, on a CZone node.
	CDC *cdc.FollowerStatus `json:"cdc,omitempty"`
}

func (s *Server) localStatus() nodeStatus {
	st := nodeStatus{Node: s.cfg.Name, CDC: s.followerStatus(), Damaged: s.host.Damaged()}
	for _, g := range s.host.Groups() {
		st.Groups = append(st.Groups, g.Status())
	}
	return st
}

// observation is what the placement driver saw in its last round.
type observation struct {
	At       time.Time
	Members  []member
	Statuses map[string]nodeStatus // by node
	State    placement.ClusterState
}

// pd implements placement.Cluster for the driver. Its methods run on the
// driver's goroutine; last is also read by the HTTP handlers.
type pd struct {
	s         *Server
	loadedRev uint64 // version of the placement record as last loaded
	// loaded is the placement decoded at loadedRev: the driver loads every
	// round, and decoding the record each time was a tenth of an idle
	// global leader's CPU. Placements are not modified once decoded (Plan
	// works on a clone).
	loaded *placement.Placement

	mu   sync.Mutex // guards last
	last *observation
}

var _ placement.Cluster = (*pd)(nil)

func (p *pd) global() (*raftgroup.Group, bool) { return p.s.host.Group(placement.GlobalGroup) }

func (p *pd) Leading() bool {
	g, ok := p.global()
	return ok && g.IsLeader()
}

func (p *pd) Load(ctx context.Context) (*placement.Placement, error) {
	g, ok := p.global()
	if !ok {
		return nil, raftgroup.ErrNoGroup
	}
	if err := g.ReadBarrier(ctx); err != nil {
		return nil, err
	}
	kv, found, err := g.Store().Get(placementKey)
	if err != nil || !found {
		p.loadedRev, p.loaded = 0, nil
		return nil, err
	}
	if p.loaded != nil && kv.Version == p.loadedRev {
		return p.loaded, nil
	}
	pl, err := placement.Decode(kv.Value)
	if err != nil {
		return nil, err
	}
	p.loadedRev, p.loaded = kv.Version, pl
	p.s.setPlacement(pl)
	return pl, nil
}

func (p *pd) Initial() (*placement.Placement, error) {
	g, ok := p.global()
	if !ok {
		return nil, raftgroup.ErrNoGroup
	}
	topo := p.s.cfg.Topology
	if topo == nil {
		topo = placement.DefaultTopology(p.s.cfg.Zone, p.s.cfg.City)
	}
	servers, err := g.Servers()
	if err != nil {
		return nil, err
	}
	gp := placement.GroupPlacement{ID: placement.GlobalGroup, OwnerZone: topo.GZone(), Bootstrap: p.s.cfg.Name}
	for _, sv := range servers {
		gp.Replicas = append(gp.Replicas, placement.Replica{Node: sv.ID, Voter: sv.Voter})
	}
	return &placement.Placement{Topology: topo, Groups: []placement.GroupPlacement{gp}}, nil
}

func (p *pd) Save(ctx context.Context, pl *placement.Placement) error {
	g, ok := p.global()
	if !ok {
		return raftgroup.ErrNoGroup
	}
	cmd := &store.Command{
		Compares: []store.Compare{{Key: placementKey, Target: store.TargetVersion, Op: store.CmpEqual, Version: p.loadedRev}},
		Then:     []store.Op{{Type: store.OpPut, Key: placementKey, Value: pl.Encode()}},
	}
	res, err := g.Apply(ctx, cmd)
	if err != nil {
		return err
	}
	if !res.Succeeded {
		return placement.ErrVersionConflict
	}
	p.loadedRev, p.loaded = res.Index, pl
	p.s.setPlacement(pl)
	return nil
}

// Observe gathers membership and every alive node's group status.
func (p *pd) Observe(ctx context.Context) (placement.ClusterState, error) {
	members := p.s.mem.members()
	statuses := map[string]nodeStatus{p.s.cfg.Name: p.s.localStatus()}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range members {
		if !m.alive() || m.Name == p.s.cfg.Name || m.HTTP == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st nodeStatus
			if err := p.s.getJSON(ctx, m.HTTP, "/v1/internal/status", time.Second, &st); err != nil {
				p.s.logger.Debug("status poll failed", "peer", m.Name, "error", err)
				return
			}
			mu.Lock()
			statuses[m.Name] = st
			mu.Unlock()
		}()
	}
	wg.Wait()

	now := time.Now()
	cs := placement.ClusterState{Now: now, Groups: map[string]placement.GroupState{}}
	for _, m := range members {
		cs.Nodes = append(cs.Nodes, placement.NodeState{Name: m.Name, Zone: m.Zone, City: m.City, Alive: m.alive(), DownSince: m.DownSince})
	}
	var leaderTerm = map[string]uint64{}
	for node, st := range statuses {
		for _, gs := range st.Groups {
			cur := cs.Groups[gs.ID]
			cur.ID = gs.ID
			if cur.Applied == nil {
				cur.Applied = map[string]uint64{}
			}
			cur.Applied[node] = gs.AppliedIndex
			if gs.State == "Leader" && gs.Term >= leaderTerm[gs.ID] {
				leaderTerm[gs.ID] = gs.Term
				cur.Leader = node
				cur.LeaderApplied = gs.AppliedIndex
				cur.Members = cur.Members[:0]
				for _, sv := range gs.Servers {
					cur.Members = append(cur.Members, placement.Member{Node: sv.ID, Voter: sv.Voter})
				}
			}
			cs.Groups[gs.ID] = cur
		}
	}
	p.mu.Lock()
	p.last = &observation{At: now, Members: members, Statuses: statuses, State: cs}
	p.mu.Unlock()
	return cs, nil
}

func (p *pd) lastObservation() *observation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// followPlacement keeps this node's copy of the placement fresh: from the
// local global replica when there is one, otherwise by long-polling a node
// that has it.
func (s *Server) followPlacement() {
	defer s.wg.Done()
	backoff := 200 * time.Millisecond
	var decoded uint64 // the record version last decoded: the global group applies more than placements
	for s.ctx.Err() == nil {
		if g, ok := s.host.Group(placement.GlobalGroup); ok {
			if kv, found, err := g.Store().Get(placementKey); err == nil && found && kv.Version != decoded {
				if pl, err := placement.Decode(kv.Value); err == nil {
					s.setPlacement(pl)
					decoded = kv.Version
				}
			}
			// A replica that knows no leader may have been removed from the
			// global group (a removed follower is not told): then its copy
			// is stale, and only a peer can say so.
			wait := 5 * time.Second
			if id, _ := g.Leader(); id == "" {
				s.refreshPlacement()
				wait = time.Second
			}
			select {
			case <-s.ctx.Done():
			case <-s.globalApplied:
			case <-time.After(wait):
			}
			continue
		}
		if s.followPlacementFeed(s.feedPeers()) {
			backoff = 200 * time.Millisecond
			select { // the feed ended: reconnect shortly
			case <-s.ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		select {
		case <-s.ctx.Done():
		case <-s.globalApplied:
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// getJSON GETs path from a peer and decodes the JSON answer into out.
func (s *Server) getJSON(ctx context.Context, addr, path string, timeout time.Duration, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := s.fwd.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("server: %s%s: status %d", addr, path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// local implements placement.Local for the agent.
type local struct{ s *Server }

var _ placement.Local = local{}

func (l local) Node() string { return l.s.cfg.Name }

func (l local) LocalGroups() []string {
	var out []string
	for _, g := range l.s.host.Groups() {
		out = append(out, g.ID())
	}
	return out
}

func (l local) StartReplica(id string, bootstrap bool) error {
	var servers []raftServer
	if bootstrap {
		servers = selfServer(l.s)
	}
	_, err := l.s.host.Create(id, servers)
	if err == nil {
		l.s.logger.Info("replica started", "group", id, "bootstrap", bootstrap)
	}
	return err
}

func (l local) LocalDamaged() []string {
	var out []string
	for id := range l.s.host.Damaged() {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (l local) PeerDamaged(id, node string) bool { return l.s.mem.damagedOn(node, id) }

// Wipe deletes a damaged replica the agent found removed from its group's
// committed configuration (Membership), and tells the cluster.
func (l local) Wipe(id string) error {
	if err := l.s.host.Wipe(id); err != nil {
		return err
	}
	l.s.publishDamaged()
	return nil
}

func (l local) StopReplica(id string) error {
	if err := l.s.host.Remove(id); err != nil {
		return err
	}
	l.s.logger.Info("replica removed", "group", id)
	return nil
}

// Membership asks group id's leader for its committed configuration: the
// leader this replica knows of first, then every other member it or the
// desired placement lists, until one answers as the leader.
func (l local) Membership(ctx context.Context, id string) ([]placement.Member, error) {
	var ask []string
	seen := map[string]bool{l.s.cfg.Name: true}
	add := func(node string) {
		if node != "" && !seen[node] {
			seen[node] = true
			ask = append(ask, node)
		}
	}
	// A damaged replica is not running: its peers are those the placement
	// lists.
	if g, ok := l.s.host.Group(id); ok {
		leader, _ := g.Leader()
		add(leader)
		if servers, err := g.Servers(); err == nil {
			for _, sv := range servers {
				add(sv.ID)
			}
		}
	}
	if p, _ := l.s.currentPlacement(); p != nil {
		if gp, ok := p.Group(id); ok {
			for _, r := range gp.Replicas {
				add(r.Node)
			}
		}
	}
	var errs []error
	for _, node := range ask {
		m, ok := l.s.mem.member(node)
		if !ok || !m.alive() {
			continue
		}
		var ans committedMembers
		if err := l.s.getJSON(ctx, m.HTTP, "/v1/internal/members/"+id, 3*time.Second, &ans); err != nil {
			errs = append(errs, err)
			continue
		}
		out := make([]placement.Member, 0, len(ans.Servers))
		for _, sv := range ans.Servers {
			out = append(out, placement.Member{Node: sv.ID, Voter: sv.Voter})
		}
		return out, nil
	}
	return nil, fmt.Errorf("server: no leader of %s confirmed its configuration (asked %v): %w", id, ask, errors.Join(errs...))
}

func (l local) LeaderMembers(id string) ([]placement.Member, bool) {
	g, ok := l.s.host.Group(id)
	if !ok || !g.IsLeader() {
		return nil, false
	}
	servers, err := g.Servers()
	if err != nil {
		return nil, false
	}
	var out []placement.Member
	for _, sv := range servers {
		out = append(out, placement.Member{Node: sv.ID, Voter: sv.Voter})
	}
	return out, true
}

func (l local) group(id string) (*raftgroup.Group, error) {
	g, ok := l.s.host.Group(id)
	if !ok {
		return nil, raftgroup.ErrNoGroup
	}
	return g, nil
}

func (l local) raftAddr(node string) (string, error) {
	m, ok := l.s.mem.member(node)
	if !ok || m.Raft == "" {
		return "", fmt.Errorf("server: node %s is not known to membership", node)
	}
	return m.Raft, nil
}

// groupAndAddr returns local group id and node's Raft address.
func (l local) groupAndAddr(id, node string) (*raftgroup.Group, string, error) {
	g, err := l.group(id)
	if err != nil {
		return nil, "", err
	}
	addr, err := l.raftAddr(node)
	return g, addr, err
}

func (l local) AddLearner(ctx context.Context, id, node string) error {
	g, addr, err := l.groupAndAddr(id, node)
	if err != nil {
		return err
	}
	l.s.logger.Info("adding learner", "group", id, "peer", node)
	return g.AddNonvoter(ctx, node, addr)
}

func (l local) Promote(ctx context.Context, id, node string) error {
	g, addr, err := l.groupAndAddr(id, node)
	if err != nil {
		return err
	}
	l.s.logger.Info("promoting to voter", "group", id, "peer", node)
	return g.AddVoter(ctx, node, addr)
}

func (l local) RemoveMember(ctx context.Context, id, node string) error {
	g, err := l.group(id)
	if err != nil {
		return err
	}
	if d := failpointDelay("remove-member-delay"); d > 0 {
		l.s.logger.Warn("failpoint: holding a member removal back", "group", id, "peer", node, "for", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	l.s.logger.Info("removing member", "group", id, "peer", node)
	if err := g.RemoveServer(ctx, node); err != nil {
		return err
	}
	l.s.logger.Info("member removed", "group", id, "peer", node)
	return nil
}

func (l local) TransferLeadership(ctx context.Context, id, node string) error {
	g, err := l.group(id)
	if err != nil {
		return err
	}
	addr := ""
	if node != "" {
		if addr, err = l.raftAddr(node); err != nil {
			return err
		}
	}
	return g.TransferLeadership(ctx, node, addr)
}

func (l local) Zone(node string) string {
	if node == l.s.cfg.Name {
		return l.s.cfg.Zone
	}
	m, _ := l.s.mem.member(node)
	return m.Zone
}

func (l local) Reachable(id, node string) bool {
	g, ok := l.s.host.Group(id)
	return ok && g.PeerReachable(node)
}

func (l local) ReadyToLead(ctx context.Context, id, node string) bool {
	g, ok := l.s.host.Group(id)
	if !ok {
		return false
	}
	m, ok := l.s.mem.member(node)
	if !ok || !m.alive() {
		return false
	}
	var st nodeStatus
	if err := l.s.getJSON(ctx, m.HTTP, "/v1/internal/status", 500*time.Millisecond, &st); err != nil {
		return false
	}
	target := g.Raft().LastIndex()
	for _, gs := range st.Groups {
		if gs.ID == id {
			return gs.State == "Follower" && gs.AppliedIndex+readyLag >= target
		}
	}
	return false
}

// readyLag is how far (in entries) a transfer target may trail the leader.
const readyLag = 64

// GroupDigest fingerprints one local replica: its applied index and a hash
// of every key, version and value, read in one transaction.
type GroupDigest struct {
	ID           string `json:"id"`
	AppliedIndex uint64 `json:"applied_index"`
	SHA256       string `json:"sha256"`
}

func (s *Server) digests() []GroupDigest {
	var out []GroupDigest
	for _, g := range s.host.Groups() {
		h := sha256.New()
		applied, err := g.Store().Digest(h)
		if err != nil {
			continue
		}
		out = append(out, GroupDigest{ID: g.ID(), AppliedIndex: applied, SHA256: hex.EncodeToString(h.Sum(nil))})
	}
	if _, st := s.czone(); st != nil {
		h := sha256.New()
		if applied, err := st.Digest(h); err == nil {
			out = append(out, GroupDigest{ID: placement.GlobalGroup, AppliedIndex: applied, SHA256: hex.EncodeToString(h.Sum(nil))})
		}
	}
	return out
}
