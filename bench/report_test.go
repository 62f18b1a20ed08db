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
