package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// What a run cost. On a machine where the load generator and the servers
// share the cores, throughput follows CPU per operation; and a replicated
// log's cost is mostly per entry (an fsync on each replica, a message to
// each follower, an apply), so writes per entry say how well writes were
// batched. Both move less from run to run than throughput does.

// Meter reads what the system under test has spent so far. Run reads it
// just before the workload starts and just after it ends.
type Meter interface {
	Read(ctx context.Context) (Reading, error)
}

// Reading is one read of a Meter: counters that only grow.
type Reading struct {
	// Nodes is how many server processes were read.
	Nodes int
	// CPUSeconds is their CPU time (user and system) so far, summed.
	CPUSeconds float64
	// Entries counts the log entries the cluster has applied, or is -1
	// when the meter cannot tell.
	Entries int64
}

// Costs is what a run cost, per operation.
type Costs struct {
	Nodes int `json:"nodes"`
	// ServerCPUUsPerOp is the servers' CPU time over the run, summed over
	// nodes, per operation answered.
	ServerCPUUsPerOp float64 `json:"server_cpu_us_per_op"`
	// ClientCPUUsPerOp is the load generator's own CPU time per operation
	// (the whole process: workers, client library, progress line).
	ClientCPUUsPerOp float64 `json:"client_cpu_us_per_op"`
	// Entries is the log entries applied during the run (-1: unknown),
	// and WritesPerEntry the writes answered per entry (0 when the run
	// wrote nothing or the entries are unknown).
	Entries        int64   `json:"entries"`
	WritesPerEntry float64 `json:"writes_per_entry,omitempty"`
}

// processCPU returns this process's CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// costs turns two readings around a run into per-operation figures.
func costs(before, after Reading, clientCPU time.Duration, ops, writes int64) *Costs {
	c := &Costs{Nodes: after.Nodes, Entries: -1}
	if ops > 0 {
		c.ServerCPUUsPerOp = (after.CPUSeconds - before.CPUSeconds) * 1e6 / float64(ops)
		c.ClientCPUUsPerOp = float64(clientCPU.Microseconds()) / float64(ops)
	}
	if before.Entries >= 0 && after.Entries >= 0 {
		c.Entries = after.Entries - before.Entries
		if c.Entries > 0 && writes > 0 {
			c.WritesPerEntry = float64(writes) / float64(c.Entries)
		}
	}
	return c
}

// MetricsMeter reads a cluster's costs from its nodes' Prometheus
// endpoints: process_cpu_seconds_total summed over the nodes, and the log
// entries applied from a gauge or counter of applied indexes (Applied):
// for each label set (one per Raft group, or none), the highest value any
// node reports, summed over the label sets.
type MetricsMeter struct {
	// URLs returns the nodes' metrics URLs, read at each Read.
	URLs func(ctx context.Context) ([]string, error)
	// Applied names the applied-index metric; empty: entries unknown.
	Applied string
	// HTTP is the client to read with (default: one with a 5 s timeout).
	HTTP *http.Client
}

// Read implements Meter. Every node must answer: a reading that missed one
// would make the run's figures wrong, not just rough.
func (m *MetricsMeter) Read(ctx context.Context) (Reading, error) {
	urls, err := m.URLs(ctx)
	if err != nil {
		return Reading{}, err
	}
	if len(urls) == 0 {
		return Reading{}, fmt.Errorf("bench: no nodes to read costs from")
	}
	hc := m.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	r := Reading{Nodes: len(urls), Entries: -1}
	applied := map[string]float64{} // label set -> highest value
	for _, u := range urls {
		fams, err := scrape(ctx, hc, u)
		if err != nil {
			return Reading{}, err
		}
		cpu, ok := fams["process_cpu_seconds_total"]
		if !ok || len(cpu.GetMetric()) == 0 {
			return Reading{}, fmt.Errorf("bench: %s has no process_cpu_seconds_total", u)
		}
		r.CPUSeconds += value(cpu.GetMetric()[0])
		if f, ok := fams[m.Applied]; ok {
			for _, mt := range f.GetMetric() {
				k := labelKey(mt)
				applied[k] = max(applied[k], value(mt))
			}
		}
	}
	if m.Applied != "" && len(applied) > 0 {
		r.Entries = 0
		for _, v := range applied {
			r.Entries += int64(v)
		}
	}
	return r, nil
}

func scrape(ctx context.Context, hc *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: reading costs: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil, fmt.Errorf("bench: reading costs: %s answered %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("bench: reading costs from %s: %w", url, err)
	}
	return fams, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

func labelKey(m *dto.Metric) string {
	var b strings.Builder
	for _, l := range m.GetLabel() {
		b.WriteString(l.GetName())
		b.WriteByte('=')
		b.WriteString(l.GetValue())
		b.WriteByte(',')
	}
	return b.String()
}
