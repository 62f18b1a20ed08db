package jepsen

import (
	"context"
	"testing"

	"github.com/ldcd/ldcd/bench"
)

// BenchmarkPut64Clients measures put throughput and latency of a 3-node
// cluster on loopback with 64 concurrent clients, 256-byte values, keys
// spread over all 100 shards. Run: go test -run '^$' -bench Put64 ./jepsen
func BenchmarkPut64Clients(b *testing.B) {
	c := &Cluster{Bin: bin, Dir: b.TempDir(), Args: []string{"--log-level", "warn", "--pprof"}}
	b.Cleanup(c.Close)
	if err := c.StartNodes(3, "z1", "c1"); err != nil {
		b.Fatal(err)
	}
	cl := benchClient(b, c.Nodes...)
	waitBench(b, func() bool {
		info, err := cl.Cluster(context.Background())
		if err != nil || len(info.Groups) != 11 {
			return false
		}
		for _, g := range info.Groups {
			if len(g.Voters) != 3 || len(g.Nonvoters) != 0 || g.Leader == "" {
				return false
			}
		}
		return true
	})
	// Warm the routing cache and the connections.
	if _, err := bench.Run(context.Background(), bench.LDCD{C: cl}, bench.Config{Clients: 16, Requests: 100, Users: 100}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	res, err := bench.Run(context.Background(), bench.LDCD{C: cl}, bench.Config{Workload: "put", Clients: 64, Requests: int64(b.N), Users: 1_000_000})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	reportBench(b, res, "puts/s")

	// Idle footprint of one node hosting the 11 groups.
	var goroutines, rss float64
	if m, err := scrape(c.Nodes[1]); err == nil {
		goroutines, rss = m["go_goroutines"], m["process_resident_memory_bytes"]
	}
	b.ReportMetric(goroutines, "goroutines")
	b.ReportMetric(rss/(1<<20), "rss-MiB")
}

// reportBench reports a bench result as benchmark metrics.
func reportBench(b *testing.B, res *bench.Result, unit string) {
	if res.Total.Count == 0 {
		b.Fatal("no request succeeded")
	}
	b.ReportMetric(res.Total.Throughput, unit)
	b.ReportMetric(float64(res.Total.P50Us)/1000, "p50-ms")
	b.ReportMetric(float64(res.Total.P99Us)/1000, "p99-ms")
	b.ReportMetric(float64(res.Total.Errors), "errors")
	b.ReportMetric(0, "ns/op")
}
