package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
		{"log=shared,state=nosync", func(c *Config) { c.LogStore = LogShared }},
		{"log=wal,state=nosync,commit-each-batch", func(c *Config) { c.LogStore = LogWAL; c.StateCommitDelay = 0 }},
		{"log=wal,state=nosync,entry-per-write", func(c *Config) { c.LogStore = LogWAL; c.ProposalBatch = 1 }},
		{"log=wal,state=nosync,no-linger", func(c *Config) { c.LogStore = LogWAL; c.ProposalLinger = 0 }},
		{"log=bolt,state=nosync,maxappend=512", func(c *Config) { c.LogStore = LogBolt; c.MaxAppendEntries = 512 }},
		{"log=wal,state=nosync,nopipeline", func(c *Config) { c.LogStore = LogWAL; c.noPipeline = true }},
		{"log=wal,state=nosync,shared-connections", func(c *Config) { c.LogStore = LogWAL; c.SharedConnections = true }},
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
		c.LeaderLeaseTimeout = time.Second
		c.LeaderHeartbeatTimeout = 2500 * time.Millisecond
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

// BenchmarkDurableAppend asks whether a log shared by all groups of a node
// (one flush for many groups' appends) would beat a log per group: 10
// writers, each appending 4 KiB blocks to a preallocated file of its own
// and waiting until they are durable, either by fdatasync of its own file
// (what a log per group does) or by joining one syncfs of the whole file
// system that covers every writer waiting (group commit, the best a shared
// log could do). `go test -run '^$' -bench DurableAppend ./raftgroup`.
func BenchmarkDurableAppend(b *testing.B) {
	for _, writers := range []int{10, 100} {
		for _, mode := range []string{"fdatasync-per-file", "syncfs-group-commit", "shared-file-group-commit"} {
			b.Run(fmt.Sprintf("%s,writers=%d", mode, writers), func(b *testing.B) {
				dir := b.TempDir()
				nfiles := writers
				if mode == "shared-file-group-commit" {
					nfiles = 1
				}
				files := make([]*os.File, nfiles)
				for i := range files {
					f, err := os.OpenFile(filepath.Join(dir, fmt.Sprint(i)), os.O_CREATE|os.O_RDWR, 0o644)
					if err != nil {
						b.Fatal(err)
					}
					defer f.Close()
					if err := unix.Fallocate(int(f.Fd()), 0, 0, 64<<20); err != nil {
						b.Skip("no fallocate here:", err)
					}
					f.Sync()
					files[i] = f
				}
				d, err := os.Open(dir)
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				gc := &groupCommit{fd: int(d.Fd()), syncFn: unix.Syncfs}
				if mode == "shared-file-group-commit" {
					gc.fd, gc.syncFn = int(files[0].Fd()), unix.Fdatasync
				}
				gc.cond = sync.NewCond(&gc.mu)
				var next, shared atomic.Int64
				block := make([]byte, 4096)
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for w := 0; w < writers; w++ {
					f := files[w%nfiles]
					wg.Add(1)
					go func(f *os.File) {
						defer wg.Done()
						for off := int64(0); next.Add(1) <= int64(b.N); off = (off + 4096) % (64 << 20) {
							at := off
							if mode == "shared-file-group-commit" {
								at = (shared.Add(4096) - 4096) % (64 << 20)
							}
							if _, err := f.WriteAt(block, at); err != nil {
								b.Error(err)
								return
							}
							var err error
							if mode == "fdatasync-per-file" {
								err = unix.Fdatasync(int(f.Fd()))
							} else {
								err = gc.sync()
							}
							if err != nil {
								b.Error(err)
								return
							}
						}
					}(f)
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
				b.ReportMetric(float64(gc.done), "flushes")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// groupCommit makes writes durable with one syncfs for every caller that
// arrived before it started.
type groupCommit struct {
	fd            int
	syncFn        func(fd int) error
	mu            sync.Mutex
	cond          *sync.Cond
	started, done uint64
	running       bool
}

func (g *groupCommit) sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := g.started + 1 // a syncfs that starts from now on covers our write
	for g.done < want {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		gen := g.started
		g.mu.Unlock()
		err := g.syncFn(g.fd)
		g.mu.Lock()
		g.running, g.done = false, gen
		g.cond.Broadcast()
		if err != nil {
			return err
		}
	}
	return nil
}
