package server

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
	"github.com/ldcd/ldcd/raftgroup"
)

// Serf tags every node carries.
const (
	tagZone = "zone"
	tagCity = "city"
	tagHTTP = "http"
	tagRaft = "raft"
	// tagAlarm lists the node's alarms ("nospace"), so that the leaders
	// of its groups refuse writes the node could not store.
	tagAlarm = "alarm"
	// tagDamaged lists groups whose replica on the node is damaged
	// (comma-separated), so that their leaders remove and re-add them.
	tagDamaged = "damaged"
)

// peerTags are what the write path and the agent read of other nodes' tags.
type peerTags struct {
	alarm   string
	damaged string // tagDamaged
}

// member is a node as membership sees it.
type member struct {
	Name, Zone, City, HTTP, Raft string
	Status                       serf.MemberStatus
	Alarm                        string // tagAlarm: "" or "nospace"
	// DownSince is when this node first saw the member fail or leave.
	DownSince time.Time
}

func (m member) alive() bool { return m.Status == serf.StatusAlive }

// membership runs serf: gossip, failure detection, and the tags that carry
// each node's zone, city and addresses.
type membership struct {
	serf      *serf.Serf
	logger    *slog.Logger
	peersPath string
	saved     string // what savePeers last wrote (only the events goroutine touches it)

	tagMu     sync.Mutex // serialises setTag's read-modify-write of the local tags
	mu        sync.Mutex // guards downSince
	downSince map[string]time.Time
	// tags holds the live nodes whose tags carry an alarm or damaged
	// replicas, rebuilt on every membership event, so the write path reads
	// it without locking.
	tags atomic.Pointer[map[string]peerTags]
	// alarmed is the alarms of tags alone, by node (nil when none): what
	// the write path asks on every write, built here, not per write.
	alarmed atomic.Pointer[map[string]string]

	onChange func() // called after membership changes; must not block
	events   chan serf.Event
	done     chan struct{}
	wg       sync.WaitGroup
}

func startMembership(cfg *Config, httpAdv, raftAdv string, onChange func()) (*membership, error) {
	host, portStr, err := net.SplitHostPort(cfg.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("server: gossip address: %w", err)
	}
	port, _ := strconv.Atoi(portStr)
	m := &membership{
		peersPath: filepath.Join(cfg.DataDir, "serf", "peers"),
		logger:    cfg.Logger.With("component", "serf"),
		downSince: map[string]time.Time{},
		onChange:  onChange,
		events:    make(chan serf.Event, 256),
		done:      make(chan struct{}),
	}
	sc := serf.DefaultConfig()
	sc.NodeName = cfg.Name
	sc.Tags = map[string]string{tagZone: cfg.Zone, tagCity: cfg.City, tagHTTP: httpAdv, tagRaft: raftAdv}
	sc.EventCh = m.events
	sc.Logger = raftgroup.StdLog(m.logger)
	sc.SnapshotPath = filepath.Join(cfg.DataDir, "serf", "snapshot")
	sc.RejoinAfterLeave = true
	sc.ReconnectInterval = 5 * time.Second
	if err := os.MkdirAll(filepath.Dir(sc.SnapshotPath), 0o700); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = host
	mc.BindPort = port
	adv := cfg.AdvertiseHost
	if ip := net.ParseIP(host); adv == "" && (host == "" || (ip != nil && ip.IsUnspecified())) {
		adv = "127.0.0.1"
	}
	if adv != "" {
		mc.AdvertiseAddr = adv
		mc.AdvertisePort = port
	}
	mc.Logger = sc.Logger
	sc.MemberlistConfig = mc
	m.serf, err = serf.Create(sc)
	if err != nil {
		return nil, fmt.Errorf("server: start gossip on %s: %w", cfg.GossipAddr, err)
	}
	m.wg.Add(1)
	go m.watch()
	return m, nil
}

func (m *membership) watch() {
	defer m.wg.Done()
	for {
		select {
		case <-m.done:
			return
		case e := <-m.events:
			me, ok := e.(serf.MemberEvent)
			if !ok {
				continue
			}
			now := time.Now()
			m.mu.Lock()
			for _, mem := range me.Members {
				switch me.Type {
				case serf.EventMemberFailed, serf.EventMemberLeave, serf.EventMemberReap:
					if _, ok := m.downSince[mem.Name]; !ok {
						m.downSince[mem.Name] = now
					}
				case serf.EventMemberJoin, serf.EventMemberUpdate:
					delete(m.downSince, mem.Name)
				}
				m.logger.Info("membership event", "event", me.Type.String(), "node", mem.Name, "zone", mem.Tags[tagZone])
			}
			m.mu.Unlock()
			tags := map[string]peerTags{}
			for _, sm := range m.serf.Members() {
				pt := peerTags{alarm: sm.Tags[tagAlarm], damaged: sm.Tags[tagDamaged]}
				if pt != (peerTags{}) && sm.Status == serf.StatusAlive {
					tags[sm.Name] = pt
				}
			}
			m.tags.Store(&tags)
			var alarmed map[string]string
			for node, t := range tags {
				if t.alarm != "" {
					if alarmed == nil {
						alarmed = map[string]string{}
					}
					alarmed[node] = t.alarm
				}
			}
			m.alarmed.Store(&alarmed)
			m.savePeers()
			if m.onChange != nil {
				m.onChange()
			}
		}
	}
}

// savePeers records the gossip addresses of the other live members, so that
// a restart without --join can find the cluster even when serf's own
// snapshot lists nobody (it did after a kill -9 in a Jepsen run).
func (m *membership) savePeers() {
	var addrs []string
	self := m.serf.LocalMember().Name
	for _, sm := range m.serf.Members() {
		if sm.Name != self && sm.Status == serf.StatusAlive {
			addrs = append(addrs, net.JoinHostPort(sm.Addr.String(), strconv.Itoa(int(sm.Port))))
		}
	}
	if len(addrs) == 0 {
		return // keep what we knew: a lone node still wants its old peers
	}
	sort.Strings(addrs)
	data := []byte(strings.Join(addrs, "\n") + "\n")
	if string(data) == m.saved {
		return
	}
	tmp := m.peersPath + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		m.logger.Warn("cannot record peers", "error", err)
		return
	}
	if err := os.Rename(tmp, m.peersPath); err != nil {
		m.logger.Warn("cannot record peers", "error", err)
		return
	}
	m.saved = string(data)
}

// savedPeers returns the gossip addresses savePeers recorded in dataDir.
func savedPeers(dataDir string) []string {
	b, err := os.ReadFile(filepath.Join(dataDir, "serf", "peers"))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// join contacts existing members at addrs.
func (m *membership) join(addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	n, err := m.serf.Join(addrs, true)
	if n == 0 && err != nil {
		return fmt.Errorf("server: join %v: %w", addrs, err)
	}
	return nil
}

// members returns every known node, ordered by name.
func (m *membership) members() []member {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []member
	now := time.Now()
	for _, sm := range m.serf.Members() {
		mem := member{Name: sm.Name, Zone: sm.Tags[tagZone], City: sm.Tags[tagCity], HTTP: sm.Tags[tagHTTP], Raft: sm.Tags[tagRaft], Status: sm.Status, Alarm: sm.Tags[tagAlarm]}
		if !mem.alive() {
			since, ok := m.downSince[sm.Name]
			if !ok {
				// Down before this node started watching (e.g. from the
				// snapshot at start): count from now.
				since = now
				m.downSince[sm.Name] = now
			}
			mem.DownSince = since
		}
		out = append(out, mem)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// setTag publishes one of this node's gossip tags ("" removes it).
func (m *membership) setTag(key, value string) error {
	m.tagMu.Lock()
	defer m.tagMu.Unlock()
	tags := map[string]string{}
	for k, v := range m.serf.LocalMember().Tags {
		tags[k] = v
	}
	if value == "" {
		delete(tags, key)
	} else {
		tags[key] = value
	}
	return m.serf.SetTags(tags)
}

// damagedOn reports whether node says its replica of group id is damaged.
func (m *membership) damagedOn(node, id string) bool {
	p := m.tags.Load()
	if p == nil {
		return false
	}
	d := (*p)[node].damaged
	if d == "" {
		return false
	}
	for _, g := range strings.Split(d, ",") {
		if g == id {
			return true
		}
	}
	return false
}

// alarms returns the alarms of the live nodes that raised one, by node
// (nil when none has).
func (m *membership) alarms() map[string]string {
	if p := m.alarmed.Load(); p != nil {
		return *p
	}
	return nil
}

// member returns the node named name.
func (m *membership) member(name string) (member, bool) {
	for _, mem := range m.members() {
		if mem.Name == name {
			return mem, true
		}
	}
	return member{}, false
}

func (m *membership) close() {
	if err := m.serf.Leave(); err != nil {
		m.logger.Debug("leave", "error", err)
	}
	m.serf.Shutdown()
	close(m.done)
	m.wg.Wait()
}
