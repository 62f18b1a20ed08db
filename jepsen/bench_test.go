package jepsen

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPut64Clients measures put throughput and latency of a 3-node
// cluster on loopback with 64 concurrent clients, 256-byte values, keys
// spread over all 100 shards. Run: go test -run '^$' -bench Put64 ./jepsen
func BenchmarkPut64Clients(b *testing.B) {
	c := &Cluster{Bin: bin, Dir: b.TempDir(), Args: []string{"--log-level", "warn", "--pprof"}}
	b.Cleanup(c.Close)
	for i := 1; i <= 3; i++ {
		n, err := c.NewNode(fmt.Sprintf("n%d", i), "z1", "c1")
		if err != nil {
			b.Fatal(err)
		}
		var join []string
		if i > 1 {
			join = []string{c.Nodes[0].Gossip}
		}
		if err := c.Start(n, join...); err != nil {
			b.Fatal(err)
		}
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
	value := make([]byte, 256)
	const clients = 64
	// Warm the routing cache and the connections.
	for s := 0; s < 100; s++ {
		if _, err := cl.Put(context.Background(), uint64(s), "warm", value); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([][]time.Duration, clients)
	var next atomic.Int64
	var errs atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				t0 := time.Now()
				_, err := cl.Put(context.Background(), uint64(i*7919%1_000_000), fmt.Sprint("k", i%1000), value)
				if err != nil {
					errs.Add(1)
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) == 0 {
		b.Fatal("no successful puts")
	}
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "puts/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(errs.Load()), "errors")
	b.ReportMetric(0, "ns/op")

	// Idle footprint of one node hosting the 11 groups.
	var goroutines, rss float64
	if m, err := scrape(c.Nodes[1]); err == nil {
		goroutines, rss = m["go_goroutines"], m["process_resident_memory_bytes"]
	}
	b.ReportMetric(goroutines, "goroutines")
	b.ReportMetric(rss/(1<<20), "rss-MiB")
}
