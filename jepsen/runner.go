package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ldcd/ldcd/client"
)

// RunConfig describes one Jepsen-style run.
type RunConfig struct {
	Workload string
	Nemesis  string
	Duration time.Duration
	Seed     int64
	// Bin is the ldcd binary; Store is the parent of the run's directory.
	Bin, Store string
	// FailpointBin is an ldcd built with -tags failpoints, which the power
	// nemesis needs (its shared log keeps unsynced writes in memory, so a
	// kill -9 loses them as a power cut would).
	FailpointBin string
	// Clients is the number of concurrent client processes (default 10).
	Clients int
	Logf    func(format string, args ...any)
}

// RunResult is what a run found.
type RunResult struct {
	Dir      string
	Verdict  Verdict
	Ops      map[string]int // by status
	Notes    []string
	FinalOK  time.Duration // time from healing to a successful write in every range
	Replicas int           // replicas compared (all identical when the verdict is ok)
}

// Summary is the summary.json of a run.
type Summary struct {
	Workload string         `json:"workload"`
	Nemesis  string         `json:"nemesis"`
	Seed     int64          `json:"seed"`
	Duration string         `json:"duration"`
	Result   string         `json:"result"`
	Ops      map[string]int `json:"ops"`
	FinalMs  int64          `json:"final_write_ms"`
	Replicas int            `json:"replicas_compared"`
	Notes    []string       `json:"notes,omitempty"`
}

const runTopology = `zones:
  - {name: gz,  city: hz, kind: gzone}
  - {name: rz0, city: hz, kind: rzone}
  - {name: rz1, city: hz, kind: rzone}
  - {name: rz2, city: sh, kind: rzone}
  - {name: cz-sh, city: sh, kind: czone}
ranges:
  - {shards: 00-24, owner: rz0, failover: [rz1, rz2]}
  - {shards: 25-49, owner: rz0, failover: [rz2, rz1]}
  - {shards: 50-74, owner: rz1, failover: [rz0, rz2]}
  - {shards: 75-99, owner: rz2, failover: [rz1, rz0]}
replicas: 3
`

// Run runs one workload under one nemesis against a fresh LDC of six nodes
// (two cities, a GZone, three RZones and a CZone) and checks what the
// clients saw.
// Everything it creates is removed at the end but the run's directory.
func Run(ctx context.Context, cfg RunConfig) (*RunResult, error) {
	if cfg.Clients == 0 {
		cfg.Clients = 10
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	w, err := newWorkload(cfg.Workload)
	if err != nil {
		return nil, err
	}
	if !containsStr(Nemeses, cfg.Nemesis) {
		return nil, fmt.Errorf("jepsen: unknown nemesis %q (want one of %v)", cfg.Nemesis, Nemeses)
	}
	dir := filepath.Join(cfg.Store, fmt.Sprintf("%s-%s-%s", time.Now().Format("20060102T150405"), cfg.Workload, cfg.Nemesis))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	res := &RunResult{Dir: dir, Ops: map[string]int{}}
	note := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		res.Notes = append(res.Notes, msg)
		cfg.Logf("%s", msg)
	}
	note("seed %d", cfg.Seed)

	var nw *Net
	if cfg.Nemesis == "partition" || cfg.Nemesis == "mixed" || cfg.Nemesis == "membership" {
		if nw, err = OpenNet(); err != nil {
			// A run that cannot inject the faults it was asked for proves
			// nothing: in CI (root, make jepsen-deps) that is a failure;
			// by hand without root, the partitions are left out, loudly.
			if os.Getenv("CI") != "" || cfg.Nemesis == "partition" {
				return nil, fmt.Errorf("jepsen: %s nemesis asked for, but partitions cannot be made here: %w", cfg.Nemesis, err)
			}
			note("WARNING: partition faults SKIPPED (not a CI run): %v", err)
			nw = nil
		} else {
			defer nw.Close()
		}
	}
	note("no latency between cities: tc netem is not available on this kernel, so the cities are split only by partitions")

	// Dead nodes are replaced only where the nemesis replaces nodes.
	deadAfter := "1h"
	if cfg.Nemesis == "membership" {
		deadAfter = "10s"
	}
	c := &Cluster{Bin: cfg.Bin, Dir: dir, Args: []string{"--heartbeat-timeout", "500ms", "--election-timeout", "500ms", "--dead-node-timeout", deadAfter}}
	if cfg.Nemesis == "power" {
		if cfg.FailpointBin == "" {
			return nil, errors.New("jepsen: the power nemesis needs RunConfig.FailpointBin (ldcd built with -tags failpoints)")
		}
		c.Bin = cfg.FailpointBin
		c.Env = []string{"LDCD_POWER_LOSS=1"}
		note("power: nodes run a failpoints build whose shared log loses every write not fsynced on kill -9 (the state machine's bbolt file is not covered: kill -9 keeps its page cache)")
	}
	defer c.Close()
	// Nodes may run as other users: their data lives in a directory they
	// can reach wherever the repository is (logs stay in the run's dir).
	data, err := os.MkdirTemp("", "ldcd-jepsen-data-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(data)
	if err := os.Chmod(data, 0o755); err != nil {
		return nil, err
	}
	topo := filepath.Join(data, "topology.yaml")
	if err := os.WriteFile(topo, []byte(runTopology), 0o644); err != nil {
		return nil, err
	}
	os.WriteFile(filepath.Join(dir, "topology.yaml"), []byte(runTopology), 0o644)
	// spawn adds and starts a node with an address (and, for partitions, a
	// user) of its own; the first bootstraps, the others join it.
	spawn := func(name, zone, city string) (*Node, error) {
		i := len(c.Nodes)
		n, err := c.NewNodeAt(name, zone, city, fmt.Sprintf("127.0.0.%d", 21+i))
		if err != nil {
			return nil, err
		}
		n.DataDir = filepath.Join(data, name)
		if nw != nil {
			if n.UID, n.GID, err = nodeUser(i + 1); err != nil {
				return nil, err
			}
			if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
				return nil, err
			}
			if err := os.Chown(n.DataDir, int(n.UID), int(n.GID)); err != nil {
				return nil, err
			}
		}
		var join []string
		if i == 0 {
			n.Args = []string{"--topology", topo}
		} else {
			join = []string{c.Nodes[0].Gossip}
		}
		return n, c.Start(n, join...)
	}
	// disk-full: rz1a's data directory is a small file system of its own,
	// which the nemesis fills up to below the nodes' free-space reserve.
	var smallDisk string
	if cfg.Nemesis == "disk-full" {
		if os.Geteuid() != 0 {
			return nil, errors.New("jepsen: the disk-full nemesis mounts a tmpfs and needs root")
		}
		smallDisk = filepath.Join(data, "rz1a")
		if err := os.MkdirAll(smallDisk, 0o755); err != nil {
			return nil, err
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512m,mode=0755", "tmpfs", smallDisk).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("jepsen: mount a tmpfs for rz1a: %v: %s", err, out)
		}
		defer func() {
			c.Close()
			if out, err := exec.Command("umount", "-l", smallDisk).CombinedOutput(); err != nil {
				cfg.Logf("umount %s: %v: %s", smallDisk, err, out)
			}
		}()
		c.Args = append(c.Args, "--min-free-space", "160MiB")
		note("disk-full: rz1a's data directory is a 512 MiB tmpfs; every node keeps 160 MiB free")
	}
	for _, spec := range []struct{ name, zone, city string }{
		{"gz1", "gz", "hz"}, {"rz0a", "rz0", "hz"}, {"rz0b", "rz0", "hz"}, {"rz1a", "rz1", "hz"}, {"rz2a", "rz2", "sh"}, {"cz1", "cz-sh", "sh"},
	} {
		if _, err := spawn(spec.name, spec.zone, spec.city); err != nil {
			return nil, err
		}
	}
	var eps []string
	for _, n := range c.Nodes {
		eps = append(eps, n.HTTP)
	}
	cl, err := client.New(client.Config{Endpoints: eps, Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := waitHealthy(ctx, cl, 90*time.Second); err != nil {
		return nil, fmt.Errorf("jepsen: cluster did not come up: %w", err)
	}
	if u, ok := w.(interface{ useCluster(*Cluster) }); ok {
		u.useCluster(c)
	}
	if err := w.setup(ctx, cl); err != nil {
		return nil, fmt.Errorf("jepsen: workload setup: %w", err)
	}

	rec := NewRecorder()
	rnd := rand.New(rand.NewSource(cfg.Seed))
	runCtx, stop := context.WithTimeout(ctx, cfg.Duration)
	defer stop()
	var wg sync.WaitGroup
	for p := 0; p < cfg.Clients; p++ {
		crnd := rand.New(rand.NewSource(rnd.Int63()))
		pcl, err := client.New(client.Config{Endpoints: eps, Timeout: opTimeout})
		if err != nil {
			return nil, err
		}
		defer pcl.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				w.op(runCtx, p, crnd, pcl, rec)
			}
		}()
	}
	nem := newNemesis(cfg.Nemesis, c, nw, cl, rand.New(rand.NewSource(rnd.Int63())), rec, func(f string, a ...any) { cfg.Logf(f, a...) })
	nem.spawn = spawn
	nem.smallDisk = smallDisk
	nemDone := make(chan struct{})
	go func() {
		defer close(nemDone)
		nem.run(runCtx)
	}()
	wg.Wait()
	<-nemDone // healed
	healed := time.Now()

	// After healing: a write in every range within 10s, then identical
	// replicas, then the workload's own check. A run is vacuous, and so
	// failed, when its nemesis injected nothing, when too few operations
	// succeeded, or when a node is not running at the end.
	verdict := Verdict{Valid: true}
	if len(nem.kinds) > 0 && nem.injected == 0 {
		verdict = Verdict{Reason: fmt.Sprintf("the %s nemesis injected no fault (%d attempts failed)", cfg.Nemesis, nem.failed)}
	}
	ops := rec.Ops()
	for _, op := range ops {
		if op.Process >= 0 {
			res.Ops[op.Status]++
		}
	}
	floor := minOKPerMinute * cfg.Duration.Minutes()
	if verdict.Valid && float64(res.Ops[StatusOK]) < floor {
		verdict = Verdict{Reason: fmt.Sprintf("%d successful operations in %v: fewer than the floor of %d a minute", res.Ops[StatusOK], cfg.Duration, minOKPerMinute)}
	}
	if verdict.Valid {
		if d, err := finalWrites(ctx, cl, 10*time.Second); err != nil {
			verdict = Verdict{Reason: fmt.Sprintf("no successful write in every range within 10s of healing: %v", err)}
		} else {
			res.FinalOK = d
		}
	}
	if verdict.Valid {
		for _, n := range c.Nodes {
			if !n.Running() && !nem.retired[n] {
				verdict = Verdict{Reason: fmt.Sprintf("node %s is not running after healing (see %s)", n.Name, n.LogPath)}
			}
		}
	}
	if verdict.Valid {
		if err := waitSettled(ctx, cl, c, nem.retired, 90*time.Second); err != nil {
			verdict = Verdict{Reason: fmt.Sprintf("cluster not settled 90s after healing: %v", err)}
		}
	}
	if verdict.Valid {
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		counts, err := c.CompareReplicas(cctx)
		cancel()
		for _, n := range counts {
			res.Replicas += n
		}
		if err != nil {
			verdict = Verdict{Reason: err.Error()}
		}
	}
	if verdict.Valid {
		verdict = w.check(ctx, ops, cl, dir)
	}
	res.Verdict = verdict
	if err := WriteJSONL(filepath.Join(dir, "history.jsonl"), ops); err != nil {
		return nil, err
	}
	sum := Summary{Workload: cfg.Workload, Nemesis: cfg.Nemesis, Seed: cfg.Seed, Duration: cfg.Duration.String(),
		Result: verdict.String(), Ops: res.Ops, FinalMs: res.FinalOK.Milliseconds(), Replicas: res.Replicas, Notes: res.Notes}
	b, _ := json.MarshalIndent(sum, "", "  ")
	os.WriteFile(filepath.Join(dir, "summary.json"), append(b, '\n'), 0o644)
	os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(verdict.String()+"\n"), 0o644)
	cfg.Logf("%s/%s: %s (%v ops, final write %v after healing, %d replicas compared) in %s", cfg.Workload, cfg.Nemesis, verdict, res.Ops, res.FinalOK.Round(time.Millisecond), res.Replicas, dir)
	_ = healed
	return res, nil
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// minOKPerMinute is the floor of successful client operations a minute
// below which a run counts as vacuous: the 10 clients of a run on this
// 2-core machine do several thousand a minute under faults.
const minOKPerMinute = 600

// waitSettled waits until every group has a leader and exactly three
// voters, no learners, no damaged replica, every member a node of c, and
// nothing left to move:
// a group short of a voter, or with a member it should not have, after
// healing is a failed run.
func waitSettled(ctx context.Context, cl *client.Client, c *Cluster, retired map[*Node]bool, timeout time.Duration) error {
	known := map[string]bool{}
	for _, n := range c.Nodes {
		known[n.Name] = !retired[n]
	}
	return waitGroups(ctx, cl, timeout, func(g client.GroupInfo) bool {
		members := append(append([]string{}, g.Voters...), g.Nonvoters...)
		unknown := slices.DeleteFunc(members, func(m string) bool { return known[m] })
		return g.Leader != "" && len(g.Voters) == 3 && len(g.Nonvoters) == 0 && len(g.Desired) == 0 && len(unknown) == 0 && len(g.Damaged) == 0
	})
}

// waitHealthy waits until every group has a leader and its full voters.
func waitHealthy(ctx context.Context, cl *client.Client, timeout time.Duration) error {
	return waitGroups(ctx, cl, timeout, func(g client.GroupInfo) bool { return g.Leader != "" && len(g.Voters) >= 3 })
}

// waitGroups waits until the cluster view lists at least five groups and ok
// holds for each, and returns the groups it did not hold for at the end.
func waitGroups(ctx context.Context, cl *client.Client, timeout time.Duration, ok func(client.GroupInfo) bool) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cl.Cluster(cctx)
		cancel()
		if err == nil {
			var bad []string
			for _, g := range info.Groups {
				if !ok(g) {
					bad = append(bad, fmt.Sprintf("%s(leader %q, voters %v, learners %v, desired %v)", g.ID, g.Leader, g.Voters, g.Nonvoters, g.Desired))
				}
			}
			if len(bad) == 0 && len(info.Groups) >= 5 {
				return nil
			}
			err = errors.New(strings.Join(bad, " "))
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return last
}

// finalWrites writes once to every shard range (one uid per tenth of the
// shards) and returns how long until all succeeded.
func finalWrites(ctx context.Context, cl *client.Client, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for s := 0; s < 100; s += 10 {
		for {
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := cl.Put(wctx, uint64(9_000_000+s), "final", []byte("x"))
			cancel()
			if err == nil {
				break
			}
			if time.Since(start) > limit {
				return 0, fmt.Errorf("shard %02d: %w", s, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return time.Since(start), nil
}
