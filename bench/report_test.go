package bench

import (
	"strings"
	"testing"
)

// TestRatioSummary: the median and range of each run's ratios over rounds.
func TestRatioSummary(t *testing.T) {
	pair := func(name string, aOps, bOps float64, aP50, bP50 int64) Pair {
		return Pair{Name: name,
			A: &Result{Total: Stats{Throughput: aOps, P50Us: aP50, P99Us: aP50 * 2}},
			B: &Result{Total: Stats{Throughput: bOps, P50Us: bP50, P99Us: bP50 * 2}},
		}
	}
	rounds := [][]Pair{
		{pair("put c=1", 100, 100, 900, 1000), pair("get c=64", 300, 100, 100, 100)},
		{pair("put c=1", 120, 100, 1200, 1000), pair("get c=64", 500, 100, 100, 100)},
		{pair("put c=1", 80, 100, 1000, 1000), pair("get c=64", 400, 100, 100, 100)},
	}
	var b strings.Builder
	if err := WriteRatioSummary(&b, "ldcd", "etcd", rounds); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "3 rounds") {
		t.Fatalf("want a header naming 3 rounds and two rows:\n%s", b.String())
	}
	for _, want := range []struct {
		row    int
		fields []string
	}{
		{1, []string{"put c=1", "1.00×", "0.80–1.20×", "1.00×", "0.90–1.20×"}},
		{2, []string{"get c=64", "4.00×", "3.00–5.00×", "1.00×", "1.00–1.00×"}},
	} {
		got := strings.Fields(lines[want.row])
		joined := strings.Join(got, " ")
		for _, f := range want.fields {
			if !strings.Contains(joined, f) {
				t.Errorf("row %q lacks %q", joined, f)
			}
		}
	}
	// An even number of rounds takes the mean of the middle two.
	var even strings.Builder
	WriteRatioSummary(&even, "ldcd", "etcd", rounds[:2])
	if !strings.Contains(even.String(), "1.10×") {
		t.Fatalf("median of 1.00× and 1.20× is not 1.10×:\n%s", even.String())
	}
}

// TestComparisonShowsCPUPerOp: the servers' CPU per operation of both sides
// and its ratio, in each round and as a median over rounds; "-" where a run
// was not metered.
func TestComparisonShowsCPUPerOp(t *testing.T) {
	pair := func(aCPU, bCPU float64) Pair {
		p := Pair{Name: "put c=256",
			A: &Result{Total: Stats{Throughput: 200, P50Us: 10, P99Us: 20}},
			B: &Result{Total: Stats{Throughput: 100, P50Us: 20, P99Us: 40}},
		}
		if aCPU > 0 {
			p.A.Costs, p.B.Costs = &Costs{ServerCPUUsPerOp: aCPU}, &Costs{ServerCPUUsPerOp: bCPU}
		}
		return p
	}
	var b strings.Builder
	WriteComparison(&b, "ldcd", "etcd", []Pair{pair(80, 160)})
	if s := b.String(); !strings.Contains(s, "cpu/op") || !strings.Contains(s, "80µs") || !strings.Contains(s, "160µs") || !strings.Contains(s, "0.50×") {
		t.Fatalf("comparison lacks the CPU per op of both and their ratio:\n%s", s)
	}
	b.Reset()
	WriteRatioSummary(&b, "ldcd", "etcd", [][]Pair{{pair(80, 160)}, {pair(90, 100)}, {pair(0, 0)}})
	row := strings.Join(strings.Fields(strings.Split(strings.TrimSpace(b.String()), "\n")[1]), " ")
	if !strings.HasSuffix(row, "0.70× 0.50–0.90×") {
		t.Fatalf("want the median of the two metered rounds' CPU ratios (0.50×, 0.90×) last, got %q", row)
	}
	b.Reset()
	WriteRatioSummary(&b, "ldcd", "etcd", [][]Pair{{pair(0, 0)}})
	row = strings.Join(strings.Fields(strings.Split(strings.TrimSpace(b.String()), "\n")[1]), " ")
	if !strings.HasSuffix(row, "- -") {
		t.Fatalf("no metered round: want - -, got %q", row)
	}
}
