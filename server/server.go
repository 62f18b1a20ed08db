package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/ldcd/ldcd/cdc"
	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/raftgroup"
	"github.com/ldcd/ldcd/store"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/semaphore"
)

// markerFile marks a data dir whose node belongs to a cluster: such a node
// never bootstraps a new one.
const markerFile = "cluster"

// Server is one ldcd node. It serves the HTTP API, hosts its Raft groups,
// takes part in membership, and runs the placement driver (active while it
// leads the global group) and agent.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	httpAdv string
	raftAdv string

	host      *raftgroup.Host
	mem       *membership
	httpLn    net.Listener
	httpSrv   *http.Server
	handler   http.Handler        // what routes built; framed requests run through it
	frameWork chan func()         // idle frame workers wait here (frames.go)
	inflight  *semaphore.Weighted // request bytes in flight (limits.go)
	rejoin    []string            // gossip addresses to rejoin at when restarted without --join
	fwd       *http.Client
	reg       *prometheus.Registry
	metrics   *metrics
	driver    *placement.Driver
	agent     *placement.Agent
	pd        *pd
	leaders   leaderCache

	czMu     sync.Mutex // guards czStore and follower
	czStore  *store.Store
	follower *cdc.Follower

	pmu       sync.RWMutex // guards placement and pchanged
	placement *placement.Placement
	pchanged  chan struct{} // closed when placement changes

	globalApplied chan struct{} // kicked when the local global replica applies
	memberChanged chan struct{} // kicked on membership events; wakes the driver

	disk diskState // the NOSPACE alarm (diskspace.go)

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New starts a node: it reopens its groups, bootstraps a new cluster if it
// is the first node, joins the others, and serves HTTP. Close stops it.
func New(cfg Config) (*Server, error) {
	s, err := newServer(cfg)
	if err != nil {
		if s != nil {
			s.Close()
		}
		return nil, err
	}
	return s, nil
}

// newServer builds the node; on error the caller closes what it returns.
func newServer(cfg Config) (s *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("node", cfg.Name)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: data dir: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s = &Server{
		cfg: cfg, logger: cfg.Logger, ctx: ctx, cancel: cancel,
		pchanged:      make(chan struct{}),
		globalApplied: make(chan struct{}, 1),
		memberChanged: make(chan struct{}, 1),
		frameWork:     make(chan func()),
		inflight:      semaphore.NewWeighted(cfg.MaxInflightBytes),
	}
	raftLn, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return s, fmt.Errorf("server: raft listener: %w", err)
	}
	s.raftAdv = cfg.advertise(raftLn.Addr())
	rc := cfg.Raft
	rc.NodeID = cfg.Name
	rc.DataDir = cfg.DataDir
	rc.Listener = raftLn
	rc.Advertise = s.raftAdv
	rc.Logger = cfg.Logger
	rc.OnApply = s.onApply
	rc.ChangeLogCount = cfg.ChangeLogCount
	rc.ChangeLogAge = cfg.ChangeLogAge
	s.host, err = raftgroup.New(rc)
	if err != nil {
		raftLn.Close()
		return s, err
	}

	s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return s, fmt.Errorf("server: http listener: %w", err)
	}
	// Beyond MaxConnections, Accept waits for one to close; the deadlines
	// (limits.go) see that idle and slow ones do.
	s.httpLn = netutil.LimitListener(s.httpLn, cfg.MaxConnections)
	s.httpAdv = cfg.advertise(s.httpLn.Addr())

	_, statErr := os.Stat(filepath.Join(cfg.DataDir, markerFile))
	member := statErr == nil // this data dir already belongs to a cluster
	if member && len(cfg.Join) == 0 {
		s.rejoin = savedPeers(cfg.DataDir)
	}
	_, hasGlobal := s.host.Group(placement.GlobalGroup)
	if !hasGlobal && len(cfg.Join) == 0 && !member {
		s.logger.Info("bootstrapping a new cluster")
		self := []raft.Server{{ID: raft.ServerID(cfg.Name), Address: raft.ServerAddress(s.raftAdv)}}
		if _, err := s.host.Create(placement.GlobalGroup, self); err != nil {
			return s, err
		}
		if err := s.mark(); err != nil {
			return s, err
		}
	}

	s.reg = prometheus.NewRegistry()
	s.metrics = newMetrics(s.reg, s.host, s.placementView, s.followerStatus)
	s.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ldcd_disk_free_bytes", Help: "Free space of the data directory's file system, at the last check (every 250 ms)."},
			func() float64 { return float64(s.disk.free.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ldcd_alarm_nospace", Help: "1 while free disk space is below --min-free-space: the groups with a replica on this node refuse writes (507)."},
			func() float64 {
				if s.disk.nospace.Load() {
					return 1
				}
				return 0
			}))
	s.fwd = newForwardClient()
	s.pd = &pd{s: s}

	s.mem, err = startMembership(&s.cfg, s.httpAdv, s.raftAdv, s.onMembership)
	if err != nil {
		return s, err
	}
	s.publishDamaged()
	s.httpSrv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: min(10*time.Second, cfg.ReadTimeout),
		IdleTimeout:       cfg.IdleTimeout,
		// ReadTimeout and WriteTimeout stay 0: they would cut change
		// feeds. Each request gets its own deadlines (limits.go).
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("http server stopped", "error", err)
		}
	}()

	s.agent = placement.StartAgent(local{s}, cfg.PlacementInterval, s.logger.With("component", "agent"))
	opts := placement.DefaultOptions()
	opts.DeadAfter = cfg.DeadNodeTimeout
	s.driver = placement.StartDriver(s.pd, placement.DriverConfig{Interval: cfg.PlacementInterval, Options: opts, Logger: s.logger.With("component", "driver"), Wake: s.memberChanged})

	s.wg.Add(4)
	go s.watchDisk()
	go s.joinLoop()
	go s.followPlacement()
	go s.runSplits()
	s.logger.Info("node started", "http", s.httpAdv, "raft", s.raftAdv, "gossip", cfg.GossipAddr, "zone", cfg.Zone, "city", cfg.City, "groups", len(s.host.Groups()))
	return s, nil
}

// HTTPAddr returns the address the HTTP API is reachable at.
func (s *Server) HTTPAddr() string { return s.httpAdv }

// Close stops the node and waits for everything it started. It is
// idempotent.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		if s.httpSrv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s.httpSrv.Shutdown(sctx)
			cancel()
		} else if s.httpLn != nil {
			s.httpLn.Close()
		}
		if s.agent != nil {
			s.agent.Close()
		}
		if s.driver != nil {
			s.driver.Close()
		}
		s.wg.Wait()
		if s.mem != nil {
			s.mem.close()
		}
		s.czMu.Lock()
		if s.follower != nil {
			s.follower.Close()
			s.czStore.Close()
		}
		s.czMu.Unlock()
		if s.host != nil {
			err = s.host.Close()
		}
		s.logger.Info("node stopped")
	})
	return err
}

func (s *Server) mark() error {
	p := filepath.Join(s.cfg.DataDir, markerFile)
	if err := os.WriteFile(p, []byte(s.cfg.Name+"\n"), 0o600); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// joinLoop joins the members named by --join (or, on a restart without it,
// the peers this node last knew), retrying until it succeeds.
func (s *Server) joinLoop() {
	defer s.wg.Done()
	addrs := s.cfg.Join
	if len(addrs) == 0 {
		addrs = s.rejoin
	}
	if len(addrs) == 0 {
		return
	}
	backoff := 500 * time.Millisecond
	for {
		err := s.mem.join(addrs)
		if err == nil {
			s.logger.Info("joined the cluster", "via", addrs)
			if err := s.mark(); err != nil {
				s.logger.Error("cannot write the cluster marker", "error", err)
			}
			return
		}
		s.logger.Warn("join failed, retrying", "error", err, "in", backoff)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Server) onMembership() {
	select {
	case s.memberChanged <- struct{}{}:
	default:
	}
}

// publishDamaged tells the cluster which replicas here are damaged (a
// gossip tag), so that their leaders remove them and add them back once
// wiped.
func (s *Server) publishDamaged() {
	ids := make([]string, 0)
	for id := range s.host.Damaged() {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	// The gossip metadata is small (512 bytes for every tag): list what
	// fits; the rest follow as the listed ones are wiped and published
	// again. Never more than is damaged, so no healthy replica is removed.
	v := ""
	for _, id := range ids {
		if len(v)+len(id)+1 > 256 {
			break
		}
		if v != "" {
			v += ","
		}
		v += id
	}
	if err := s.mem.setTag(tagDamaged, v); err != nil {
		s.logger.Warn("cannot publish the damaged replicas", "error", err)
	}
}

// onApply runs on a group's apply goroutine: it must not block.
func (s *Server) onApply(group string, index uint64) {
	if group == placement.GlobalGroup {
		select {
		case s.globalApplied <- struct{}{}:
		default:
		}
	}
}

// currentPlacement returns the newest placement this node knows (nil before
// the first one arrives) and a channel closed when it changes.
func (s *Server) currentPlacement() (*placement.Placement, <-chan struct{}) {
	s.pmu.RLock()
	defer s.pmu.RUnlock()
	return s.placement, s.pchanged
}

// setPlacement records p if it is newer than what the node knows, and hands
// it to the agent.
func (s *Server) setPlacement(p *placement.Placement) {
	s.pmu.Lock()
	if s.placement != nil && p.Version <= s.placement.Version {
		s.pmu.Unlock()
		return
	}
	s.placement = p
	close(s.pchanged)
	s.pchanged = make(chan struct{})
	s.pmu.Unlock()
	s.logger.Debug("placement updated", "version", p.Version)
	s.agent.Update(p)
	if z, ok := p.Topology.Zone(s.cfg.Zone); ok && z.Kind == placement.KindCZone {
		s.startFollower()
	}
}

type raftServer = raft.Server

func selfServer(s *Server) []raft.Server {
	return []raft.Server{{ID: raft.ServerID(s.cfg.Name), Address: raft.ServerAddress(s.raftAdv)}}
}

// placementView is the driver's latest view of the cluster, on the global
// leader; nil elsewhere.
func (s *Server) placementView() *client.ClusterInfo {
	if s.pd == nil || !s.pd.Leading() {
		return nil
	}
	obs := s.pd.lastObservation()
	p, _ := s.currentPlacement()
	if obs == nil || p == nil {
		return nil
	}
	info := clusterInfo(s.cfg.Name, obs, p, s.cfg.DeadNodeTimeout)
	return &info
}

// followerStatus is the CZone follower's progress (nil on other nodes).
func (s *Server) followerStatus() *cdc.FollowerStatus {
	f, _ := s.czone()
	if f == nil {
		return nil
	}
	st := f.Status()
	return &st
}
