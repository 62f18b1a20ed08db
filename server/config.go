package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/raftgroup"
)

// Config configures a node. Build it with DefaultConfig; the CLI fills it.
type Config struct {
	// Name is the node's name, unique in the cluster; its Raft server id.
	Name string
	// DataDir holds every group's files and the membership snapshot.
	DataDir string
	// Zone and City place the node in the topology.
	Zone string
	City string

	// Bind addresses (host:port).
	HTTPAddr   string
	RaftAddr   string
	GossipAddr string
	// AdvertiseHost is the host other nodes use to reach this one; by
	// default the host of each bind address (127.0.0.1 if that is empty or
	// unspecified).
	AdvertiseHost string

	// Join lists gossip addresses of existing members. Empty on the first
	// node, which bootstraps a new cluster.
	Join []string
	// Topology is used by the first node only; nil means the default
	// topology: this node's zone owns all 100 shards in 10 ranges.
	Topology *placement.Topology

	// MaxValueSize is the largest value accepted, in bytes.
	MaxValueSize int
	// RequestTimeout bounds each request (a client may ask for less).
	RequestTimeout time.Duration
	// MaxInflightBytes bounds the request bytes held in memory at once,
	// over every connection: a request that would go over it waits
	// briefly (InflightWait), then is refused with 503.
	MaxInflightBytes int64
	// InflightWait is how long a request waits for room under
	// MaxInflightBytes before it is refused.
	InflightWait time.Duration
	// ReadTimeout bounds how long a client may take to send a request
	// (headers and body), and a framed request once its first byte came.
	// WriteTimeout bounds each write of an answer (each line of a change
	// feed). IdleTimeout is how long a connection may wait for its next
	// request (keep-alive, frames).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	IdleTimeout  time.Duration
	// MaxConnections bounds the HTTP connections open at once (framed
	// and change-feed connections included); beyond it new connections
	// wait in the listen backlog until one closes.
	MaxConnections int
	// DeadNodeTimeout is how long a node stays down before its replicas
	// are replaced elsewhere.
	DeadNodeTimeout time.Duration
	// PlacementInterval is how often the placement driver and agents run.
	PlacementInterval time.Duration
	// MinFreeSpace is the free space, in bytes, the data directory's file
	// system must keep: below it the node raises the NOSPACE alarm and
	// every group with a replica here refuses writes (507) until space is
	// freed. 0 turns the check off.
	MinFreeSpace uint64

	// Pprof serves the runtime profiles under /debug/pprof/ on the HTTP port.
	Pprof bool
	// CDCSource pins the HTTP address a CZone node follows the global
	// group from (default: chosen by city among global voters and other
	// CZone nodes).
	CDCSource string
	// ChangeLogCount and ChangeLogAge bound each group's change log
	// (entries kept, and their age; 0: no age limit).
	ChangeLogCount int
	ChangeLogAge   time.Duration

	// Raft tuning, passed to every group.
	Raft raftgroup.Config

	Logger *slog.Logger
}

// MinFreeSpaceFloor is the smallest free-space reserve accepted: two of the
// shared log's 64 MiB segments, which it allocates ahead of time.
const MinFreeSpaceFloor = 128 << 20

// DefaultConfig returns a single-node configuration serving HTTP on
// 127.0.0.1:7070 with its data in ./ldcd-data.
func DefaultConfig() Config {
	return Config{
		Name:              "node1",
		DataDir:           "ldcd-data",
		Zone:              "default",
		City:              "default",
		HTTPAddr:          "127.0.0.1:7070",
		RaftAddr:          "127.0.0.1:7071",
		GossipAddr:        "127.0.0.1:7072",
		MaxValueSize:      1 << 20,
		RequestTimeout:    10 * time.Second,
		MaxInflightBytes:  256 << 20,
		InflightWait:      time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxConnections:    4096,
		DeadNodeTimeout:   30 * time.Second,
		PlacementInterval: time.Second,
		MinFreeSpace:      256 << 20,
		Raft:              raftgroup.DefaultConfig(),
	}
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("server: name is required")
	case len(c.Name) > 64:
		return errors.New("server: name is longer than 64 bytes")
	case c.DataDir == "":
		return errors.New("server: data dir is required")
	case c.Zone == "" || c.City == "":
		return errors.New("server: zone and city are required")
	case c.MaxValueSize < 1:
		return errors.New("server: max value size must be positive")
	case c.RequestTimeout <= 0:
		return errors.New("server: request timeout must be positive")
	case c.MaxInflightBytes < 2*int64(c.MaxValueSize)+1<<20:
		return errors.New("server: max in-flight bytes must be at least twice the max value size and 1 MiB (the largest transaction)")
	case c.InflightWait < 0:
		return errors.New("server: in-flight wait must not be negative")
	case c.ReadTimeout <= 0 || c.WriteTimeout <= 0 || c.IdleTimeout <= 0:
		return errors.New("server: read, write and idle timeouts must be positive")
	case c.MaxConnections < 1:
		return errors.New("server: max connections must be positive")
	case c.DeadNodeTimeout <= 0:
		return errors.New("server: dead node timeout must be positive")
	case c.PlacementInterval <= 0:
		return errors.New("server: placement interval must be positive")
	case c.MinFreeSpace != 0 && c.MinFreeSpace < MinFreeSpaceFloor:
		return fmt.Errorf("server: min free space %d MiB is below %d MiB: the shared log allocates its next 64 MiB segment and a 64 MiB spare ahead of time, so a smaller reserve can fill before writes stop (0 turns the check off)", c.MinFreeSpace>>20, MinFreeSpaceFloor>>20)
	}
	for name, a := range map[string]string{"http": c.HTTPAddr, "raft": c.RaftAddr, "gossip": c.GossipAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("server: %s address %q: %w", name, a, err)
		}
	}
	if c.Topology != nil {
		if err := c.Topology.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// advertise returns the address others use to reach bind (whose port may
// have been chosen by the kernel).
func (c *Config) advertise(bound net.Addr) string {
	host, port, _ := net.SplitHostPort(bound.String())
	if c.AdvertiseHost != "" {
		host = c.AdvertiseHost
	} else if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
