// Package sharedlog keeps the Raft logs and stable stores of every group of
// a node in one sequence of append-only segment files, written with one
// write and one fsync for what the groups append at the same time.
//
//	l, err := sharedlog.Open(dir, sharedlog.DefaultSegmentSize)
//	g, err := l.Group("users-0") // a raft.LogStore and raft.StableStore
//	...
//	err = l.Drop("users-0")      // a group removed for good
//	err = l.Close()
//
// It touches files only through a small seam (logFS), so that the tests
// can crash it after any file operation and lose or tear what was not
// synced. Its fault model: a crash keeps what was synced and loses or tears
// the rest, and opening cuts off only the torn tail of the last write; data
// that was synced and is damaged fails the open with a *CorruptionError
// (errors.Is ErrCorrupt) naming the file and offset; a failed write or
// fsync stops the log for good (ErrFailed, Err), since after a failed
// fsync the page cache is not trusted. raftgroup/DESIGN.md says more.
package sharedlog
