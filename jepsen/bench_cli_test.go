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
	// The open loop and the table.
	out, err := run("--workload", "put", "--clients", "8", "--rate", "200", "--duration", "1s", "--dist", "zipfian")
	if err != nil || !strings.Contains(out, "200/s") || !strings.Contains(out, "p99") {
		t.Fatalf("open loop: err=%v\n%s", err, out)
	}
	for _, bad := range [][]string{{"--workload", "scan"}, {"--dist", "pareto"}, {"--rate", "-5"}} {
		out, err := run(append(bad, "--requests", "1")...)
		if err == nil || !strings.Contains(out, "bench:") {
			t.Errorf("bench %v: want a refusal, got err=%v %q", bad, err, out)
		}
	}
}
