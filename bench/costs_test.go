package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestMetricsMeterSumsNodesAndTakesEachGroupsHighestIndex: CPU adds up over
// the nodes; a group's entries are counted once, at the highest applied
// index any node reports (followers lag the leader).
func TestMetricsMeterSumsNodesAndTakesEachGroupsHighestIndex(t *testing.T) {
	nodes := []string{
		"process_cpu_seconds_total 1.5\nldcd_group_applied_index{group=\"g-00-49\"} 100\nldcd_group_applied_index{group=\"g-50-99\"} 40\n",
		"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 2.25\nldcd_group_applied_index{group=\"g-00-49\"} 98\nldcd_group_applied_index{group=\"g-50-99\"} 45\n",
	}
	var urls []string
	for _, body := range nodes {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }))
		defer srv.Close()
		urls = append(urls, srv.URL)
	}
	m := &MetricsMeter{Applied: "ldcd_group_applied_index", URLs: func(context.Context) ([]string, error) { return urls, nil }}
	r, err := m.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Nodes != 2 || r.CPUSeconds != 3.75 || r.Entries != 145 {
		t.Fatalf("reading %+v: want 2 nodes, 3.75 CPU seconds, 145 entries", r)
	}
	m.Applied = ""
	if r, err = m.Read(context.Background()); err != nil || r.Entries != -1 {
		t.Fatalf("without an applied metric: %+v %v, want entries unknown (-1)", r, err)
	}
	c := costs(Reading{Nodes: 2, CPUSeconds: 1, Entries: 100}, Reading{Nodes: 2, CPUSeconds: 1.5, Entries: 150}, 100*time.Millisecond, 1000, 800)
	if c.ServerCPUUsPerOp != 500 || c.ClientCPUUsPerOp != 100 || c.Entries != 50 || c.WritesPerEntry != 16 {
		t.Fatalf("costs %+v: want 500 µs and 100 µs per op, 50 entries, 16 writes each", c)
	}
}

// TestMetricsMeterRefusesAnIncompleteReading: a node that does not answer,
// or answers without its CPU time, fails the reading rather than leaving
// its share out.
func TestMetricsMeterRefusesAnIncompleteReading(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "process_cpu_seconds_total 1\n")
	}))
	defer ok.Close()
	noCPU := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "go_goroutines 12\n")
	}))
	defer noCPU.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	for _, tc := range []struct{ url, want string }{
		{noCPU.URL, "no process_cpu_seconds_total"},
		{failing.URL, "503"},
		{"http://127.0.0.1:1/metrics", "reading costs"},
	} {
		m := &MetricsMeter{URLs: func(context.Context) ([]string, error) { return []string{ok.URL, tc.url}, nil }}
		if _, err := m.Read(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want an error with %q, got %v", tc.url, tc.want, err)
		}
	}
	// And Run reports why it has no costs instead of failing the run.
	m := &MetricsMeter{URLs: func(context.Context) ([]string, error) { return []string{failing.URL}, nil }}
	res, err := Run(context.Background(), &stallTarget{}, Config{Workload: "put", Clients: 2, Requests: 50, Meter: m})
	if err != nil || res.Total.Count != 50 || res.Costs != nil || !strings.Contains(res.CostsError, "503") {
		t.Fatalf("run with an unreadable meter: err=%v count=%d costs=%+v costs_error=%q", err, res.Total.Count, res.Costs, res.CostsError)
	}
}
