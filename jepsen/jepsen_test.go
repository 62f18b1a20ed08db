package jepsen

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestJepsen runs the matrix: LDCD_JEPSEN=quick runs each workload under
// the mixed faults, the register workload under the membership nemesis and
// the bank workload under power loss (TIME, default 30s); LDCD_JEPSEN=full runs every workload under
// every nemesis (TIME, default 60s). SEED fixes the schedules (printed at
// the start). Results go to jepsen/store/.
func TestJepsen(t *testing.T) {
	mode := os.Getenv("LDCD_JEPSEN")
	if mode == "" {
		t.Skip("set LDCD_JEPSEN=quick or full (make jepsen-quick, make jepsen)")
	}
	dur := 30 * time.Second
	type cell struct{ workload, nemesis string }
	var cells []cell
	for _, wl := range Workloads {
		cells = append(cells, cell{wl, "mixed"})
	}
	cells = append(cells, cell{"register", "membership"}, cell{"bank", "power"})
	if mode == "full" {
		dur = 60 * time.Second
		cells = nil
		for _, wl := range Workloads {
			for _, nem := range Nemeses {
				cells = append(cells, cell{wl, nem})
			}
		}
	}
	if v := os.Getenv("TIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			if n, err2 := strconv.Atoi(v); err2 == nil {
				d = time.Duration(n) * time.Second
			} else {
				t.Fatalf("TIME=%q: want a duration such as 60s", v)
			}
		}
		dur = d
	}
	seed := time.Now().UnixNano() % 1_000_000
	if v := os.Getenv("SEED"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("SEED=%q: want an integer", v)
		}
		seed = s
	}
	t.Logf("jepsen %s: seed %d (rerun with SEED=%d), %v per run", mode, seed, seed, dur)
	store, err := filepath.Abs("store")
	if err != nil {
		t.Fatal(err)
	}
	// An interrupt still removes the firewall rules.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sig; ok {
			if NetAvailable() == nil {
				(&Net{}).Close()
			}
			os.Exit(130)
		}
	}()
	defer signal.Stop(sig)

	i := int64(0)
	for _, cl := range cells {
		wl, nem := cl.workload, cl.nemesis
		i++
		{
			t.Run(wl+"-"+nem, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), dur+10*time.Minute)
				defer cancel()
				cfg := RunConfig{Workload: wl, Nemesis: nem, Duration: dur, Seed: seed + i, Bin: bin, Store: store,
					Logf: func(f string, a ...any) { t.Logf(f, a...) }}
				if nem == "power" {
					cfg.FailpointBin = failpointBin(t)
				}
				res, err := Run(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Printf("JEPSEN %-8s %-9s %s ops=%v final=%v replicas=%d dir=%s\n", wl, nem, res.Verdict, res.Ops, res.FinalOK.Round(time.Millisecond), res.Replicas, res.Dir)
				if !res.Verdict.Valid {
					t.Errorf("%s under %s: %s (see %s)", wl, nem, res.Verdict, res.Dir)
				}
			})
		}
	}
}
