package store

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkApplyBatch measures the state machine's share of a write: batches
// of 16 puts of 256-byte values over 10,000 keys, applied without fsync (as
// in production), after a warm-up that fills the change log to its window.
// Besides time it reports the pages bbolt wrote per batch, which does not
// depend on the machine's noise. `go test -run '^$' -bench ApplyBatch ./store`.
func BenchmarkApplyBatch(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{NoSync: true, ChangeLogCount: 20_000})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	value := strings.Repeat("v", 256)
	var index uint64
	batch := func() {
		logs := make([]*raft.Log, 16)
		for i := range logs {
			index++
			logs[i] = logOf(index, put(fmt.Sprintf("user-%05d/k", rng.IntN(10_000)), value))
		}
		for _, r := range s.ApplyBatch(logs) {
			if _, ok := r.(*Result); !ok {
				b.Fatalf("apply: %v", r)
			}
		}
	}
	for range 2_000 { // 32,000 entries: the change log is full and pruning
		batch()
	}
	before := s.db.Stats().TxStats
	b.ResetTimer()
	for range b.N {
		batch()
	}
	b.StopTimer()
	after := s.db.Stats().TxStats
	b.ReportMetric(float64(after.GetWrite()-before.GetWrite())/float64(b.N), "pages/batch")
	b.ReportMetric(float64(after.GetSplit()-before.GetSplit())/float64(b.N), "splits/batch")
}
