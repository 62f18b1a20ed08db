package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/jepsen"
	"github.com/urfave/cli/v2"
)

const demoTopology = `# the ldcd demo: two cities, a GZone, three RZones, a CZone
zones:
  - {name: gz,    city: hangzhou, kind: gzone}
  - {name: rz0,   city: hangzhou, kind: rzone}
  - {name: rz1,   city: hangzhou, kind: rzone}
  - {name: rz2,   city: shanghai, kind: rzone}
  - {name: cz-sh, city: shanghai, kind: czone}
ranges:
  - {shards: 00-24, owner: rz0, failover: [rz1, rz2]}
  - {shards: 25-49, owner: rz0, failover: [rz2, rz1]}
  - {shards: 50-74, owner: rz1, failover: [rz0, rz2]}
  - {shards: 75-99, owner: rz2, failover: [rz1, rz0]}
replicas: 3
`

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a local two-city LDC (GZone, three RZones, a CZone) as child processes until Ctrl-C",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "base-port", Value: 7100, Usage: "node i uses ports base+10i (HTTP), +1 (Raft), +2 (gossip)"},
			&cli.StringFlag{Name: "dir", Usage: "keep data and logs here (default: a temporary directory, removed at exit)"},
		},
		Action: func(c *cli.Context) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			dir := c.String("dir")
			if dir == "" {
				if dir, err = os.MkdirTemp("", "ldcd-demo-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			} else if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			topo := filepath.Join(dir, "topology.yaml")
			if err := os.WriteFile(topo, []byte(demoTopology), 0o644); err != nil {
				return err
			}
			cl := &jepsen.Cluster{Bin: exe, Dir: dir}
			defer func() {
				fmt.Println("\nstopping the demo ...")
				for _, n := range cl.Nodes {
					cl.Stop(n)
				}
			}()
			base := c.Int("base-port")
			for i, spec := range []struct{ name, zone, city string }{
				{"gz1", "gz", "hangzhou"}, {"rz0a", "rz0", "hangzhou"}, {"rz1a", "rz1", "hangzhou"}, {"rz2a", "rz2", "shanghai"}, {"cz1", "cz-sh", "shanghai"},
			} {
				p := base + 10*i
				n := &jepsen.Node{Name: spec.name, Zone: spec.zone, City: spec.city,
					HTTP: fmt.Sprintf("127.0.0.1:%d", p), Raft: fmt.Sprintf("127.0.0.1:%d", p+1), Gossip: fmt.Sprintf("127.0.0.1:%d", p+2),
					DataDir: filepath.Join(dir, spec.name), LogPath: filepath.Join(dir, spec.name+".log")}
				var join []string
				if i == 0 {
					n.Args = []string{"--topology", topo}
				} else {
					join = []string{cl.Nodes[0].Gossip}
				}
				cl.Nodes = append(cl.Nodes, n)
				if err := cl.Start(n, join...); err != nil {
					return err
				}
			}
			fmt.Printf("starting 5 nodes in %s ...\n", dir)
			api, err := client.New(client.Config{Endpoints: []string{cl.Nodes[0].HTTP}})
			if err != nil {
				return err
			}
			if err := waitDemo(c.Context, api); err != nil {
				return err
			}
			info, err := api.Cluster(c.Context)
			if err != nil {
				return err
			}
			printStatus(os.Stdout, info)
			first := cl.Nodes[1].HTTP
			fmt.Printf(`
The LDC is up. Try:

  curl -X PUT %[1]s/v1/kv/42/balance -d 100            # user 42: shard 42, range 25-49, owned by rz0
  curl -i %[1]s/v1/kv/42/balance
  curl -X PUT %[2]s/v1/global/rate/usd -d 7.1          # global data, led from the GZone
  curl %[1]s/v1/routing                                 # where each range is served, with the epoch
  %[3]s status --endpoints %[4]s
  %[3]s placement move --range 25-49 --to rz2 --endpoints %[4]s --dry-run
  kill -9 the rz0 node (pid %[5]d) and watch 00-49 fail over to rz1/rz2

Logs and data are in %[6]s. Ctrl-C stops everything.
`, "http://"+first, "http://"+cl.Nodes[0].HTTP, exe, first, pidOf(cl.Nodes[1]), dir)
			<-c.Context.Done()
			return nil
		},
	}
}

func pidOf(n *jepsen.Node) int { return n.PID() }

// waitDemo waits until every group has a pinned leader.
func waitDemo(ctx context.Context, api *client.Client) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		info, err := api.Cluster(ctx)
		ready := err == nil && len(info.Groups) == 5
		if ready {
			for _, g := range info.Groups {
				ready = ready && g.Leader != "" && g.Pinned && len(g.Voters) == 3
			}
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the demo cluster did not come up in 90s (last error: %v)", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
