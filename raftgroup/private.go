package raftgroup

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A node's files hold every key of its groups: they are the node's alone.
// Directories are 0700 and files 0600, so that another local user can
// neither list nor read them.

// privateDir creates dir and its missing parents 0700, and makes dir 0700
// if it existed with a wider mode (an older version made them 0755).
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("raftgroup: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("raftgroup: %w", err)
	}
	return nil
}

// privateTree makes every directory under root 0700 and every file 0600.
func privateTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		if fi, err := d.Info(); err == nil && fi.Mode().Perm() == mode {
			return nil
		}
		return os.Chmod(p, mode)
	})
}

// privateSnapshots is raft's FileSnapshotStore with its files 0600 and
// directories 0700. raft creates them 0755 and 0644 (os.Create, MkdirAll)
// and has no option for it, so each snapshot is narrowed when its sink
// closes; while it is being written it lies inside the group's snapshots
// directory, which is 0700 from the start, so no other user can reach it
// even then.
type privateSnapshots struct {
	*raft.FileSnapshotStore
	dir string // the store's snapshots directory
}

var _ raft.SnapshotStore = privateSnapshots{}

// newPrivateSnapshots opens raft's file snapshot store under dir (in
// dir/snapshots) and narrows what an older version left there.
func newPrivateSnapshots(dir string, retain int, logger hclog.Logger) (privateSnapshots, error) {
	snapDir := filepath.Join(dir, "snapshots")
	if err := privateDir(snapDir); err != nil {
		return privateSnapshots{}, err
	}
	fss, err := raft.NewFileSnapshotStoreWithLogger(dir, retain, logger)
	if err != nil {
		return privateSnapshots{}, err
	}
	if err := privateTree(snapDir); err != nil {
		return privateSnapshots{}, fmt.Errorf("raftgroup: snapshot file modes: %w", err)
	}
	return privateSnapshots{FileSnapshotStore: fss, dir: snapDir}, nil
}

func (s privateSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration, configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &privateSink{SnapshotSink: sink, dir: s.dir}, nil
}

// privateSink narrows the snapshot's files once raft has written them.
type privateSink struct {
	raft.SnapshotSink
	dir string
}

func (k *privateSink) Close() error {
	if err := k.SnapshotSink.Close(); err != nil {
		return err
	}
	if err := privateTree(k.dir); err != nil {
		return fmt.Errorf("raftgroup: snapshot file modes: %w", err)
	}
	return nil
}
