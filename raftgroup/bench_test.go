package raftgroup

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ldcd/ldcd/store"
)

// BenchmarkApply measures the write path of three hosts in one process
// (real Raft over TCP, real files): 10 groups, 64 concurrent proposers at
// their leaders, 256-byte values. Each sub-benchmark changes one thing, so
// `go test -run '^$' -bench Apply ./raftgroup` prints the ratios of one
// run side by side.
func BenchmarkApply(b *testing.B) {
	variants := []struct {
		name string
		tune func(*Config)
	}{
		{"log=bolt,state=sync", func(c *Config) { c.LogStore = LogBolt; c.SyncState = true }},
		{"log=wal,state=sync", func(c *Config) { c.LogStore = LogWAL; c.SyncState = true }},
		{"log=bolt,state=nosync", func(c *Config) { c.LogStore = LogBolt }},
		{"log=wal,state=nosync", func(c *Config) { c.LogStore = LogWAL }},
		{"log=bolt,state=nosync,maxappend=512", func(c *Config) { c.LogStore = LogBolt; c.MaxAppendEntries = 512 }},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) { benchApply(b, 10, 64, v.tune) })
	}
}

func benchApply(b *testing.B, groups, clients int, tune func(*Config)) {
	nodes := threeNodes(b, func(c *Config) {
		c.HeartbeatTimeout = time.Second
		c.ElectionTimeout = time.Second
		c.LeaderLeaseTimeout = 500 * time.Millisecond
		tune(c)
	})
	var ids []string
	for i := 0; i < groups; i++ {
		ids = append(ids, fmt.Sprintf("g%02d", i))
	}
	bootstrap(b, nodes, ids...)
	leaders := make([]*Group, len(ids))
	for i, id := range ids {
		leaders[i] = waitLeader(b, nodes, id)
	}
	value := make([]byte, 256)
	lat := make([][]time.Duration, clients)
	var next, errs atomic.Int64
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
				cmd := &store.Command{Then: []store.Op{{Type: store.OpPut, Key: []byte(fmt.Sprint("k", i%1000)), Value: value}}}
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := leaders[int(i)%len(leaders)].Apply(ctx, cmd)
				cancel()
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
	if len(all) == 0 {
		b.Fatal("no write succeeded")
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "writes/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(errs.Load()), "errors")
	b.ReportMetric(0, "ns/op")
}
