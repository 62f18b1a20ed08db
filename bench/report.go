package bench

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

func us(v int64) string { return fmtDur(float64(v)) }

func fmtDur(microseconds float64) string {
	d := time.Duration(microseconds * float64(time.Microsecond))
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", microseconds)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", microseconds/1000)
	default:
		return fmt.Sprintf("%.2fs", microseconds/1e6)
	}
}

// WriteTable prints results as a table: one row per operation kind, and a
// total row for mixed workloads.
func WriteTable(w io.Writer, results ...*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tworkload\tclients\trate\top\tcount\terrors\tops/s\tmean\tp50\tp90\tp99\tp99.9\tmax\tserver cpu/op\tclient cpu/op\twrites/entry\t")
	for _, r := range results {
		rows := r.Ops
		if len(rows) > 1 {
			rows = append(rows, r.Total)
		}
		rate := "closed"
		if r.Rate > 0 {
			rate = fmt.Sprintf("%.0f/s", r.Rate)
		}
		target := r.Target
		if target == "" {
			target = "-"
		}
		for i, s := range rows {
			srv, cli, wpe := "-", "-", "-"
			if c := r.Costs; c != nil && i == len(rows)-1 { // the run's costs go on its last (total) row
				srv, cli = fmtDur(c.ServerCPUUsPerOp), fmtDur(c.ClientCPUUsPerOp)
				if c.WritesPerEntry > 0 {
					wpe = fmt.Sprintf("%.1f", c.WritesPerEntry)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
				target, r.Workload, r.Clients, rate, s.Op, s.Count, s.Errors, s.Throughput,
				fmtDur(s.MeanUs), us(s.P50Us), us(s.P90Us), us(s.P99Us), us(s.P999Us), us(s.MaxUs), srv, cli, wpe)
		}
	}
	return tw.Flush()
}

// Pair is one workload run against two targets: A (ldcd) and B (the
// reference).
type Pair struct {
	Name string  `json:"name"`
	A    *Result `json:"a"`
	B    *Result `json:"b"`
}

// Ratio returns a/b, or 0 when b is 0.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// WriteComparison prints each pair side by side: throughput, p50, p99 and
// the servers' CPU per operation of both, and the ratios A/B (above 1 for
// throughput, below 1 for latency and CPU, mean A is better).
func WriteComparison(w io.Writer, aName, bName string, pairs []Pair) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "run\t%[1]s ops/s\t%[2]s ops/s\tratio\t%[1]s p50\t%[2]s p50\tratio\t%[1]s p99\t%[2]s p99\tratio\t%[1]s cpu/op\t%[2]s cpu/op\tratio\t\n", aName, bName)
	for _, p := range pairs {
		a, b := p.A.Total, p.B.Total
		cpu := "-\t-\t-"
		if ca, cb, ok := cpuPerOp(p); ok {
			cpu = fmt.Sprintf("%s\t%s\t%.2f×", fmtDur(ca), fmtDur(cb), Ratio(ca, cb))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.2f×\t%s\t%s\t%.2f×\t%s\t%s\t%.2f×\t%s\t\n", p.Name,
			a.Throughput, b.Throughput, Ratio(a.Throughput, b.Throughput),
			us(a.P50Us), us(b.P50Us), Ratio(float64(a.P50Us), float64(b.P50Us)),
			us(a.P99Us), us(b.P99Us), Ratio(float64(a.P99Us), float64(b.P99Us)), cpu)
	}
	return tw.Flush()
}

// cpuPerOp returns the servers' CPU per operation of both sides of p, if
// both runs were metered.
func cpuPerOp(p Pair) (a, b float64, ok bool) {
	if p.A == nil || p.B == nil || p.A.Costs == nil || p.B.Costs == nil || p.B.Costs.ServerCPUUsPerOp <= 0 {
		return 0, 0, false
	}
	return p.A.Costs.ServerCPUUsPerOp, p.B.Costs.ServerCPUUsPerOp, true
}

// WriteRatioSummary prints, for each run name, the median and the range of
// the ratios A/B over several rounds of the same pairs (rounds[i] is round
// i's pairs, in the same order each round): what one comparison says once
// the machine's drift between rounds is seen.
func WriteRatioSummary(w io.Writer, aName, bName string, rounds [][]Pair) error {
	if len(rounds) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "run (%d rounds)\tops/s %[2]s/%[3]s\tmin–max\tp50 %[2]s/%[3]s\tmin–max\tp99 %[2]s/%[3]s\tmin–max\tcpu/op %[2]s/%[3]s\tmin–max\t\n", len(rounds), aName, bName)
	for i, first := range rounds[0] {
		var ops, p50, p99, cpu []float64
		for _, round := range rounds {
			if i >= len(round) {
				continue
			}
			a, b := round[i].A.Total, round[i].B.Total
			ops = append(ops, Ratio(a.Throughput, b.Throughput))
			p50 = append(p50, Ratio(float64(a.P50Us), float64(b.P50Us)))
			p99 = append(p99, Ratio(float64(a.P99Us), float64(b.P99Us)))
			if ca, cb, ok := cpuPerOp(round[i]); ok {
				cpu = append(cpu, Ratio(ca, cb))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", first.Name, spread(ops), spread(p50), spread(p99), spread(cpu))
	}
	return tw.Flush()
}

// spread formats the median of v and its range as two columns ("-" when v
// is empty).
func spread(v []float64) string {
	if len(v) == 0 {
		return "-\t-"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("%.2f×\t%.2f–%.2f×", med, s[0], s[len(s)-1])
}
