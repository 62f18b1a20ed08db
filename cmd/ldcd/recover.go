package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/urfave/cli/v2"
)

func recoverCommand() *cli.Command {
	return &cli.Command{
		Name:  "recover",
		Usage: "rebuild a group that lost a majority of its voters for good from its most up-to-date survivor",
		Description: "For a group shown as unavailable by ldcd status: a majority of its voters has been down for\n" +
			"longer than --dead-node-timeout, so Raft cannot elect a leader and the placement driver cannot\n" +
			"replace them. Run with --dry-run first: it lists each survivor's last index and what may be lost.\n" +
			"Without it, the survivor with the highest last index becomes the group's only voter (every entry it\n" +
			"holds counts as committed; writes only the lost voters had are gone), the placement driver adds\n" +
			"replicas back, and the event is recorded in the global group under _ldcd/recoveries/.\n" +
			"Refused while the group has a leader or a majority of its voters alive.",
		Flags: clientFlags(
			&cli.StringFlag{Name: "group", Usage: "the group to rebuild, e.g. g-00-24 or global"},
			&cli.BoolFlag{Name: "dry-run", Usage: "list the survivors and what may be lost; change nothing"},
		),
		Action: func(c *cli.Context) error {
			if !c.IsSet("group") || c.NArg() > 0 {
				return errors.New("usage: ldcd recover --group ID [--dry-run]")
			}
			if !c.IsSet("timeout") {
				c.Set("timeout", (45 * time.Second).String())
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			res, err := cl.Recover(c.Context, client.RecoverRequest{Group: c.String("group"), DryRun: c.Bool("dry-run")})
			if err != nil {
				return err
			}
			printRecoverResult(os.Stdout, res)
			return nil
		},
	}
}

func printRecoverResult(w io.Writer, res *client.RecoverResult) {
	fmt.Fprintf(w, "group %s: voters %v, lost %v\n\n", res.Group, res.Voters, res.Lost)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SURVIVOR\tZONE\tVOTER\tSTATE\tTERM\tLAST INDEX\tCOMMIT INDEX\tAPPLIED")
	for _, sv := range res.Survivors {
		mark := ""
		if sv.Node == res.Chosen {
			mark = " (chosen)"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%v\t%s\t%d\t%d\t%d\t%d\n", sv.Node, mark, sv.Zone, sv.Voter, sv.State, sv.Term, sv.LastIndex, sv.CommitIndex, sv.AppliedIndex)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nmay be lost: %s\n", res.MayLose)
	switch {
	case res.DryRun:
		fmt.Fprintf(w, "dry run: nothing changed; run again without --dry-run to rebuild %s from %s\n", res.Group, res.Chosen)
	case res.Recovered:
		leader := res.Leader
		if leader == "" {
			leader = "(not yet elected)"
		}
		fmt.Fprintf(w, "recovered: %s is rebuilt from %s, its only voter; leader %s; the placement driver adds replicas back\n", res.Group, res.Chosen, leader)
		if res.PlacementError != "" {
			fmt.Fprintf(w, "WARNING: %s\n", res.PlacementError)
		}
		if res.Recorded {
			fmt.Fprintf(w, "recorded in the global group as %s\n", res.RecordedKey)
		} else {
			fmt.Fprintf(w, "WARNING: %s\n", res.RecordError)
		}
	}
}
