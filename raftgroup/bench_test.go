package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ldcd/ldcd/bench"
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

// leaders is a bench.Target that proposes puts at the groups' leaders: a
// user's writes go to group uid mod the number of groups.
type leaders []*Group

func (l leaders) Put(ctx context.Context, uid uint64, key string, value []byte) error {
	cmd := &store.Command{Then: []store.Op{{Type: store.OpPut, Key: []byte(fmt.Sprint(key, uid%1000)), Value: value}}}
	_, err := l[uid%uint64(len(l))].Apply(ctx, cmd)
	return err
}

var errOnlyPuts = errors.New("raftgroup bench: only puts")

func (l leaders) Get(context.Context, uint64, string, bool) error     { return errOnlyPuts }
func (l leaders) Txn(context.Context, uint64, []string, []byte) error { return errOnlyPuts }

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
	target := make(leaders, len(ids))
	for i, id := range ids {
		target[i] = waitLeader(b, nodes, id)
	}
	b.ResetTimer()
	res, err := bench.Run(context.Background(), target, bench.Config{Workload: "put", Clients: clients, Requests: int64(b.N), Users: 1_000_000})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Total.Count == 0 {
		b.Fatal("no write succeeded")
	}
	b.ReportMetric(res.Total.Throughput, "writes/s")
	b.ReportMetric(float64(res.Total.P50Us)/1000, "p50-ms")
	b.ReportMetric(float64(res.Total.P99Us)/1000, "p99-ms")
	b.ReportMetric(float64(res.Total.Errors), "errors")
	b.ReportMetric(0, "ns/op")
}
