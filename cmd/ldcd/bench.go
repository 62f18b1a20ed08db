package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/ldcd/ldcd/bench"
	"github.com/ldcd/ldcd/client"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "drive a cluster with a workload and report throughput and latency",
		Description: "Closed loop by default: --clients concurrent clients, each sending its next request\n" +
			"when the last is answered. With --rate, an open loop: requests are due at a fixed\n" +
			"rate and each latency counts from the time its request was due, so a stall shows\n" +
			"as the queue it causes. Workloads: " + strings.Join(bench.WorkloadNames, ", ") + "\n" +
			"(mix-a: 50% get, 50% put; mix-b: 95% get, 5% put; txn: two keys of one user).",
		Flags: clientFlags(
			&cli.StringFlag{Name: "workload", Aliases: []string{"w"}, Value: "put", Usage: "one of " + strings.Join(bench.WorkloadNames, ", ")},
			&cli.IntFlag{Name: "clients", Aliases: []string{"c"}, Value: 64, Usage: "concurrent requests"},
			&cli.Float64Flag{Name: "rate", Usage: "open loop at this many requests a second (0: closed loop)"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Value: 10 * time.Second, Usage: "how long to run"},
			&cli.Int64Flag{Name: "requests", Aliases: []string{"n"}, Usage: "stop after this many requests (0: run for --duration)"},
			&cli.IntFlag{Name: "users", Value: 10000, Usage: "distinct userIds the keys spread over"},
			&cli.StringFlag{Name: "dist", Value: "uniform", Usage: "key distribution: uniform or zipfian"},
			&cli.IntFlag{Name: "value-size", Value: 256, Usage: "bytes per value"},
			&cli.BoolFlag{Name: "preload", Value: true, Usage: "write every user's key once before a workload that reads"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the key sequence"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress line"},
			&cli.BoolFlag{Name: "no-frames", Usage: "send every request as plain HTTP/1.1 instead of over framed connections"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the load generator itself to this file (go tool pprof)"},
			&cli.BoolFlag{Name: "costs", Value: true, Usage: "read every node's /metrics before and after the run and report the servers' CPU per operation, the load generator's, and writes per Raft entry"},
		),
		Action: func(c *cli.Context) error {
			cfg := bench.Config{
				Workload: c.String("workload"), Clients: c.Int("clients"), Rate: c.Float64("rate"),
				Duration: c.Duration("duration"), Requests: c.Int64("requests"), Users: c.Int("users"),
				Dist: c.String("dist"), ValueSize: c.Int("value-size"), Preload: c.Bool("preload"),
				Seed: c.Uint64("seed"), Timeout: c.Duration("timeout"),
			}
			if c.IsSet("requests") && !c.IsSet("duration") {
				cfg.Duration = 0
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if !c.Bool("quiet") {
				cfg.Progress = os.Stderr
			}
			if path := c.String("cpuprofile"); path != "" {
				f, err := os.Create(path)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			// One connection per client and node: HTTP/1.1 carries one
			// request at a time.
			hc := &http.Client{Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConnsPerHost: cfg.Clients + 16,
				IdleConnTimeout:     90 * time.Second,
			}}
			cl, err := client.New(client.Config{Endpoints: endpointsOf(c), Timeout: c.Duration("timeout"), HTTPClient: hc, NoFrames: c.Bool("no-frames")})
			if err != nil {
				return err
			}
			defer cl.Close()
			target := bench.LDCD{C: cl}
			if c.Bool("costs") {
				cfg.Meter = target.Meter(&http.Client{Timeout: 5 * time.Second})
			}
			res, err := bench.Run(c.Context, target, cfg)
			if res == nil {
				return err
			}
			res.Target = "ldcd"
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if jerr := enc.Encode(res); jerr != nil {
					return jerr
				}
			} else {
				bench.WriteTable(c.App.Writer, res)
				for _, s := range res.ErrorSamples {
					fmt.Fprintln(c.App.ErrWriter, "error:", s)
				}
				if res.CostsError != "" {
					fmt.Fprintln(c.App.ErrWriter, "costs not measured:", res.CostsError)
				}
			}
			return err
		},
	}
}
