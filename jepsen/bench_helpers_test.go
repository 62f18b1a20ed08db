package jepsen

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

func benchClient(b *testing.B, nodes ...*Node) *client.Client {
	var eps []string
	for _, n := range nodes {
		eps = append(eps, n.HTTP)
	}
	cl, err := client.New(client.Config{Endpoints: eps})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close() })
	return cl
}

func waitBench(b *testing.B, cond func() bool) {
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("cluster did not become ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scrape reads the unlabelled samples of a node's /metrics.
func scrape(n *Node) (map[string]float64, error) {
	resp, err := http.Get("http://" + n.HTTP + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}
