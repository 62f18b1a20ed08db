package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/raftgroup"
	"github.com/ldcd/ldcd/server"
	"github.com/ldcd/ldcd/store"
	"github.com/urfave/cli/v2"
)

func run(ctx context.Context, args []string) error {
	return newApp().RunContext(ctx, args)
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "ldcd",
		Usage: "a distributed key-value store for Logical Data Center (LDC) deployments",
		Description: "Users are split by the last two digits of their userId into 100 shards; shard ranges\n" +
			"are owned by zones, each range is replicated by its own Raft group, and global data\n" +
			"lives in one global group. Start a node with `ldcd start`; talk to it with curl,\n" +
			"the Go client, or the kv, global and status commands below.",
		Commands:        []*cli.Command{startCommand(), kvCommand(), globalCommand(), statusCommand(), placementCommand(), recoverCommand(), benchCommand(), demoCommand()},
		HideHelpCommand: true,
	}
}

func env(name string) []string { return []string{"LDCD_" + name} }

func startCommand() *cli.Command {
	d := server.DefaultConfig()
	return &cli.Command{
		Name:  "start",
		Usage: "start a node (with no flags: a single-node cluster in ./ldcd-data on 127.0.0.1:7070)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Value: d.Name, EnvVars: env("NAME"), Usage: "node name, unique in the cluster"},
			&cli.StringFlag{Name: "data-dir", Value: d.DataDir, EnvVars: env("DATA_DIR"), Usage: "directory for the node's data"},
			&cli.StringFlag{Name: "zone", Value: d.Zone, EnvVars: env("ZONE"), Usage: "the zone this node is in"},
			&cli.StringFlag{Name: "city", Value: d.City, EnvVars: env("CITY"), Usage: "the city this node is in"},
			&cli.StringFlag{Name: "http-addr", Value: d.HTTPAddr, EnvVars: env("HTTP_ADDR"), Usage: "bind address of the HTTP API"},
			&cli.StringFlag{Name: "raft-addr", Value: d.RaftAddr, EnvVars: env("RAFT_ADDR"), Usage: "bind address of Raft traffic (one port for all groups)"},
			&cli.StringFlag{Name: "gossip-addr", Value: d.GossipAddr, EnvVars: env("GOSSIP_ADDR"), Usage: "bind address of membership gossip (TCP and UDP)"},
			&cli.StringFlag{Name: "advertise-host", EnvVars: env("ADVERTISE_HOST"), Usage: "host other nodes use to reach this one (default: the bind host)"},
			&cli.StringSliceFlag{Name: "join", EnvVars: env("JOIN"), Usage: "gossip address of an existing node (repeatable); omit on the first node"},
			&cli.StringFlag{Name: "topology", EnvVars: env("TOPOLOGY"), Usage: "YAML topology file, read by the first node only"},
			&cli.IntFlag{Name: "max-value-size", Value: d.MaxValueSize, EnvVars: env("MAX_VALUE_SIZE"), Usage: "largest value accepted, in bytes"},
			&cli.DurationFlag{Name: "request-timeout", Value: d.RequestTimeout, EnvVars: env("REQUEST_TIMEOUT"), Usage: "upper bound of a request"},
			&cli.Int64Flag{Name: "max-inflight-bytes", Value: d.MaxInflightBytes, EnvVars: env("MAX_INFLIGHT_BYTES"), Usage: "request bytes the node holds in memory at once, over all connections; a request over it waits briefly, then gets 503"},
			&cli.DurationFlag{Name: "client-read-timeout", Value: d.ReadTimeout, EnvVars: env("CLIENT_READ_TIMEOUT"), Usage: "how long a client may take to send a request (headers and body), or a framed request once begun"},
			&cli.DurationFlag{Name: "client-write-timeout", Value: d.WriteTimeout, EnvVars: env("CLIENT_WRITE_TIMEOUT"), Usage: "how long each write of an answer to a client may take (each line of a change feed)"},
			&cli.IntFlag{Name: "max-connections", Value: d.MaxConnections, EnvVars: env("MAX_CONNECTIONS"), Usage: "HTTP connections open at once; beyond it new ones wait until one closes"},
			&cli.DurationFlag{Name: "client-idle-timeout", Value: d.IdleTimeout, EnvVars: env("CLIENT_IDLE_TIMEOUT"), Usage: "how long a client connection may wait idle for its next request (keep-alive, frames)"},
			&cli.DurationFlag{Name: "dead-node-timeout", Value: d.DeadNodeTimeout, EnvVars: env("DEAD_NODE_TIMEOUT"), Usage: "how long a node stays down before its replicas are replaced"},
			&cli.StringFlag{Name: "min-free-space", Value: "256MiB", EnvVars: env("MIN_FREE_SPACE"), Usage: "free space the data directory's file system must keep (bytes, or with KiB, MiB, GiB): below it the node raises the NOSPACE alarm and the groups with a replica here refuse writes with 507 until space is freed; 0 turns the check off"},
			&cli.DurationFlag{Name: "heartbeat-timeout", Value: d.Raft.HeartbeatTimeout, EnvVars: env("HEARTBEAT_TIMEOUT"), Usage: "Raft heartbeat timeout of every group"},
			&cli.DurationFlag{Name: "leader-heartbeat-timeout", EnvVars: env("LEADER_HEARTBEAT_TIMEOUT"), Usage: "heartbeat timeout of a group's raft while it leads, from --heartbeat-timeout to 2.5 times it (default 2.5 times it): the leader asks for each follower's heartbeat every tenth to fifth of it, and the batched rounds (every 0.15 heartbeat timeouts) keep followers in touch either way; ignored with --no-heartbeat-batching"},
			&cli.DurationFlag{Name: "election-timeout", Value: d.Raft.ElectionTimeout, EnvVars: env("ELECTION_TIMEOUT"), Usage: "Raft election timeout of every group"},
			&cli.DurationFlag{Name: "commit-timeout", Value: d.Raft.CommitTimeout, EnvVars: env("COMMIT_TIMEOUT"), Usage: "how long a leader with nothing new waits before telling followers the commit index (a tick with nothing new to tell is answered without the network)"},
			&cli.StringFlag{Name: "log-store", Value: d.Raft.LogStore, EnvVars: env("LOG_STORE"), Usage: "the Raft log a new group gets: shared (one log for all the node's groups: what they append at the same time takes one write and one fsync), wal (raft-wal segment files per group) or bolt (a bbolt file per group); a group keeps the kind it was made with"},
			&cli.DurationFlag{Name: "state-commit-delay", Value: d.Raft.StateCommitDelay, EnvVars: env("STATE_COMMIT_DELAY"), Usage: "how long the batches a group applies may gather in one open bbolt transaction before it commits (reads see them at once; a crash loses only the commit, the Raft log replays them); 0 commits every batch"},
			&cli.IntFlag{Name: "proposal-batch", Value: d.Raft.ProposalBatch, EnvVars: env("PROPOSAL_BATCH"), Usage: fmt.Sprintf("the most writes a group's leader puts in one log entry while --proposals-in-flight entries are out, from 1 (an entry per write) to %d", store.MaxBatchCommands)},
			&cli.IntFlag{Name: "proposals-in-flight", Value: d.Raft.ProposalsInFlight, EnvVars: env("PROPOSALS_IN_FLIGHT"), Usage: "entries of coalesced writes a group's leader keeps proposed and not yet applied; writes that arrive meanwhile wait and go out together in the next entry"},
			&cli.DurationFlag{Name: "proposal-linger", Value: d.Raft.ProposalLinger, EnvVars: env("PROPOSAL_LINGER"), Usage: "after an entry of several writes, how long a group's leader may hold back the next (at most twice as long as that entry took) while as many writes gather; 0 never waits"},
			&cli.BoolFlag{Name: "no-read-lease", EnvVars: env("NO_READ_LEASE"), Usage: "confirm leadership with a heartbeat round for every linearizable read instead of serving them under a leader's read lease (the lease needs every node's heartbeat timeout to be at least half of any other's)"},
			&cli.BoolFlag{Name: "no-heartbeat-batching", EnvVars: env("NO_HEARTBEAT_BATCHING"), Usage: "send every group's heartbeats as RPCs of their own instead of one frame per node pair every 0.15 heartbeat timeouts for all groups (this also turns off quiet appends)"},
			&cli.BoolFlag{Name: "no-append-batching", EnvVars: env("NO_APPEND_BATCHING"), Usage: "pipeline each group's log appends to a follower over a connection of its own (msgpack, one write each) instead of one connection per node pair for all groups, where what they send meanwhile goes out in one write"},
			&cli.BoolFlag{Name: "shared-connections", EnvVars: env("SHARED_CONNECTIONS"), Usage: "carry all Raft traffic to a peer, every group's, in one TCP connection (yamux streams) instead of a connection pool per group and peer"},
			&cli.Uint64Flag{Name: "snapshot-threshold", Value: d.Raft.SnapshotThreshold, EnvVars: env("SNAPSHOT_THRESHOLD"), Usage: "log entries between snapshots of a group"},
			&cli.Uint64Flag{Name: "trailing-logs", Value: d.Raft.TrailingLogs, EnvVars: env("TRAILING_LOGS"), Usage: "log entries kept after a snapshot"},
			&cli.StringFlag{Name: "cdc-source", EnvVars: env("CDC_SOURCE"), Usage: "on a CZone node: HTTP address to follow the global group from (default: chosen by city)"},
			&cli.IntFlag{Name: "change-log-count", Value: 100000, EnvVars: env("CHANGE_LOG_COUNT"), Usage: "changes each group's change log keeps for its feed (the newest records holding this many)"},
			&cli.DurationFlag{Name: "change-log-age", EnvVars: env("CHANGE_LOG_AGE"), Usage: "drop change-log entries older than this (0: keep by count only)"},
			&cli.BoolFlag{Name: "pprof", EnvVars: env("PPROF"), Usage: "serve runtime profiles under /debug/pprof/ on the HTTP port"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("LOG_LEVEL"), Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("LOG_FORMAT"), Usage: "text or json"},
		},
		Action: func(c *cli.Context) error {
			if os.Getenv("GOGC") == "" {
				// A node's live heap is small (tens of MiB) and its
				// garbage is per request; collecting at 4x the live heap
				// instead of 2x gave 256 clients' puts 1.00-1.17x, for
				// about 45 MiB more RSS on an idle node
				// (docs/PERFORMANCE.md). GOGC set by the operator wins.
				debug.SetGCPercent(nodeGCPercent)
			}
			cfg := server.DefaultConfig()
			cfg.Name = c.String("name")
			cfg.DataDir = c.String("data-dir")
			cfg.Zone = c.String("zone")
			cfg.City = c.String("city")
			cfg.HTTPAddr = c.String("http-addr")
			cfg.RaftAddr = c.String("raft-addr")
			cfg.GossipAddr = c.String("gossip-addr")
			cfg.AdvertiseHost = c.String("advertise-host")
			for _, j := range c.StringSlice("join") {
				for _, part := range strings.Split(j, ",") {
					if part = strings.TrimSpace(part); part != "" {
						cfg.Join = append(cfg.Join, part)
					}
				}
			}
			cfg.MaxValueSize = c.Int("max-value-size")
			cfg.Pprof = c.Bool("pprof")
			cfg.CDCSource = c.String("cdc-source")
			cfg.ChangeLogCount = c.Int("change-log-count")
			cfg.ChangeLogAge = c.Duration("change-log-age")
			cfg.RequestTimeout = c.Duration("request-timeout")
			cfg.MaxInflightBytes = c.Int64("max-inflight-bytes")
			cfg.ReadTimeout = c.Duration("client-read-timeout")
			cfg.WriteTimeout = c.Duration("client-write-timeout")
			cfg.IdleTimeout = c.Duration("client-idle-timeout")
			cfg.MaxConnections = c.Int("max-connections")
			cfg.DeadNodeTimeout = c.Duration("dead-node-timeout")
			minFree, err := parseBytes(c.String("min-free-space"))
			if err != nil {
				return fmt.Errorf("--min-free-space: %w", err)
			}
			cfg.MinFreeSpace = minFree
			cfg.Raft.HeartbeatTimeout = c.Duration("heartbeat-timeout")
			cfg.Raft.ElectionTimeout = c.Duration("election-timeout")
			cfg.Raft.CommitTimeout = c.Duration("commit-timeout")
			// raft's leader lease check: a leader that heard from no quorum
			// for this long steps down.
			cfg.Raft.LeaderLeaseTimeout = cfg.Raft.HeartbeatTimeout
			cfg.Raft.LeaderHeartbeatTimeout = c.Duration("leader-heartbeat-timeout")
			if cfg.Raft.LeaderHeartbeatTimeout == 0 {
				cfg.Raft.LeaderHeartbeatTimeout = cfg.Raft.HeartbeatTimeout * 5 / 2
			} else if lht, ht := cfg.Raft.LeaderHeartbeatTimeout, cfg.Raft.HeartbeatTimeout; lht < ht || lht*2 > ht*5 {
				return fmt.Errorf("--leader-heartbeat-timeout %v: must be from --heartbeat-timeout (%v) to 2.5 times it", lht, ht)
			}
			if cfg.Raft.StateCommitDelay = c.Duration("state-commit-delay"); cfg.Raft.StateCommitDelay < 0 {
				return fmt.Errorf("--state-commit-delay %v: must not be negative", cfg.Raft.StateCommitDelay)
			}
			switch cfg.Raft.LogStore = c.String("log-store"); cfg.Raft.LogStore {
			case raftgroup.LogWAL, raftgroup.LogBolt, raftgroup.LogShared:
			default:
				return fmt.Errorf("--log-store %q: must be wal, bolt or shared", cfg.Raft.LogStore)
			}
			if cfg.Raft.ProposalBatch = c.Int("proposal-batch"); cfg.Raft.ProposalBatch < 1 || cfg.Raft.ProposalBatch > store.MaxBatchCommands {
				return fmt.Errorf("--proposal-batch %d: must be from 1 to %d", cfg.Raft.ProposalBatch, store.MaxBatchCommands)
			}
			if cfg.Raft.ProposalsInFlight = c.Int("proposals-in-flight"); cfg.Raft.ProposalsInFlight < 1 {
				return fmt.Errorf("--proposals-in-flight %d: must be at least 1", cfg.Raft.ProposalsInFlight)
			}
			if cfg.Raft.ProposalLinger = c.Duration("proposal-linger"); cfg.Raft.ProposalLinger < 0 {
				return fmt.Errorf("--proposal-linger %v: must not be negative", cfg.Raft.ProposalLinger)
			}
			cfg.Raft.NoReadLease = c.Bool("no-read-lease")
			cfg.Raft.NoHeartbeatBatching = c.Bool("no-heartbeat-batching")
			cfg.Raft.SharedConnections = c.Bool("shared-connections")
			cfg.Raft.NoAppendBatching = c.Bool("no-append-batching")
			cfg.Raft.SnapshotThreshold = c.Uint64("snapshot-threshold")
			cfg.Raft.TrailingLogs = c.Uint64("trailing-logs")
			if path := c.String("topology"); path != "" {
				b, err := os.ReadFile(path)
				if err != nil {
					return fmt.Errorf("topology: %w", err)
				}
				topo, err := placement.ParseTopology(b)
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				cfg.Topology = topo
			}
			logger, err := newLogger(c.String("log-level"), c.String("log-format"), os.Stderr)
			if err != nil {
				return err
			}
			cfg.Logger = logger
			s, err := server.New(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "ldcd %s serving HTTP on http://%s (data in %s); Ctrl-C stops it\n", cfg.Name, s.HTTPAddr(), cfg.DataDir)
			<-c.Context.Done()
			return s.Close()
		},
	}
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// nodeGCPercent is the garbage collector's target of `ldcd start` when
// GOGC is not set.
const nodeGCPercent = 300

var endpointsFlag = &cli.StringSliceFlag{Name: "endpoints", Value: cli.NewStringSlice("127.0.0.1:7070"), EnvVars: env("ENDPOINTS"), Usage: "HTTP addresses of nodes"}

// endpointsOf returns --endpoints, each value split at commas.
func endpointsOf(c *cli.Context) []string {
	var eps []string
	for _, e := range c.StringSlice("endpoints") {
		eps = append(eps, strings.Split(e, ",")...)
	}
	return eps
}

func newClient(c *cli.Context) (*client.Client, error) {
	return client.New(client.Config{Endpoints: endpointsOf(c), Timeout: c.Duration("timeout")})
}

var timeoutFlag = &cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "give up after this long"}

func clientFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{endpointsFlag, timeoutFlag}, extra...)
}

func uidOf(c *cli.Context) (uint64, error) {
	if !c.IsSet("uid") {
		return 0, errors.New("--uid is required")
	}
	return placement.ParseUID(c.String("uid"))
}

func casOf(c *cli.Context) (*uint64, error) {
	if !c.IsSet("cas") {
		return nil, nil
	}
	v, err := strconv.ParseUint(c.String("cas"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("--cas %q: want a version number (0: the key must not exist)", c.String("cas"))
	}
	return &v, nil
}

// keyOps is what the kv and global commands do, for a user or for global
// data.
type keyOps struct {
	put  func(ctx context.Context, cl *client.Client, key string, val []byte, cas *uint64) (uint64, error)
	get  func(ctx context.Context, cl *client.Client, key string, stale bool) (*client.Value, error)
	del  func(ctx context.Context, cl *client.Client, key string, cas *uint64) (bool, error)
	list func(ctx context.Context, cl *client.Client, prefix string, limit int, stale bool) (*client.ListResult, error)
}

func staleOpts(stale bool) []client.ReadOption {
	if stale {
		return []client.ReadOption{client.Stale()}
	}
	return nil
}

func keyCommands(name, usage string, needUID bool, ops func(c *cli.Context) (keyOps, error)) *cli.Command {
	var uidFlags []cli.Flag
	argsPrefix := ""
	if needUID {
		uidFlags = []cli.Flag{&cli.StringFlag{Name: "uid", Usage: "userId (decimal, 0 to 2^63-1)"}}
		argsPrefix = "--uid U "
	}
	flags := func(extra ...cli.Flag) []cli.Flag { return clientFlags(append(uidFlags, extra...)...) }
	casFlag := &cli.StringFlag{Name: "cas", Usage: "write only if the key's version is this (0: the key must not exist)"}
	staleFlag := &cli.BoolFlag{Name: "stale", Usage: "read from the nearest replica, which may lag"}
	withOps := func(c *cli.Context, nargs string, min, max int) (keyOps, *client.Client, error) {
		for _, a := range c.Args().Slice() {
			if strings.HasPrefix(a, "--") && len(a) > 2 {
				return keyOps{}, nil, fmt.Errorf("flags go before the arguments: ldcd %s %s [flags] %s%s (got %q after them)", name, c.Command.Name, argsPrefix, nargs, a)
			}
		}
		if n := c.NArg(); n < min || n > max {
			return keyOps{}, nil, fmt.Errorf("usage: ldcd %s %s %s%s", name, c.Command.Name, argsPrefix, nargs)
		}
		o, err := ops(c)
		if err != nil {
			return keyOps{}, nil, err
		}
		cl, err := newClient(c)
		return o, cl, err
	}
	return &cli.Command{
		Name:  name,
		Usage: usage,
		Subcommands: []*cli.Command{
			{
				Name: "put", Usage: "write a value (VALUE, or standard input if omitted)", ArgsUsage: argsPrefix + "KEY [VALUE]",
				Flags: flags(casFlag),
				Action: func(c *cli.Context) error {
					o, cl, err := withOps(c, "KEY [VALUE]", 1, 2)
					if err != nil {
						return err
					}
					cas, err := casOf(c)
					if err != nil {
						return err
					}
					var val []byte
					if c.NArg() == 2 {
						val = []byte(c.Args().Get(1))
					} else if val, err = io.ReadAll(os.Stdin); err != nil {
						return err
					}
					v, err := o.put(c.Context, cl, c.Args().Get(0), val, cas)
					if err != nil {
						return err
					}
					fmt.Printf("version %d\n", v)
					return nil
				},
			},
			{
				Name: "get", Usage: "print a value", ArgsUsage: argsPrefix + "KEY",
				Flags: flags(staleFlag),
				Action: func(c *cli.Context) error {
					o, cl, err := withOps(c, "KEY", 1, 1)
					if err != nil {
						return err
					}
					v, err := o.get(c.Context, cl, c.Args().Get(0), c.Bool("stale"))
					if err != nil {
						return err
					}
					os.Stdout.Write(v.Data)
					fmt.Println()
					fmt.Fprintf(os.Stderr, "version %d\n", v.Version)
					return nil
				},
			},
			{
				Name: "del", Usage: "delete a key", ArgsUsage: argsPrefix + "KEY",
				Flags: flags(casFlag),
				Action: func(c *cli.Context) error {
					o, cl, err := withOps(c, "KEY", 1, 1)
					if err != nil {
						return err
					}
					cas, err := casOf(c)
					if err != nil {
						return err
					}
					found, err := o.del(c.Context, cl, c.Args().Get(0), cas)
					if err != nil {
						return err
					}
					if found {
						fmt.Println("deleted")
					} else {
						fmt.Println("not found")
					}
					return nil
				},
			},
			{
				Name: "list", Usage: "list keys, values and versions", ArgsUsage: argsPrefix,
				Flags: flags(&cli.StringFlag{Name: "prefix"}, &cli.IntFlag{Name: "limit", Value: 100}, staleFlag),
				Action: func(c *cli.Context) error {
					o, cl, err := withOps(c, "", 0, 0)
					if err != nil {
						return err
					}
					lr, err := o.list(c.Context, cl, c.String("prefix"), c.Int("limit"), c.Bool("stale"))
					if err != nil {
						return err
					}
					tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "KEY\tVERSION\tVALUE")
					for _, kv := range lr.KVs {
						v := kv.Value
						if kv.ValueBase64 != "" {
							v = "base64:" + kv.ValueBase64
						}
						fmt.Fprintf(tw, "%s\t%d\t%s\n", kv.Key, kv.Version, v)
					}
					tw.Flush()
					if lr.More {
						fmt.Println("(more keys follow; raise --limit)")
					}
					return nil
				},
			},
		},
	}
}

func kvCommand() *cli.Command {
	return keyCommands("kv", "read and write a user's keys", true, func(c *cli.Context) (keyOps, error) {
		uid, err := uidOf(c)
		if err != nil {
			return keyOps{}, err
		}
		return keyOps{
			put: func(ctx context.Context, cl *client.Client, k string, v []byte, cas *uint64) (uint64, error) {
				if cas != nil {
					return cl.CompareAndSwap(ctx, uid, k, v, *cas)
				}
				return cl.Put(ctx, uid, k, v)
			},
			get: func(ctx context.Context, cl *client.Client, k string, stale bool) (*client.Value, error) {
				return cl.Get(ctx, uid, k, staleOpts(stale)...)
			},
			del: func(ctx context.Context, cl *client.Client, k string, cas *uint64) (bool, error) {
				if cas != nil {
					return cl.CompareAndDelete(ctx, uid, k, *cas)
				}
				return cl.Delete(ctx, uid, k)
			},
			list: func(ctx context.Context, cl *client.Client, p string, limit int, stale bool) (*client.ListResult, error) {
				return cl.List(ctx, uid, p, limit, staleOpts(stale)...)
			},
		}, nil
	})
}

func globalCommand() *cli.Command {
	return keyCommands("global", "read and write global keys (the global group)", false, func(c *cli.Context) (keyOps, error) {
		return keyOps{
			put: func(ctx context.Context, cl *client.Client, k string, v []byte, cas *uint64) (uint64, error) {
				if cas != nil {
					return cl.GlobalCompareAndSwap(ctx, k, v, *cas)
				}
				return cl.GlobalPut(ctx, k, v)
			},
			get: func(ctx context.Context, cl *client.Client, k string, stale bool) (*client.Value, error) {
				return cl.GlobalGet(ctx, k, staleOpts(stale)...)
			},
			del: func(ctx context.Context, cl *client.Client, k string, cas *uint64) (bool, error) {
				if cas != nil {
					return false, errors.New("--cas is not supported on global del yet")
				}
				return cl.GlobalDelete(ctx, k)
			},
			list: func(ctx context.Context, cl *client.Client, p string, limit int, stale bool) (*client.ListResult, error) {
				return cl.GlobalList(ctx, p, limit, staleOpts(stale)...)
			},
		}, nil
	})
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the cluster's nodes and groups with their leaders",
		Flags: clientFlags(),
		Action: func(c *cli.Context) error {
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			info, err := cl.Cluster(c.Context)
			if err != nil {
				return err
			}
			printStatus(os.Stdout, info)
			return nil
		},
	}
}

func printStatus(w io.Writer, info *client.ClusterInfo) {
	fmt.Fprintf(w, "placement version %d, routing epoch %d, answered by %s\n\n", info.PlacementVersion, info.Epoch, info.Leader)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tZONE\tCITY\tSTATUS\tALARM\tHTTP")
	for _, n := range info.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Zone, n.City, n.Status, dashStr(strings.ToUpper(n.Alarm)), n.HTTPAddr)
	}
	tw.Flush()
	fmt.Fprintln(w)
	groups := append([]client.GroupInfo(nil), info.Groups...)
	sort.SliceStable(groups, func(i, j int) bool {
		return groups[i].ID == placement.GlobalGroup && groups[j].ID != placement.GlobalGroup
	})
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tSHARDS\tSTATUS\tOWNER\tSERVING\tLEADER\tPINNED\tEPOCH\tTERM\tVOTERS\tNONVOTERS\tAPPLIED")
	for _, g := range groups {
		shards := g.Shards
		if shards == "" {
			shards = "-"
		}
		leader := "(none)"
		if g.Leader != "" {
			leader = g.Leader + "@" + dashStr(g.LeaderZone)
		}
		withZones := func(nodes []string) string {
			if len(nodes) == 0 {
				return "-"
			}
			out := make([]string, len(nodes))
			for i, n := range nodes {
				out[i] = n + "@" + dashStr(g.Zones[n])
			}
			return strings.Join(out, ",")
		}
		pinned := "no"
		if g.Pinned && g.Leader != "" {
			pinned = "yes"
		}
		status := dashStr(g.Status)
		if len(g.LostVoters) > 0 {
			status += " (lost " + strings.Join(g.LostVoters, ",") + ")"
		}
		if len(g.Damaged) > 0 {
			status += " (damaged on " + strings.Join(g.Damaged, ",") + ", rebuilding)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d\n", g.ID, shards, status, dashStr(g.OwnerZone), dashStr(g.ServingZone),
			leader, pinned, g.Epoch, g.Term, withZones(g.Voters), withZones(g.Nonvoters), g.AppliedIndex)
	}
	tw.Flush()
	for _, g := range groups {
		if g.Status == "unavailable" {
			fmt.Fprintf(w, "\n%s is unavailable: a majority of its voters (%s) has been down for longer than --dead-node-timeout.\nBring them back, or rebuild it from its survivors: ldcd recover --group %s --dry-run\n",
				g.ID, strings.Join(g.LostVoters, ", "), g.ID)
		}
	}
	if len(info.CDC) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CZONE COPY\tZONE\tGROUP\tSOURCE\tCONNECTED\tAPPLIED\tLAG (ENTRIES)\tLAG (MS)")
		for _, c := range info.CDC {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%d\t%d\t%d\n", c.Node, c.Zone, c.Group, dashStr(c.Source), c.Connected, c.AppliedIndex, c.LagIndex, c.LagMs)
		}
	}
	tw.Flush()
}

func dashStr(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseBytes reads a size: a number of bytes, or one with a unit (KiB, MiB,
// GiB, TiB; KB, MB, GB, TB; case does not matter).
func parseBytes(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   uint64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"b", 1}}
	lower := strings.ToLower(s)
	mult := uint64(1)
	for _, u := range units {
		if strings.HasSuffix(lower, u.suffix) {
			lower, mult = strings.TrimSpace(strings.TrimSuffix(lower, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(lower, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: want a size such as 256MiB", s)
	}
	if n > math.MaxUint64/mult {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return n * mult, nil
}
