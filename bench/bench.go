// Package bench is the load generator behind `ldcd bench` and the etcd
// comparison under bench/etcd: closed-loop and open-loop workloads over a
// Target, latencies in HDR histograms, a progress line and a final report.
//
// The open loop sends at a fixed rate and measures each latency from the
// intended send time, not the actual one, so a stall shows up as the queue it
// causes (no coordinated omission).
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Target is a store under test. Its methods are called concurrently; each
// returns when the operation is acknowledged.
type Target interface {
	// Put writes value under key of user uid.
	Put(ctx context.Context, uid uint64, key string, value []byte) error
	// Get reads key of user uid: linearizable, or from any replica when
	// stale is set.
	Get(ctx context.Context, uid uint64, key string, stale bool) error
	// Txn writes value under every key of user uid atomically.
	Txn(ctx context.Context, uid uint64, keys []string, value []byte) error
}

// Op names one kind of operation in a report.
type Op string

// The operations.
const (
	OpPut      Op = "put"
	OpGet      Op = "get"
	OpStaleGet Op = "stale-get"
	OpTxn      Op = "txn"
)

// Workloads maps a workload name to its mix of operations (fractions that
// add up to 1), in the order a report lists them.
var Workloads = map[string][]Share{
	"put":       {{OpPut, 1}},
	"get":       {{OpGet, 1}},
	"stale-get": {{OpStaleGet, 1}},
	"txn":       {{OpTxn, 1}},
	// YCSB A (update heavy) and B (read mostly), with linearizable reads.
	"mix-a": {{OpGet, 0.5}, {OpPut, 0.5}},
	"mix-b": {{OpGet, 0.95}, {OpPut, 0.05}},
}

// WorkloadNames lists the workloads in a stable order.
var WorkloadNames = []string{"put", "get", "stale-get", "mix-a", "mix-b", "txn"}

// Share is one operation's part of a workload.
type Share struct {
	Op       Op
	Fraction float64
}

// Config is one run.
type Config struct {
	Workload string
	// Clients is the number of concurrent requests: in the closed loop each
	// client sends its next request when the last one is answered; in the
	// open loop it bounds how many requests may be in flight.
	Clients int
	// Rate, if positive, runs an open loop at this many requests a second.
	Rate float64
	// Duration and Requests bound the run; at least one must be set.
	Duration time.Duration
	Requests int64
	// Users is the number of distinct uids the keys spread over.
	Users int
	// Dist is "uniform" or "zipfian".
	Dist      string
	ValueSize int
	// Preload writes every user's key once before a run that reads, so that
	// reads find values.
	Preload bool
	// Seed makes the key sequence reproducible.
	Seed uint64
	// Progress, if set, receives a progress line every second.
	Progress io.Writer
	// Timeout bounds each request (default 10s).
	Timeout time.Duration
	// Meter, if set, is read just before the workload starts and just
	// after it ends, and the result carries what the run cost (Costs).
	Meter Meter
}

// Validate fills defaults and reports the first bad setting.
func (c *Config) Validate() error {
	if c.Workload == "" {
		c.Workload = "put"
	}
	if _, ok := Workloads[c.Workload]; !ok {
		return fmt.Errorf("bench: unknown workload %q (one of %s)", c.Workload, strings.Join(WorkloadNames, ", "))
	}
	if c.Clients <= 0 {
		c.Clients = 1
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		return fmt.Errorf("bench: rate must be a positive number of requests a second")
	}
	if c.Duration <= 0 && c.Requests <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Duration < 0 || c.Requests < 0 {
		return errors.New("bench: duration and requests must not be negative")
	}
	if c.Users <= 0 {
		c.Users = 10000
	}
	switch c.Dist {
	case "":
		c.Dist = "uniform"
	case "uniform", "zipfian":
	default:
		return fmt.Errorf("bench: unknown key distribution %q (uniform or zipfian)", c.Dist)
	}
	if c.ValueSize <= 0 {
		c.ValueSize = 256
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	return nil
}

// Stats summarises the latencies of one operation kind. Latencies are in
// microseconds.
type Stats struct {
	Op         Op      `json:"op"`
	Count      int64   `json:"count"`
	Errors     int64   `json:"errors"`
	Throughput float64 `json:"ops_per_sec"`
	MeanUs     float64 `json:"mean_us"`
	P50Us      int64   `json:"p50_us"`
	P90Us      int64   `json:"p90_us"`
	P99Us      int64   `json:"p99_us"`
	P999Us     int64   `json:"p999_us"`
	MaxUs      int64   `json:"max_us"`
}

// Result is the outcome of a run.
type Result struct {
	Target   string  `json:"target,omitempty"`
	Workload string  `json:"workload"`
	Clients  int     `json:"clients"`
	Rate     float64 `json:"rate,omitempty"` // 0: closed loop
	Dist     string  `json:"dist"`
	Users    int     `json:"users"`
	Value    int     `json:"value_size"`
	Seconds  float64 `json:"seconds"`
	// Total is every operation together; Ops has one entry per kind.
	Total Stats   `json:"total"`
	Ops   []Stats `json:"ops"`
	// ErrorSamples holds up to five distinct error messages.
	ErrorSamples []string `json:"error_samples,omitempty"`
	// Costs is what the run cost, when Config.Meter was set and could be
	// read; CostsError says why not when it could not.
	Costs      *Costs `json:"costs,omitempty"`
	CostsError string `json:"costs_error,omitempty"`
}

const (
	minLatencyUs = 1
	maxLatencyUs = 120 * 1_000_000
)

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(minLatencyUs, maxLatencyUs, 3)
}

// keygen picks the uid of the next request.
type keygen struct {
	rng   *rand.Rand
	zipf  *rand.Zipf
	users uint64
}

func newKeygen(cfg *Config, worker int) *keygen {
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(worker)+1))
	k := &keygen{rng: rng, users: uint64(cfg.Users)}
	if cfg.Dist == "zipfian" && cfg.Users > 1 {
		// s = 1.1: math/rand's Zipf needs s > 1; YCSB's 0.99 is close.
		k.zipf = rand.NewZipf(rng, 1.1, 1, uint64(cfg.Users-1))
	}
	return k
}

func (k *keygen) next() uint64 {
	if k.zipf != nil {
		// Spread the popular ranks: rank r is uid r*p mod users for a
		// prime p, so hot users are not all in one shard range.
		return (k.zipf.Uint64() * 7919) % k.users
	}
	return k.rng.Uint64N(k.users)
}

// Key is the key every operation of a user touches (Txn touches Key and
// Key2).
const (
	Key  = "bench"
	Key2 = "bench2"
)

type worker struct {
	hists  map[Op]*hdrhistogram.Histogram
	errs   map[Op]int64
	keys   *keygen
	shares []Share
}

func (w *worker) pick() Op {
	if len(w.shares) == 1 {
		return w.shares[0].Op
	}
	x := w.keys.rng.Float64()
	for _, s := range w.shares {
		if x < s.Fraction {
			return s.Op
		}
		x -= s.Fraction
	}
	return w.shares[len(w.shares)-1].Op
}

// Run drives t with cfg and returns the measured result. It stops early,
// with what it measured, when ctx ends.
func Run(ctx context.Context, t Target, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	shares := Workloads[cfg.Workload]
	value := make([]byte, cfg.ValueSize)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	reads := false
	for _, s := range shares {
		reads = reads || s.Op == OpGet || s.Op == OpStaleGet
	}
	if cfg.Preload && reads {
		if err := preload(ctx, t, &cfg, value); err != nil {
			return nil, err
		}
	}

	var (
		done     atomic.Int64 // requests answered
		failed   atomic.Int64
		issued   atomic.Int64 // requests taken by a worker
		samplesM sync.Mutex
		samples  []string
	)
	var before Reading
	var costsErr error
	if cfg.Meter != nil {
		before, costsErr = cfg.Meter.Read(ctx)
	}
	cpu0 := processCPU()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Duration > 0 {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeout(runCtx, cfg.Duration)
		defer c2()
	}
	workers := make([]*worker, cfg.Clients)
	start := time.Now()
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.Rate)
		if interval <= 0 {
			interval = 1
		}
	}
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{hists: map[Op]*hdrhistogram.Histogram{}, errs: map[Op]int64{}, keys: newKeygen(&cfg, i), shares: shares}
		for _, s := range shares {
			w.hists[s.Op] = newHist()
		}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				n := issued.Add(1)
				if cfg.Requests > 0 && n > cfg.Requests {
					return
				}
				sent := time.Now()
				if interval > 0 {
					// The n-th request is due at start + (n-1)·interval,
					// whether or not a worker was free then.
					sent = start.Add(time.Duration(n-1) * interval)
					if d := time.Until(sent); d > 0 {
						tm := time.NewTimer(d)
						select {
						case <-tm.C:
						case <-runCtx.Done():
							tm.Stop()
							return
						}
					}
				}
				op := w.pick()
				uid := w.keys.next()
				// A request's deadline is its own timeout, not the end of
				// the run: one in flight when the run ends finishes and
				// counts. Ended with the run, a node that gives up on a
				// request when its deadline comes (ldcd's framed requests
				// carry it) answered an error just before the run's end
				// was seen here, and it counted as a failure.
				rctx, rcancel := context.WithTimeout(ctx, cfg.Timeout)
				var err error
				switch op {
				case OpPut:
					err = t.Put(rctx, uid, Key, value)
				case OpGet:
					err = t.Get(rctx, uid, Key, false)
				case OpStaleGet:
					err = t.Get(rctx, uid, Key, true)
				case OpTxn:
					err = t.Txn(rctx, uid, []string{Key, Key2}, value)
				}
				rcancel()
				if err != nil {
					if ctx.Err() != nil {
						return // the caller ended the run
					}
					w.errs[op]++
					failed.Add(1)
					samplesM.Lock()
					if len(samples) < 5 && !slices.Contains(samples, err.Error()) {
						samples = append(samples, err.Error())
					}
					samplesM.Unlock()
					continue
				}
				us := time.Since(sent).Microseconds()
				w.hists[op].RecordValue(max(min(us, maxLatencyUs), minLatencyUs))
				done.Add(1)
			}
		}()
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if cfg.Progress == nil {
			return
		}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var last int64
		for {
			select {
			case <-stopProgress:
				return
			case <-tick.C:
				n := done.Load()
				fmt.Fprintf(cfg.Progress, "%6.1fs  %s  %8d ops/s  %10d done  %6d errors\n",
					time.Since(start).Seconds(), cfg.Workload, n-last, n, failed.Load())
				last = n
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	clientCPU := processCPU() - cpu0
	var after Reading
	if cfg.Meter != nil && costsErr == nil {
		after, costsErr = cfg.Meter.Read(ctx)
	}
	close(stopProgress)
	<-progressDone

	res := &Result{Workload: cfg.Workload, Clients: cfg.Clients, Rate: cfg.Rate, Dist: cfg.Dist,
		Users: cfg.Users, Value: cfg.ValueSize, Seconds: elapsed.Seconds(), ErrorSamples: samples}
	total := newHist()
	var totalErrs int64
	for _, s := range shares {
		h := newHist()
		var errs int64
		for _, w := range workers {
			h.Merge(w.hists[s.Op])
			errs += w.errs[s.Op]
		}
		total.Merge(h)
		totalErrs += errs
		res.Ops = append(res.Ops, stats(s.Op, h, errs, elapsed))
	}
	res.Total = stats("total", total, totalErrs, elapsed)
	if cfg.Meter != nil {
		if costsErr != nil {
			res.CostsError = costsErr.Error()
		} else {
			var writes int64
			for _, o := range res.Ops {
				if o.Op == OpPut || o.Op == OpTxn {
					writes += o.Count
				}
			}
			res.Costs = costs(before, after, clientCPU, res.Total.Count, writes)
		}
	}
	if res.Total.Count == 0 && totalErrs > 0 {
		return res, fmt.Errorf("bench: every request failed: %s", strings.Join(samples, "; "))
	}
	return res, ctx.Err()
}

func stats(op Op, h *hdrhistogram.Histogram, errs int64, elapsed time.Duration) Stats {
	s := Stats{Op: op, Count: h.TotalCount(), Errors: errs}
	if elapsed > 0 {
		s.Throughput = float64(s.Count) / elapsed.Seconds()
	}
	if s.Count > 0 {
		s.MeanUs = h.Mean()
		s.P50Us = h.ValueAtQuantile(50)
		s.P90Us = h.ValueAtQuantile(90)
		s.P99Us = h.ValueAtQuantile(99)
		s.P999Us = h.ValueAtQuantile(99.9)
		s.MaxUs = h.Max()
	}
	return s
}

// preload writes Key of every user once, with up to 64 writers.
func preload(ctx context.Context, t Target, cfg *Config, value []byte) error {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(64, max(cfg.Clients, 16)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				uid := next.Add(1) - 1
				if uid >= int64(cfg.Users) {
					return
				}
				var err error
				for try := 0; try < 5; try++ {
					rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
					err = t.Put(rctx, uint64(uid), Key, value)
					cancel()
					if err == nil {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("bench: preload uid %d: %w", uid, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
