// Package placement decides where every group's replicas live and keeps the
// shard map: uid → shard (uid % 100) → shard range → group.
//
// The desired placement (a Placement: the topology, and each group's
// replicas) is stored in the global group. Three parts work on it:
//
//   - Plan, the planner, is a pure function: desired placement and observed
//     cluster state in, the next desired placement and its decisions out. No
//     goroutines, clock reads or I/O; the time is part of its input.
//   - The Driver runs the planner on a ticker on the global group's leader
//     and stores what it decides (compare-and-set on the version).
//   - The Agent runs on every node and reconciles local replicas to the
//     placement; on the groups its node leads it changes the Raft
//     configuration one step at a time.
//
// placement imports no other package of ldcd: the driver and agent reach
// the node through the small Cluster and Local interfaces, so the client
// library can use the shard map without pulling in Raft.
package placement
