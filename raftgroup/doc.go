// Package raftgroup hosts many hashicorp/raft groups in one process.
//
// A Host owns one TCP listener for Raft traffic. Each connection to it starts
// with a short header naming its group, and is handed to that group's
// NetworkTransport through a virtual StreamLayer, so every group has its own
// transport (hashicorp/raft allows one Raft per transport) while the node
// keeps one port. Each group keeps its files under <data-dir>/groups/<id>/:
// raft.db (the raft-boltdb/v2 log and stable store), state.db (the bbolt
// state machine of package store) and snapshots/.
//
//	h, err := raftgroup.New(cfg)            // reopens the groups on disk
//	g, err := h.Create("g-00-09", servers) // bootstraps a fresh group
//	res, err := g.Apply(ctx, cmd)          // on the leader
//	err = g.ReadBarrier(ctx)               // then read g.Store() linearizably
//
// Writes report three outcomes: success, a definite failure (a
// *NotLeaderError: nothing was proposed, retry at the leader), or an error
// wrapping ErrIndeterminate (proposed, outcome unknown: never retry blindly).
//
// Linearizable reads follow the recipe hashicorp/raft lacks: a new leader
// applies a Barrier once per term, so its state machine holds everything
// committed before it took over; then every read waits for a VerifyLeader
// round that began after the read did, shared by all reads waiting at that
// moment.
package raftgroup
