package raftgroup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	bolt "go.etcd.io/bbolt"
)

// The log stores a group's Raft log and stable state may live in.
const (
	// LogWAL is hashicorp/raft-wal: append-only segment files per group,
	// one fsync per appended batch.
	LogWAL = "wal"
	// LogBolt is hashicorp/raft-boltdb/v2: a bbolt file, two fsyncs per
	// appended batch (pages, then meta).
	LogBolt = "bolt"
	// LogShared keeps the log in the node's shared log (package sharedlog):
	// segment files for every such group, one write and one fsync for
	// what they append at the same time. The default.
	LogShared = "shared"
)

// sharedMarker in a group's directory says its log is in the shared log.
const sharedMarker = "log-shared"

// walSegmentSize is the size of one WAL segment file. raft-wal preallocates
// each segment, so the default of 64 MiB would cost 6.4 GiB of disk on a
// node of 100 groups; a group keeps about TrailingLogs entries, a few MiB.
const walSegmentSize = 4 << 20

type logStore interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

// openLogStore opens the log of the group in dir. A group keeps the kind it
// was created with: an existing raft.db stays a bbolt log, an existing wal/
// directory stays a WAL, and a new group gets kind.
func openLogStore(h *Host, id, dir, kind string, logger hclog.Logger) (logStore, error) {
	boltPath := filepath.Join(dir, "raft.db")
	walDir := filepath.Join(dir, "wal")
	marker := filepath.Join(dir, sharedMarker)
	if _, err := os.Stat(boltPath); err == nil {
		kind = LogBolt
	} else if _, err := os.Stat(walDir); err == nil {
		kind = LogWAL
	} else if _, err := os.Stat(marker); err == nil {
		kind = LogShared
	}
	switch kind {
	case LogShared, "":
		l, err := h.sharedLog()
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(marker); err != nil {
			// A new group: whatever an earlier group of this id left in
			// the shared log (its drop may have failed) is not its. The
			// marker is synced before the group writes anything: lost
			// in a crash, it would make the group new again, and drop
			// its log and its vote.
			if err := l.Drop(id); err != nil {
				return nil, err
			}
			if err := os.WriteFile(marker, nil, 0o600); err != nil {
				return nil, fmt.Errorf("raftgroup: log store: %w", err)
			}
			if err := syncDir(dir); err != nil {
				return nil, err
			}
			if err := syncDir(filepath.Dir(dir)); err != nil {
				return nil, err
			}
		}
		return l.Group(id)
	case LogBolt:
		s, err := raftboltdb.New(raftboltdb.Options{Path: boltPath, BoltOptions: &bolt.Options{
			NoFreelistSync: true,
			FreelistType:   bolt.FreelistMapType,
		}})
		if err != nil {
			return nil, fmt.Errorf("raftgroup: log store: %w", err)
		}
		return s, nil
	case LogWAL:
		if err := os.MkdirAll(walDir, 0o700); err != nil {
			return nil, fmt.Errorf("raftgroup: log store: %w", err)
		}
		meta := &metadb.BoltMetaDB{}
		w, err := wal.Open(walDir, wal.WithSegmentSize(walSegmentSize), wal.WithLogger(logger), wal.WithMetaStore(meta))
		if err != nil {
			meta.Close()
			return nil, fmt.Errorf("raftgroup: log store: %w", err)
		}
		return &walStore{WAL: w, meta: meta}, nil
	default:
		return nil, errors.New("raftgroup: log store must be " + LogWAL + ", " + LogBolt + " or " + LogShared)
	}
}

// walStore closes the WAL's metadata database too: raft-wal v0.4.0's Close
// leaves it open, and its file lock would block the group's next open
// forever.
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

func (w *walStore) Close() error {
	return errors.Join(w.WAL.Close(), w.meta.Close())
}

// syncDir makes the names in dir durable: what was created, renamed or
// removed in it.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("raftgroup: sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("raftgroup: sync directory %s: %w", dir, err)
	}
	return nil
}
