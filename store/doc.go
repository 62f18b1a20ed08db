// Package store is the replicated state machine of one Raft group: a bbolt
// database holding keys, their values and versions, and the index of the last
// applied Raft entry.
//
// Every change is a Command: a list of comparisons and two branches of
// operations (then, else), applied atomically. A plain put is a command
// with no comparison; compare-and-set on a version is a command comparing one
// key's version. A key's version is the Raft index of the entry that last
// wrote it, like etcd's mod_revision.
//
// The applied index is written in the same bbolt transaction as the data it
// covers, so after a crash the store knows exactly what it holds and skips
// log entries that hashicorp/raft replays on restart (use it with
// raft.Config.NoSnapshotRestoreOnStart).
//
// Store implements raft.FSM and raft.BatchingFSM: one bbolt transaction, and
// so one fsync, per batch of committed entries. A store that does not sync
// (the Raft log is its durability) may let batches gather in one open
// transaction for Options.CommitDelay; reads see them at once.
//
//	s, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
//	...
//	r, err := raft.NewRaft(conf, s, logs, stable, snaps, trans)
//	...
//	v, err := s.Get(store.UserKey(42, []byte("balance")))
package store
