package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
	"github.com/urfave/cli/v2"
)

func placementCommand() *cli.Command {
	dry := &cli.BoolFlag{Name: "dry-run", Usage: "print the plan; change nothing"}
	rangeFlag := &cli.StringFlag{Name: "range", Usage: "shard range, e.g. 00-24"}
	nodeFlag := &cli.StringFlag{Name: "node", Usage: "a node name"}
	zoneFlag := &cli.StringFlag{Name: "zone", Usage: "a zone name"}
	action := func(name string, build func(c *cli.Context) (client.PlacementRequest, error)) cli.ActionFunc {
		return func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("unexpected argument %q: ldcd placement %s takes flags only", c.Args().First(), name)
			}
			req, err := build(c)
			if err != nil {
				return err
			}
			req.DryRun = c.Bool("dry-run")
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			res, err := cl.PlacementAction(c.Context, name, req)
			if err != nil {
				return err
			}
			printPlacementResult(os.Stdout, res)
			return nil
		}
	}
	nodeOrZone := func(c *cli.Context) (client.PlacementRequest, error) {
		if c.IsSet("node") == c.IsSet("zone") {
			return client.PlacementRequest{}, errors.New("give exactly one of --node and --zone")
		}
		return client.PlacementRequest{Node: c.String("node"), Zone: c.String("zone")}, nil
	}
	return &cli.Command{
		Name:  "placement",
		Usage: "show and change where ranges are owned, served and replicated",
		Subcommands: []*cli.Command{
			{
				Name: "show", Usage: "print ranges with owner and serving zones, epochs, replicas and drained nodes",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					cl, err := newClient(c)
					if err != nil {
						return err
					}
					p, err := cl.Placement(c.Context)
					if err != nil {
						return err
					}
					printPlacement(os.Stdout, p)
					return nil
				},
			},
			{
				Name: "move", Usage: "make --to the owner zone of --range (a traffic switch)",
				Flags: clientFlags(rangeFlag, &cli.StringFlag{Name: "to", Usage: "the new owner zone (an rzone)"}, dry),
				Action: action("move", func(c *cli.Context) (client.PlacementRequest, error) {
					if !c.IsSet("range") || !c.IsSet("to") {
						return client.PlacementRequest{}, errors.New("usage: ldcd placement move --range 00-24 --to rz1 [--dry-run]")
					}
					return client.PlacementRequest{Shards: c.String("range"), Zone: c.String("to")}, nil
				}),
			},
			{
				Name: "drain", Usage: "move every replica and leader off a --node or a --zone",
				Flags:  clientFlags(nodeFlag, zoneFlag, dry),
				Action: action("drain", nodeOrZone),
			},
			{
				Name: "undrain", Usage: "let a drained --node or --zone host replicas and leaders again",
				Flags:  clientFlags(nodeFlag, zoneFlag, dry),
				Action: action("undrain", nodeOrZone),
			},
			{
				Name: "split", Usage: "split --range into two groups before shard --at (e.g. 00-49 at 25: 00-24 and 25-49)",
				Flags: clientFlags(rangeFlag, &cli.IntFlag{Name: "at", Usage: "first shard of the upper half"}, dry),
				Action: action("split", func(c *cli.Context) (client.PlacementRequest, error) {
					if !c.IsSet("range") || !c.IsSet("at") {
						return client.PlacementRequest{}, errors.New("usage: ldcd placement split --range 00-49 --at 25 [--dry-run]")
					}
					return client.PlacementRequest{Shards: c.String("range"), At: c.Int("at")}, nil
				}),
			},
			{
				Name: "failback", Usage: "return --range (default: every failed-over range) to its owner zone",
				Flags: clientFlags(rangeFlag, dry),
				Action: action("failback", func(c *cli.Context) (client.PlacementRequest, error) {
					return client.PlacementRequest{Shards: c.String("range")}, nil
				}),
			},
		},
	}
}

func printPlacementResult(w io.Writer, res *client.PlacementResult) {
	if res.DryRun {
		fmt.Fprintf(w, "dry run: %s (nothing changed)\n", res.Change)
	} else {
		fmt.Fprintf(w, "done: %s (placement version %d, routing epoch %d)\n", res.Change, res.Version, res.Epoch)
	}
	if len(res.Decisions) == 0 {
		fmt.Fprintln(w, "first steps: none right now")
		return
	}
	fmt.Fprintln(w, "first steps:")
	for _, d := range res.Decisions {
		fmt.Fprintf(w, "  %s\n", d)
	}
}

func printPlacement(w io.Writer, p *placement.Placement) {
	fmt.Fprintf(w, "placement version %d, routing epoch %d, %d replicas per group\n", p.Version, p.Epoch, p.Topology.Replicas)
	if len(p.DrainedNodes)+len(p.DrainedZones) > 0 {
		fmt.Fprintf(w, "drained nodes: %s; drained zones: %s\n", dashStr(strings.Join(p.DrainedNodes, ",")), dashStr(strings.Join(p.DrainedZones, ",")))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tSHARDS\tOWNER\tSERVING\tEPOCH\tFAILOVER\tFAILBACK\tREPLICAS")
	for _, g := range p.Groups {
		var reps []string
		for _, r := range g.Replicas {
			if r.Voter {
				reps = append(reps, r.Node)
			} else {
				reps = append(reps, r.Node+"(learner)")
			}
		}
		failover, failback := "-", "-"
		if r, ok := p.Topology.Range(g.ID); ok {
			failover = dashStr(strings.Join(r.Failover, ","))
			failback = placement.FailbackAuto
			if r.Failback != "" {
				failback = r.Failback
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", g.ID, dashStr(g.Shards), dashStr(g.OwnerZone), dashStr(g.ServingZone), g.Epoch, failover, failback, strings.Join(reps, ","))
	}
	tw.Flush()
}
