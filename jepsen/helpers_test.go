package jepsen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

var bin, binDir string

var failpointOnce struct {
	sync.Once
	bin string
	err error
}

// failpointBin builds (once) an ldcd with failpoints compiled in, which
// LDCD_FAILPOINTS in a node's environment turns on.
func failpointBin(t *testing.T) string {
	t.Helper()
	failpointOnce.Do(func() {
		dir := filepath.Join(binDir, "failpoints")
		if failpointOnce.err = os.MkdirAll(dir, 0o755); failpointOnce.err == nil {
			failpointOnce.bin, failpointOnce.err = Build(dir, "-tags", "failpoints")
		}
	})
	if failpointOnce.err != nil {
		t.Fatal(failpointOnce.err)
	}
	return failpointOnce.bin
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ldcd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // node processes may run as other users (partitions)
	binDir = dir
	bin, err = Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fastArgs make failure detection quick on loopback.
var fastArgs = []string{"--heartbeat-timeout", "500ms", "--election-timeout", "500ms", "--log-level", "debug"}

// startCluster starts n nodes in one zone; the first bootstraps, the others
// join it.
func startCluster(t *testing.T, n int, args ...string) *Cluster {
	t.Helper()
	c := &Cluster{Bin: bin, Dir: t.TempDir(), Args: append(append([]string{}, fastArgs...), args...)}
	t.Cleanup(func() {
		c.Close()
		checkRaces(t, c)
		if t.Failed() {
			for _, node := range c.Nodes {
				dumpLog(t, node, 40)
			}
		}
	})
	if err := c.StartNodes(n, "z1", "c1"); err != nil {
		t.Fatal(err)
	}
	return c
}

func dumpLog(t *testing.T, n *Node, lines int) {
	f, err := os.Open(n.LogPath)
	if err != nil {
		return
	}
	defer f.Close()
	var all []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), "level=DEBUG") {
			all = append(all, sc.Text())
		}
	}
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	t.Logf("--- last %d lines of %s ---\n%s", len(all), n.Name, strings.Join(all, "\n"))
}

func newClient(t *testing.T, nodes ...*Node) *client.Client {
	t.Helper()
	var eps []string
	for _, n := range nodes {
		eps = append(eps, n.HTTP)
	}
	cl, err := client.New(client.Config{Endpoints: eps, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		if state != "" {
			last = state
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReplicated waits until every group has a leader and exactly `voters`
// voters, all on the given nodes, and no nonvoters.
func waitReplicated(t *testing.T, cl *client.Client, voters int, on []*Node, timeout time.Duration) *client.ClusterInfo {
	t.Helper()
	allowed := map[string]bool{}
	for _, n := range on {
		allowed[n.Name] = true
	}
	var info *client.ClusterInfo
	waitFor(t, fmt.Sprintf("every group to have %d voters", voters), timeout, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		info, err = cl.Cluster(ctx)
		if err != nil {
			return false, err.Error()
		}
		if len(info.Groups) != 11 {
			return false, fmt.Sprintf("%d groups", len(info.Groups))
		}
		for _, g := range info.Groups {
			if g.Leader == "" || len(g.Voters) != voters || len(g.Nonvoters) != 0 || len(g.Desired) != 0 {
				return false, fmt.Sprintf("%s: leader %q voters %v nonvoters %v desired %v", g.ID, g.Leader, g.Voters, g.Nonvoters, g.Desired)
			}
			for _, v := range g.Voters {
				if !allowed[v] {
					return false, fmt.Sprintf("%s has a voter on %s", g.ID, v)
				}
			}
		}
		return true, ""
	})
	return info
}

// uidForRange returns a uid whose shard is lo (one uid per range of the
// default topology when lo steps by 10).
func uidForShard(shard, n int) uint64 { return uint64(n*100 + shard) }

func dumpRace(t *testing.T, name, log string) {
	i := strings.Index(log, "WARNING: DATA RACE")
	if i < 0 {
		return
	}
	end := min(len(log), i+6000)
	t.Logf("--- race in %s ---\n%s", name, log[i:end])
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkRaces fails the test if any node's log reports a data race.
func checkRaces(t *testing.T, c *Cluster) {
	for _, node := range c.Nodes {
		if b, err := os.ReadFile(node.LogPath); err == nil && strings.Contains(string(b), "DATA RACE") {
			t.Errorf("%s reported a data race", node.Name)
			dumpRace(t, node.Name, string(b))
		}
	}
}

// loadOps bounds a load loop in count, as the stop channel bounds it in
// time.
const loadOps = 1_000_000

// startLoad runs fn(w, i) on workers goroutines, i = 0, 1, ..., until stop
// is closed, fn returns false, or maxOps iterations. wait waits for them.
func startLoad(workers, maxOps int, stop <-chan struct{}, fn func(w, i int) bool) (wait func()) {
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < maxOps; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if !fn(w, i) {
					return
				}
			}
		}()
	}
	return wg.Wait
}

// writeAcked starts workers that put unique keys ("w<w>-<i>") to the users
// uidOf names, each put bounded by timeout, recording acknowledged writes
// in a and calling onAck (if set) after each. An error that is neither
// indeterminate nor unavailable fails the test and stops that worker.
func writeAcked(t *testing.T, ctx context.Context, cl *client.Client, a *acked, workers, maxOps int, timeout time.Duration, stop <-chan struct{},
	uidOf func(w, i int) uint64, onAck func(w int, uid uint64)) (wait func()) {
	return startLoad(workers, maxOps, stop, func(w, i int) bool {
		uid := uidOf(w, i)
		key := fmt.Sprintf("w%d-%d", w, i)
		wctx, cancel := context.WithTimeout(ctx, timeout)
		v, err := cl.Put(wctx, uid, key, []byte(key))
		cancel()
		switch {
		case err == nil:
			a.set(ackedValue{uid: uid, key: key, value: key, version: v})
			if onAck != nil {
				onAck(w, uid)
			}
		case !errors.Is(err, client.ErrIndeterminate) && !errors.Is(err, client.ErrUnavailable):
			t.Errorf("write: %v", err)
			return false
		}
		return true
	})
}

// waitReady waits until n's HTTP API answers /healthz with 200: a node that
// restarts with data replays its log before it listens.
func waitReady(t *testing.T, n *Node, timeout time.Duration) {
	t.Helper()
	waitFor(t, n.Name+" to be ready", timeout, func() (bool, string) {
		if !n.Running() {
			return false, n.Name + " is not running"
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var body map[string]any
		if err := GetJSON(ctx, n, "/healthz", &body); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// count returns how many distinct keys have been acknowledged.
func (a *acked) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.want)
}

// waitMoreAcked waits until at least more keys beyond those acknowledged
// now are acknowledged: the writers are going (instead of a fixed sleep).
func waitMoreAcked(t *testing.T, a *acked, more int, timeout time.Duration) {
	t.Helper()
	from := a.count()
	waitFor(t, fmt.Sprintf("%d more acknowledged writes", more), timeout, func() (bool, string) {
		n := a.count()
		return n >= from+more, fmt.Sprintf("%d acknowledged, %d before", n, from)
	})
}

// metricsText returns n's /metrics.
func metricsText(t *testing.T, n *Node) string {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricLine returns the first line of n's /metrics that starts with prefix.
func metricLine(t *testing.T, n *Node, prefix string) string {
	t.Helper()
	for _, line := range strings.Split(metricsText(t, n), "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}

// metric returns the value of an unlabelled metric on n's /metrics.
func metric(t *testing.T, n *Node, name string) string {
	t.Helper()
	v, _ := strings.CutPrefix(metricLine(t, n, name+" "), name+" ")
	return strings.TrimSpace(v)
}

// startWriters runs writeAcked's workers until the returned stop is called
// (at most once takes effect; deferring it as well is safe).
func startWriters(t *testing.T, ctx context.Context, cl *client.Client, a *acked, workers int, timeout time.Duration, uidOf func(w, i int) uint64) (stop func()) {
	ch := make(chan struct{})
	wait := writeAcked(t, ctx, cl, a, workers, loadOps, timeout, ch, uidOf, nil)
	var once sync.Once
	return func() { once.Do(func() { close(ch); wait() }) }
}

// verifyAll reads every acknowledged write back through cl and requires
// every running replica of every group to be identical; it returns how many
// replicas of each group it compared.
func verifyAll(t *testing.T, ctx context.Context, c *Cluster, cl *client.Client, a *acked) map[string]int {
	t.Helper()
	t.Logf("%d acknowledged writes", a.count())
	a.verify(t, cl)
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	counts, err := c.CompareReplicas(cctx)
	if err != nil {
		t.Fatal(err)
	}
	return counts
}

// waitWritable waits until a put to uid through cl succeeds, and records it
// as acknowledged.
func waitWritable(t *testing.T, ctx context.Context, cl *client.Client, a *acked, uid uint64, what string, timeout time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("uid %d writable %s", uid, what), timeout, func() (bool, string) {
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		defer wcancel()
		v, err := cl.Put(wctx, uid, "probe", []byte("p"))
		if err != nil {
			return false, err.Error()
		}
		a.set(ackedValue{uid: uid, key: "probe", value: "p", version: v})
		return true, ""
	})
}
