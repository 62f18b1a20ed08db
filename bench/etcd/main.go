// Command etcd-compare runs the same workloads against a 3-member etcd and a
// 3-node ldcd on loopback, one after the other on the same machine, and
// prints the figures of both and their ratios. `make bench-etcd` runs it.
//
// With --interleave both clusters stay up and each workload runs on both
// back to back, the order alternating, for --rounds rounds; it prints each
// round's ratios and their median, so that the machine's drift over the
// minutes of a comparison hits both targets alike.
//
// It is a module of its own so that the main module does not depend on
// etcd's client.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ldcd/ldcd/bench"
	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/jepsen"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type run struct {
	workload string
	clients  int
	rate     float64
}

func (r run) name() string {
	s := fmt.Sprintf("%s c=%d", r.workload, r.clients)
	if r.rate > 0 {
		s += fmt.Sprintf(" rate=%.0f", r.rate)
	}
	return s
}

// parseRuns reads "put:1,put:64,get:64,put:64@2000" (workload:clients, and
// @rate for an open loop).
func parseRuns(s string) ([]run, error) {
	var out []run
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		var r run
		spec, rate, hasRate := strings.Cut(part, "@")
		w, c, ok := strings.Cut(spec, ":")
		if !ok {
			return nil, fmt.Errorf("run %q: want workload:clients[@rate]", part)
		}
		if _, known := bench.Workloads[w]; !known {
			return nil, fmt.Errorf("run %q: unknown workload %q", part, w)
		}
		n, err := strconv.Atoi(c)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("run %q: bad client count", part)
		}
		r.workload, r.clients = w, n
		if hasRate {
			if r.rate, err = strconv.ParseFloat(rate, 64); err != nil || r.rate <= 0 {
				return nil, fmt.Errorf("run %q: bad rate", part)
			}
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no runs")
	}
	return out, nil
}

func main() {
	var (
		ldcdBin   = flag.String("ldcd", "ldcd", "the ldcd binary")
		etcdBin   = flag.String("etcd", "etcd", "the etcd binary")
		runsFlag  = flag.String("runs", "put:1,put:64,put:256,get:64,stale-get:64", "workload:clients[@rate], comma separated")
		duration  = flag.Duration("duration", 10*time.Second, "length of each run")
		users     = flag.Int("users", 10000, "distinct userIds")
		valueSize = flag.Int("value-size", 256, "bytes per value")
		dist      = flag.String("dist", "uniform", "uniform or zipfian")
		conns     = flag.Int("etcd-conns", 8, "etcd clients (gRPC connections) shared by the workers")
		jsonOut   = flag.String("json", "", "also write every result to this file as JSON")
		dir       = flag.String("dir", "", "working directory (default: a new temporary one, removed at the end)")
		only      = flag.String("only", "", "run only this target: ldcd or etcd")
		noFrames  = flag.Bool("ldcd-no-frames", false, "ldcd's client sends plain HTTP/1.1 instead of framed requests")
		interl    = flag.Bool("interleave", false, "keep both clusters up and run each workload on both back to back, alternating which goes first")
		rounds    = flag.Int("rounds", 1, "with --interleave: repeat the runs this many times and print the median ratio")
	)
	flag.Parse()
	runs, err := parseRuns(*runsFlag)
	if err != nil {
		fail(err)
	}
	switch {
	case *rounds < 1:
		fail(fmt.Errorf("--rounds %d: want at least 1", *rounds))
	case *rounds > 1 && !*interl:
		fail(fmt.Errorf("--rounds needs --interleave"))
	case *interl && *only != "":
		fail(fmt.Errorf("--interleave runs both targets; it does not go with --only"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dir == "" {
		d, err := os.MkdirTemp("", "ldcd-bench-")
		if err != nil {
			fail(err)
		}
		// World-traversable: jepsen's process harness may run nodes as
		// other users.
		os.Chmod(d, 0o755)
		defer os.RemoveAll(d)
		*dir = d
	}
	base := bench.Config{Duration: *duration, Users: *users, ValueSize: *valueSize, Dist: *dist, Progress: os.Stderr}
	start := func(target string) (bench.Target, func(), error) {
		if target == "etcd" {
			return startEtcd(ctx, *etcdBin, filepath.Join(*dir, "etcd"), *conns)
		}
		return startLDCD(ctx, *ldcdBin, filepath.Join(*dir, "ldcd"), *noFrames)
	}
	if *interl {
		interleave(ctx, start, base, runs, *rounds, *jsonOut)
		return
	}
	results := map[string][]*bench.Result{}
	for _, target := range []string{"etcd", "ldcd"} {
		if *only != "" && *only != target {
			continue
		}
		t, closeFn, err := start(target)
		if err != nil {
			fail(err)
		}
		loaded := map[string]bool{}
		for _, r := range runs {
			fmt.Fprintf(os.Stderr, "== %s %s\n", target, r.name())
			res, err := runOnce(ctx, t, target, base, r, loaded)
			if err != nil {
				closeFn()
				fail(err)
			}
			results[target] = append(results[target], res)
		}
		closeFn()
	}
	fmt.Println()
	var all []*bench.Result
	for _, target := range []string{"ldcd", "etcd"} {
		all = append(all, results[target]...)
	}
	bench.WriteTable(os.Stdout, all...)
	if len(results["ldcd"]) == len(runs) && len(results["etcd"]) == len(runs) {
		var pairs []bench.Pair
		for i, r := range runs {
			pairs = append(pairs, bench.Pair{Name: r.name(), A: results["ldcd"][i], B: results["etcd"][i]})
		}
		fmt.Println()
		bench.WriteComparison(os.Stdout, "ldcd", "etcd", pairs)
		if *jsonOut != "" {
			b, _ := json.MarshalIndent(pairs, "", "  ")
			if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
				fail(err)
			}
		}
	}
}

// interleave runs each workload on both targets back to back, for rounds
// rounds, the order alternating from one run to the next and between
// rounds; both clusters stay up throughout.
func interleave(ctx context.Context, start func(string) (bench.Target, func(), error), base bench.Config, runs []run, rounds int, jsonOut string) {
	targets := map[string]bench.Target{}
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, name := range []string{"etcd", "ldcd"} {
		t, closeFn, err := start(name)
		if err != nil {
			closeAll()
			fail(err)
		}
		targets[name] = t
		closers = append(closers, closeFn)
	}
	loaded := map[string]bool{}
	var all []*bench.Result
	var byRound [][]bench.Pair
	for round := 1; round <= rounds; round++ {
		var pairs []bench.Pair
		for i, r := range runs {
			order := []string{"etcd", "ldcd"}
			if (round+i)%2 == 0 {
				order = []string{"ldcd", "etcd"}
			}
			got := map[string]*bench.Result{}
			for _, name := range order {
				fmt.Fprintf(os.Stderr, "== round %d/%d: %s %s\n", round, rounds, name, r.name())
				res, err := runOnce(ctx, targets[name], name, base, r, loaded)
				if err != nil {
					closeAll()
					fail(err)
				}
				got[name] = res
			}
			all = append(all, got["ldcd"], got["etcd"])
			pairs = append(pairs, bench.Pair{Name: r.name(), A: got["ldcd"], B: got["etcd"]})
		}
		byRound = append(byRound, pairs)
	}
	closeAll()
	fmt.Println()
	bench.WriteTable(os.Stdout, all...)
	for i, pairs := range byRound {
		fmt.Printf("\nround %d\n", i+1)
		bench.WriteComparison(os.Stdout, "ldcd", "etcd", pairs)
	}
	fmt.Println()
	bench.WriteRatioSummary(os.Stdout, "ldcd", "etcd", byRound)
	if jsonOut != "" {
		b, _ := json.MarshalIndent(byRound, "", "  ")
		if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
			fail(err)
		}
	}
}

// runOnce runs r against target t (named name), preloading the keys before
// the target's first run that reads (loaded records which targets are).
func runOnce(ctx context.Context, t bench.Target, name string, base bench.Config, r run, loaded map[string]bool) (*bench.Result, error) {
	cfg := base
	cfg.Workload, cfg.Clients, cfg.Rate = r.workload, r.clients, r.rate
	cfg.Preload = !loaded[name] && r.workload != "put" && r.workload != "txn"
	loaded[name] = loaded[name] || cfg.Preload
	switch t := t.(type) {
	case *etcdTarget:
		cfg.Meter = t.meter
	case bench.LDCD:
		cfg.Meter = t.Meter(&http.Client{Timeout: 5 * time.Second})
	}
	res, err := bench.Run(ctx, t, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", name, r.name(), err)
	}
	res.Target = name
	return res, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "etcd-compare:", err)
	os.Exit(1)
}

// startLDCD starts a 3-node ldcd cluster (one zone, the default topology)
// and waits until every group has three voters and a leader.
func startLDCD(ctx context.Context, bin, dir string, noFrames bool) (bench.Target, func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	c := &jepsen.Cluster{Bin: bin, Dir: dir, Args: []string{"--log-level", "warn"}}
	if err := c.StartNodes(3, "z1", "c1"); err != nil {
		c.Close()
		return nil, nil, err
	}
	var eps []string
	for _, n := range c.Nodes {
		eps = append(eps, n.HTTP)
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1024,
	}}
	cl, err := client.New(client.Config{Endpoints: eps, HTTPClient: hc, NoFrames: noFrames})
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		info, err := cl.Cluster(ctx)
		ready := err == nil && len(info.Groups) > 0
		if ready {
			for _, g := range info.Groups {
				ready = ready && len(g.Voters) == 3 && len(g.Nonvoters) == 0 && g.Leader != ""
			}
		}
		if ready {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.Close()
			return nil, nil, fmt.Errorf("ldcd cluster not ready after 60s (last error: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return bench.LDCD{C: cl}, func() { cl.Close(); c.Close() }, nil
}

// etcdTarget spreads requests over a few etcd clients.
type etcdTarget struct {
	meter   bench.Meter
	clients []*clientv3.Client
}

func (e *etcdTarget) pick(uid uint64) *clientv3.Client { return e.clients[uid%uint64(len(e.clients))] }

func etcdKey(uid uint64, key string) string { return "u/" + strconv.FormatUint(uid, 10) + "/" + key }

func (e *etcdTarget) Put(ctx context.Context, uid uint64, key string, value []byte) error {
	_, err := e.pick(uid).Put(ctx, etcdKey(uid, key), string(value))
	return err
}

func (e *etcdTarget) Get(ctx context.Context, uid uint64, key string, stale bool) error {
	var opts []clientv3.OpOption
	if stale {
		opts = append(opts, clientv3.WithSerializable())
	}
	_, err := e.pick(uid).Get(ctx, etcdKey(uid, key), opts...)
	return err
}

func (e *etcdTarget) Txn(ctx context.Context, uid uint64, keys []string, value []byte) error {
	var ops []clientv3.Op
	for _, k := range keys {
		ops = append(ops, clientv3.OpPut(etcdKey(uid, k), string(value)))
	}
	_, err := e.pick(uid).Txn(ctx).Then(ops...).Commit()
	return err
}

// startEtcd starts a 3-member etcd on loopback (fsync on, its defaults).
func startEtcd(ctx context.Context, bin, dir string, conns int) (bench.Target, func(), error) {
	if _, err := exec.LookPath(bin); err != nil {
		return nil, nil, fmt.Errorf("etcd not found (%v): `make bench-etcd` installs Debian's etcd-server", err)
	}
	ports, err := jepsen.FreePorts(6)
	if err != nil {
		return nil, nil, err
	}
	var initial []string
	for i := 0; i < 3; i++ {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i+1, ports[3+i]))
	}
	var cmds []*exec.Cmd
	var eps []string
	stopAll := func() {
		for _, c := range cmds {
			c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range cmds {
			done := make(chan struct{})
			go func() { c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				c.Process.Kill()
				<-done
			}
		}
	}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("m%d", i+1)
		cu := fmt.Sprintf("http://127.0.0.1:%d", ports[i])
		pu := fmt.Sprintf("http://127.0.0.1:%d", ports[3+i])
		data := filepath.Join(dir, name)
		if err := os.MkdirAll(data, 0o700); err != nil {
			stopAll()
			return nil, nil, err
		}
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		cmd := exec.Command(bin, "--name", name, "--data-dir", data,
			"--listen-client-urls", cu, "--advertise-client-urls", cu,
			"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "ldcd-bench", "--logger", "zap", "--log-level", "warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			stopAll()
			return nil, nil, err
		}
		logf.Close()
		cmds = append(cmds, cmd)
		eps = append(eps, cu)
	}
	// No Applied metric: etcd's counts proposals, one per write, and its
	// raft writes many of them with one fsync, so entries say nothing of
	// batching there.
	t := &etcdTarget{meter: &bench.MetricsMeter{
		URLs: func(context.Context) ([]string, error) {
			var urls []string
			for _, e := range eps {
				urls = append(urls, e+"/metrics")
			}
			return urls, nil
		},
	}}
	closeAll := func() {
		for _, c := range t.clients {
			c.Close()
		}
		stopAll()
	}
	for i := 0; i < conns; i++ {
		c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		t.clients = append(t.clients, c)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := t.clients[0].Put(cctx, "ready", "1")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			closeAll()
			return nil, nil, fmt.Errorf("etcd not ready after 60s: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return t, closeAll, nil
}
