package jepsen

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ldcd/ldcd/bench"
)

// TestBenchCLI runs `ldcd bench` against a real node: every workload answers
// with a JSON report whose counts add up, the preload makes reads find the
// values, and bad flags are refused with a message.
func TestBenchCLI(t *testing.T) {
	c := startCluster(t, 1)
	n := c.Nodes[0]
	cl := newClient(t, n)
	waitReplicated(t, cl, 1, c.Nodes, 30*time.Second)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"bench", "--endpoints", n.HTTP}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, w := range bench.WorkloadNames {
		out, err := run("--workload", w, "--clients", "4", "--requests", "120", "--users", "50", "--json", "--quiet")
		if err != nil {
			t.Fatalf("bench %s: %v\n%s", w, err, out)
		}
		var res bench.Result
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("bench %s: output is not JSON: %v\n%s", w, err, out)
		}
		var sum int64
		for _, s := range res.Ops {
			sum += s.Count
		}
		if res.Total.Count != 120 || sum != 120 || res.Total.Errors != 0 || res.Total.P50Us <= 0 || res.Total.P99Us < res.Total.P50Us {
			t.Fatalf("bench %s: want 120 answered requests and ordered percentiles, got %+v", w, res.Total)
		}
	}
	// The preload wrote every user's key, so reads found values.
	v, err := cl.Get(context.Background(), 49, bench.Key)
	if err != nil || len(v.Data) != 256 {
		t.Fatalf("preloaded key: %v %v", v, err)
	}
	// What a run cost, read from the node's /metrics: 2 s of 8 writers is
	// far more than the CPU clock's 10 ms tick, and each entry carries at
	// most 8 writes.
	out, err := run("--workload", "put", "--clients", "8", "--duration", "2s", "--json", "--quiet")
	var res bench.Result
	if err != nil || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("bench with costs: %v\n%s", err, out)
	}
	if c := res.Costs; c == nil || c.Nodes != 1 || c.ServerCPUUsPerOp <= 0 || c.ClientCPUUsPerOp <= 0 ||
		c.Entries < res.Total.Count/8 || c.WritesPerEntry <= 0 || c.WritesPerEntry > 8 {
		t.Fatalf("costs of %d puts by 8 writers: %+v (%s)", res.Total.Count, res.Costs, res.CostsError)
	}
	if out, err := run("--workload", "get", "--clients", "2", "--requests", "50", "--json", "--quiet", "--costs=false"); err != nil || strings.Contains(out, "costs") {
		t.Fatalf("--costs=false: want no costs, got err=%v\n%s", err, out)
	}
	// The open loop and the table.
	out, err = run("--workload", "put", "--clients", "8", "--rate", "200", "--duration", "1s", "--dist", "zipfian")
	if err != nil || !strings.Contains(out, "200/s") || !strings.Contains(out, "p99") || !strings.Contains(out, "server cpu/op") {
		t.Fatalf("open loop: err=%v\n%s", err, out)
	}
	for _, bad := range [][]string{{"--workload", "scan"}, {"--dist", "pareto"}, {"--rate", "-5"}} {
		out, err := run(append(bad, "--requests", "1")...)
		if err == nil || !strings.Contains(out, "bench:") {
			t.Errorf("bench %v: want a refusal, got err=%v %q", bad, err, out)
		}
	}
}
