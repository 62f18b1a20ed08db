package jepsen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cpuTicks returns the user+system CPU time of process pid in clock ticks
// (1/100 s on Linux).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, nil
}

func procStatus(pid int, key string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// idleWindow is how long TestMeasureIdle measures each configuration:
// LDCD_IDLE_WINDOW (a Go duration), 60 s by default. Windows of 20 s moved
// by a fifth from run to run on this machine.
func idleWindow(t *testing.T) time.Duration {
	v := os.Getenv("LDCD_IDLE_WINDOW")
	if v == "" {
		return time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		t.Fatalf("LDCD_IDLE_WINDOW=%q: want a duration of a second or more", v)
	}
	return d
}

// TestMeasureIdle reports the idle cost of a node hosting 101 groups (100
// one-shard ranges and the global group) in a 3-node cluster: CPU over a
// minute (idleWindow), RSS, goroutines, file descriptors. Each
// configuration runs in turn, so the figures of one run compare them.
// `make measure-idle`.
func TestMeasureIdle(t *testing.T) {
	if os.Getenv("LDCD_MEASURE") == "" {
		t.Skip("set LDCD_MEASURE=1 (make measure-idle) to run the idle measurement")
	}
	topo := filepath.Join(t.TempDir(), "topology.yaml")
	var b strings.Builder
	b.WriteString("zones:\n  - {name: z1, city: c1, kind: rzone}\nranges:\n")
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "  - {shards: %02d-%02d, owner: z1}\n", i, i)
	}
	writeFile(t, topo, b.String())
	configs := []struct {
		name string
		args []string
	}{
		{"one RPC per heartbeat (before batching)", []string{"--no-heartbeat-batching"}},
		{"leaders ask for heartbeats at the 1s timeout (--leader-heartbeat-timeout 1s)", []string{"--leader-heartbeat-timeout", "1s"}},
		{"defaults (1s heartbeat, 2.5s while leading, 500ms commit timeout, batched heartbeats)", nil},
		{"2s heartbeat and election timeouts", []string{"--heartbeat-timeout", "2s", "--election-timeout", "2s"}},
		{"one connection per node pair (--shared-connections)", []string{"--shared-connections"}},
	}
	for _, cfg := range configs {
		dir, err := os.MkdirTemp("", "ldcd-idle-")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o755)
		c := &Cluster{Bin: bin, Dir: dir, Args: append([]string{"--log-level", "warn", "--topology", topo}, cfg.args...)}
		if err := c.StartNodes(3, "z1", "c1"); err != nil {
			t.Fatal(err)
		}
		cl := newClient(t, c.Nodes...)
		waitFor(t, "101 groups with 3 voters and a leader", 3*time.Minute, func() (bool, string) {
			info, err := cl.Cluster(context.Background())
			if err != nil {
				return false, err.Error()
			}
			ready := 0
			for _, g := range info.Groups {
				if len(g.Voters) == 3 && len(g.Nonvoters) == 0 && g.Leader != "" {
					ready++
				}
			}
			return ready == 101, fmt.Sprintf("%d of %d groups ready", ready, len(info.Groups))
		})
		// The placement driver spreads the leaders, one move a second: wait
		// for it, so that no transfer falls in the window.
		waitFor(t, "leaders spread over the nodes", 3*time.Minute, func() (bool, string) {
			info, err := cl.Cluster(context.Background())
			if err != nil {
				return false, err.Error()
			}
			leaders := map[string]int{}
			for _, g := range info.Groups {
				leaders[g.Leader]++
			}
			lo, hi := len(info.Groups), 0
			for _, n := range c.Nodes {
				lo, hi = min(lo, leaders[n.Name]), max(hi, leaders[n.Name])
			}
			return hi-lo <= 1, fmt.Sprintf("leaders %v", leaders)
		})
		time.Sleep(15 * time.Second)
		window := idleWindow(t)
		before := make([]int64, len(c.Nodes))
		for i, n := range c.Nodes {
			before[i], _ = cpuTicks(n.PID())
		}
		time.Sleep(window)
		for i, n := range c.Nodes {
			after, _ := cpuTicks(n.PID())
			fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", n.PID()))
			m, _ := scrape(n)
			t.Logf("FIGURES idle, %s: %s cpu %.1f%% of one core, rss %s, %v goroutines, %d fds",
				cfg.name, n.Name, float64(after-before[i])/window.Seconds(), procStatus(n.PID(), "VmRSS"), m["go_goroutines"], len(fds))
		}
		c.Close()
		os.RemoveAll(dir)
	}
}
