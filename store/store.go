package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketKV   = []byte("kv")
	bucketMeta = []byte("meta")
	keyApplied = []byte("applied")
	keyBase    = []byte("base")  // version base: versions are base + index
	keyFence   = []byte("fence") // 100 bytes: 1 for a shard moved away
)

// ErrClosed is returned by reads on a closed store.
var ErrClosed = errors.New("store: closed")

// Options tune a Store. The zero value is usable.
type Options struct {
	// InitialMmapSize is bbolt's initial memory map size in bytes. A large map
	// keeps a long snapshot read from stalling writes on remap. Default 64 MiB
	// (address space, not memory).
	InitialMmapSize int
	// OnApply, if set, is called after each applied batch with the highest
	// index applied. It runs on the Raft apply goroutine and must not block.
	OnApply func(index uint64)
	// ChangeLogCount and ChangeLogAge bound the change log: the oldest
	// records go once the log holds more than ChangeLogCount changes
	// (default 100000) or they are older than ChangeLogAge (0: no age
	// limit).
	ChangeLogCount int
	ChangeLogAge   time.Duration
	// NoSync commits applied batches without fsync. Only for a state
	// machine whose entries are durable elsewhere (the Raft log) and can be
	// replayed: a process crash loses nothing (the page cache survives it),
	// and after a machine crash, which could leave the file torn, Open
	// discards the file (see Discarded) so that it is rebuilt from the
	// newest snapshot and the log. Ignored where the boot id is unknown.
	NoSync bool
	// CommitDelay (NoSync stores only) lets applied batches gather in one
	// open write transaction for up to this long before it commits, so
	// that bbolt writes a page touched by many batches once. Anything else
	// that needs the database (a read, a snapshot, a close) commits what
	// waits first; a read of one key is served from the open transaction.
	// A process crash loses only commits, never entries: the applied index
	// commits with the data, and Raft replays the log after it. 0 commits
	// every batch.
	CommitDelay time.Duration
}

// commitEntries bounds the commands an open write transaction gathers
// before it commits, whatever CommitDelay says; a batch entry counts as
// many as it carries.
const commitEntries = 4096

// Store is a bbolt-backed state machine. Apply, ApplyBatch, Snapshot and
// Restore are called by hashicorp/raft from its FSM goroutine, one at a
// time; reads (Get, Range, AppliedIndex) may be called concurrently with them
// and with each other.
type Store struct {
	path string
	opts Options

	mu     sync.RWMutex // guards db; held for reading by every read transaction
	db     *bolt.DB     // nil once closed
	closed bool

	applied atomic.Uint64 // last applied Raft index (committed, or waiting in wtx)
	base    atomic.Uint64 // version base, as persisted
	fence   atomic.Pointer[[100]bool]

	// Discarded is set when Open found the file possibly torn by a machine
	// crash (NoSync) and started from an empty state instead.
	Discarded bool

	// Deferred commits (Options.CommitDelay): applied batches not yet
	// committed wait in wtx. Lock order: mu, then wmu.
	wmu    sync.Mutex // guards wtx, wn and wtimer
	wtx    *bolt.Tx   // open write transaction with applied batches; nil: none
	wn     int        // entries applied in wtx
	wtimer *time.Timer

	applyMu    sync.Mutex // guards waiters
	appliedCh  chan struct{}
	lastCommit atomic.Int64 // unix nanos of the last applied batch, for lag reporting
}

var (
	_ raft.FSM         = (*Store)(nil)
	_ raft.BatchingFSM = (*Store)(nil)
)

// Open opens (or creates) the state machine database at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.InitialMmapSize == 0 {
		opts.InitialMmapSize = 64 << 20
	}
	if opts.ChangeLogCount <= 0 {
		opts.ChangeLogCount = 100_000
	}
	s := &Store{path: path, opts: opts, appliedCh: make(chan struct{})}
	if !opts.NoSync {
		s.opts.CommitDelay = 0 // every batch is synced, so committed, before it is answered
	}
	if opts.NoSync {
		boot := bootID()
		if boot == "" {
			s.opts.NoSync, s.opts.CommitDelay = false, 0
		} else {
			discard, err := checkMarker(path, boot)
			if err != nil {
				return nil, err
			}
			if discard {
				if err := os.Rename(path, path+".torn"); err != nil {
					return nil, fmt.Errorf("store: discard %s: %w", path, err)
				}
				s.Discarded = true
			}
			if err := writeMarker(path, boot, false); err != nil {
				return nil, err
			}
		}
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// bootIDPath names this boot of the machine; it changes at every boot.
var bootIDPath = "/proc/sys/kernel/random/boot_id"

func bootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// The marker file next to a NoSync database records the boot it was last
// opened in and whether it was closed cleanly (synced). A file left open at
// a machine crash may have pages written out of order, so it is not trusted.
func markerPath(path string) string { return path + ".boot" }

// checkMarker reports whether the database at path must be discarded: it
// exists, was not closed cleanly, and the machine has rebooted since.
func checkMarker(path, boot string) (bool, error) {
	if _, err := os.Stat(path); err != nil {
		return false, nil // nothing to discard
	}
	b, err := os.ReadFile(markerPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // written with fsync: nothing to distrust
	}
	if err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) == 2 && (fields[1] == "clean" || fields[0] == boot) {
		return false, nil
	}
	return true, nil
}

func writeMarker(path, boot string, clean bool) error {
	state := "open"
	if clean {
		state = "clean"
	}
	tmp := markerPath(path) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("store: marker: %w", err)
	}
	_, err = fmt.Fprintf(f, "%s %s\n", boot, state)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, markerPath(path))
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("store: marker: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *Store) open() error {
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{
		Timeout:         5 * time.Second,
		InitialMmapSize: s.opts.InitialMmapSize,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		NoSync:          s.opts.NoSync,
	})
	if err != nil {
		return fmt.Errorf("store: open %s: %w", s.path, err)
	}
	var applied, base uint64
	var fence [100]bool
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketKV, bucketMeta, bucketChanges} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyApplied); len(v) == 8 {
			applied = binary.BigEndian.Uint64(v)
		}
		if v := meta.Get(keyBase); len(v) == 8 {
			base = binary.BigEndian.Uint64(v)
		}
		if v := meta.Get(keyFence); len(v) == 100 {
			for i, b := range v {
				fence[i] = b == 1
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("store: init %s: %w", s.path, err)
	}
	s.db = db
	s.applied.Store(applied)
	s.base.Store(base)
	s.fence.Store(&fence)
	return nil
}

// Fenced reports whether shard has moved to another group: its keys here
// must be neither read nor written.
func (s *Store) Fenced(shard int) bool {
	f := s.fence.Load()
	return f != nil && shard >= 0 && shard < 100 && f[shard]
}

// VersionBase returns the offset added to Raft indexes to make versions (0
// unless the group was born of a split).
func (s *Store) VersionBase() uint64 { return s.base.Load() }

// Close closes the database. It is safe to call more than once.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.commitPending()
	var err error
	if s.opts.NoSync {
		err = s.db.Sync()
	}
	err = errors.Join(err, s.db.Close())
	s.db = nil
	if s.opts.NoSync && err == nil {
		err = writeMarker(s.path, bootID(), true)
	}
	return err
}

// AppliedIndex returns the index of the last Raft entry applied.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// LastApplyTime returns when the last batch was applied (zero if never since
// open).
func (s *Store) LastApplyTime() time.Time {
	n := s.lastCommit.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// AppliedChan returns a channel closed at the next applied batch. Together
// with AppliedIndex it lets a caller wait for an index without polling.
func (s *Store) AppliedChan() <-chan struct{} {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	return s.appliedCh
}

func (s *Store) notifyApplied(index uint64) {
	s.lastCommit.Store(time.Now().UnixNano())
	s.applyMu.Lock()
	close(s.appliedCh)
	s.appliedCh = make(chan struct{})
	s.applyMu.Unlock()
	if s.opts.OnApply != nil {
		s.opts.OnApply(index)
	}
}

// Apply applies one log entry. See ApplyBatch.
func (s *Store) Apply(l *raft.Log) interface{} {
	return s.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in one bbolt transaction, together with
// the new applied index (with a CommitDelay, a transaction that later
// batches may join before it commits). Entries at or below the applied index
// are skipped (they are replays after a restart). For each command entry the
// response is a *Result, or an error if the entry could not be decoded.
func (s *Store) ApplyBatch(logs []*raft.Log) []interface{} {
	resp := make([]interface{}, len(logs))
	applied := s.applied.Load()
	last := applied
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		for i := range resp {
			resp[i] = ErrClosed
		}
		return resp
	}
	base, fence := s.base.Load(), *s.fence.Load()
	now := time.Now()
	apply := func(tx *bolt.Tx) error {
		kv, meta := tx.Bucket(bucketKV), tx.Bucket(bucketMeta)
		for i, l := range logs {
			if l.Index <= applied {
				continue
			}
			last = l.Index
			if l.Type != raft.LogCommand {
				continue
			}
			var changes []Change
			record := func() error {
				if len(changes) == 0 {
					return nil
				}
				at := l.AppendedAt
				if at.IsZero() {
					at = now
				}
				return s.logChanges(tx, &ChangeRecord{Index: l.Index, Time: at, Changes: changes}, now)
			}
			if len(l.Data) > 0 && l.Data[0] == encodingAdmin {
				a, err := DecodeAdmin(l.Data)
				if err == nil {
					err = applicableAdmin(a, &fence)
				}
				if err != nil {
					resp[i] = err
					continue
				}
				r, err := s.admin(kv, meta, a, l.Index, &base, &fence, &changes)
				if err != nil {
					return err
				}
				if err := record(); err != nil {
					return err
				}
				resp[i] = r
				continue
			}
			if len(l.Data) > 0 && l.Data[0] == encodingBatch {
				cmds, err := decodeBatch(l.Data)
				if err != nil {
					resp[i] = err
					continue
				}
				br := make(BatchResult, len(cmds))
				for j, b := range cmds {
					if br[j], err = applyCommand(kv, b, base+l.Index, &fence, &changes); err != nil {
						return err
					}
				}
				if err := record(); err != nil {
					return err
				}
				resp[i] = br
				continue
			}
			r, err := applyCommand(kv, l.Data, base+l.Index, &fence, &changes)
			if err != nil {
				return err
			}
			if err := record(); err != nil {
				return err
			}
			resp[i] = r
		}
		if last == applied {
			return nil
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], last)
		return meta.Put(keyApplied, b[:])
	}
	s.applyInTx(apply, commandCount(logs))
	if last != applied {
		s.base.Store(base)
		s.fence.Store(&fence)
		s.applied.Store(last)
		s.notifyApplied(last)
	}
	return resp
}

// applyCommand applies one command in its binary form at version index. It
// returns what the command's proposer gets (a *Result, or the error that
// refused the command), and an error only when the transaction failed.
func applyCommand(kv *bolt.Bucket, b []byte, index uint64, fence *[100]bool, changes *[]Change) (interface{}, error) {
	cmd, err := DecodeCommand(b)
	if err == nil {
		err = checkWrites(cmd)
	}
	if err != nil {
		return err, nil
	}
	if shard, moved := touchesFence(cmd, fence); moved {
		return &MovedError{Shard: shard}, nil
	}
	r, err := execute(kv, cmd, index, changes)
	if err != nil {
		return nil, err
	}
	r.Index = index
	return r, nil
}

// applicableAdmin reports why a decoded admin command cannot apply on
// top of the current fence, if it cannot: it fails Validate, or it purges
// a shard that is not fenced (a purge deletes moved keys only, never the
// live keys of a shard this group still serves). The fence is replicated
// state, so every replica answers the same.
func applicableAdmin(a *Admin, fence *[100]bool) error {
	if err := a.Validate(); err != nil {
		return err
	}
	if a.Kind == AdminPurge {
		for _, sh := range a.Shards {
			if !fence[sh] {
				return fmt.Errorf("%w: purge of shard %02d, which is not fenced", ErrBadCommand, sh)
			}
		}
	}
	return nil
}

// applyFailed stops the process: a failed bbolt write (disk full, I/O
// error) leaves this replica unable to follow the log, and continuing would
// diverge it from its peers, so stop here as etcd and rqlite do.
//
// It is kept for faults of the disk only. What a command asks for is
// checked before anything is written (checkWrites, applicableAdmin): a
// command bbolt would refuse is answered with ErrBadCommand, identically on
// every replica, and the applied index moves past it. So an error that
// still reaches here comes from the file, not from the entry, and a
// restart on a healthy disk applies the same entry fine; a crash loop here
// means a sick disk (and the replica is to be rebuilt), never a poison
// pill.
func (s *Store) applyFailed(err error) {
	panic(fmt.Sprintf("store: apply to %s failed: %v", s.path, err))
}

// applyInTx runs apply, which applies n entries, in the open write
// transaction (beginning one if none is open), then commits it unless it
// may wait for later batches. The caller holds mu with db open.
func (s *Store) applyInTx(apply func(tx *bolt.Tx) error, n int) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wtx == nil {
		tx, err := s.db.Begin(true)
		if err != nil {
			s.applyFailed(err)
		}
		s.wtx = tx
		if s.opts.CommitDelay > 0 {
			if s.wtimer == nil {
				s.wtimer = time.AfterFunc(s.opts.CommitDelay, s.commitLater)
			} else {
				s.wtimer.Reset(s.opts.CommitDelay)
			}
		}
	}
	if err := apply(s.wtx); err != nil {
		s.wtx.Rollback()
		s.wtx, s.wn = nil, 0
		s.applyFailed(err)
	}
	s.wn += n
	if s.opts.CommitDelay <= 0 || s.wn >= commitEntries {
		s.commitLocked()
	}
}

// commitPending commits the batches waiting in the open write transaction,
// if any. The caller holds mu (for reading at least) with db open.
func (s *Store) commitPending() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.commitLocked()
}

// commitLocked is commitPending with wmu held.
func (s *Store) commitLocked() {
	if s.wtx == nil {
		return
	}
	tx := s.wtx
	s.wtx, s.wn = nil, 0
	if err := tx.Commit(); err != nil {
		s.applyFailed(err)
	}
}

// commitLater is CommitDelay's timer.
func (s *Store) commitLater() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db != nil {
		s.commitPending()
	}
}

// update runs fn in a write transaction of its own, after the pending
// batches commit. The caller holds mu with db open.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	s.commitPending()
	return s.db.Update(fn)
}

// touchesFence reports the first fenced shard a command touches.
func touchesFence(cmd *Command, fence *[100]bool) (int, bool) {
	check := func(k []byte) (int, bool) {
		if sh := ShardOf(k); sh >= 0 && fence[sh] {
			return sh, true
		}
		return 0, false
	}
	for _, c := range cmd.Compares {
		if sh, ok := check(c.Key); ok {
			return sh, true
		}
	}
	for _, ops := range [][]Op{cmd.Then, cmd.Else} {
		for _, op := range ops {
			if sh, ok := check(op.Key); ok {
				return sh, true
			}
		}
	}
	return 0, false
}

// admin applies an admin command inside the batch's transaction.
func (s *Store) admin(kv, meta *bolt.Bucket, a *Admin, index uint64, base *uint64, fence *[100]bool, changes *[]Change) (*Result, error) {
	switch a.Kind {
	case AdminFence:
		for _, sh := range a.Shards {
			fence[sh] = true
		}
		var b [100]byte
		for i, f := range fence {
			if f {
				b[i] = 1
			}
		}
		if err := meta.Put(keyFence, b[:]); err != nil {
			return nil, err
		}
	case AdminIngest:
		if *base == 0 && a.Base > 0 {
			*base = a.Base
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], a.Base)
			if err := meta.Put(keyBase, b[:]); err != nil {
				return nil, err
			}
		}
		for _, e := range a.KVs {
			v := make([]byte, 8+len(e.Value))
			binary.BigEndian.PutUint64(v, e.Version)
			copy(v[8:], e.Value)
			if err := kv.Put(e.Key, v); err != nil {
				return nil, err
			}
			*changes = append(*changes, Change{Op: ChangePut, Key: e.Key, Value: e.Value, Version: e.Version})
		}
	case AdminPurge:
		purge := map[int]bool{}
		for _, sh := range a.Shards {
			purge[sh] = true
		}
		c := kv.Cursor()
		for k, _ := c.Seek([]byte{spaceUser}); k != nil && k[0] == spaceUser; {
			if purge[ShardOf(k)] {
				next := bytes.Clone(k) // k is invalid once deleted
				*changes = append(*changes, Change{Op: ChangeDelete, Key: next})
				if err := c.Delete(); err != nil {
					return nil, err
				}
				k, _ = c.Seek(next)
				continue
			}
			k, _ = c.Next()
		}
	}
	return &Result{Index: *base + index, Succeeded: true}, nil
}

// execute runs cmd against the kv bucket at index.
func execute(kv *bolt.Bucket, cmd *Command, index uint64, changes *[]Change) (*Result, error) {
	r := &Result{Index: index, Succeeded: true}
	for _, c := range cmd.Compares {
		if !compare(kv, c) {
			r.Succeeded = false
			break
		}
	}
	ops := cmd.Then
	if !r.Succeeded {
		ops = cmd.Else
	}
	r.Ops = make([]OpResult, len(ops))
	for i, op := range ops {
		var cur []byte
		if op.Type != OpPut { // a put's answer does not depend on what it replaces
			cur = kv.Get(op.Key)
		}
		var res OpResult
		if cur != nil {
			res.Found = true
			res.Version = binary.BigEndian.Uint64(cur[:8])
		}
		switch op.Type {
		case OpGet:
			if cur != nil {
				res.Value = bytes.Clone(cur[8:])
			}
		case OpPut:
			v := make([]byte, 8+len(op.Value))
			binary.BigEndian.PutUint64(v, index)
			copy(v[8:], op.Value)
			if err := kv.Put(op.Key, v); err != nil {
				return nil, err
			}
			res.Found, res.Version = true, index
			*changes = append(*changes, Change{Op: ChangePut, Key: op.Key, Value: op.Value, Version: index})
		case OpDelete:
			if cur != nil {
				*changes = append(*changes, Change{Op: ChangeDelete, Key: op.Key, Version: res.Version})
				if err := kv.Delete(op.Key); err != nil {
					return nil, err
				}
			}
		}
		r.Ops[i] = res
	}
	return r, nil
}

func compare(kv *bolt.Bucket, c Compare) bool {
	cur := kv.Get(c.Key)
	switch c.Target {
	case TargetVersion:
		var v uint64
		if cur != nil {
			v = binary.BigEndian.Uint64(cur[:8])
		}
		return relate(cmpUint(v, c.Version), c.Op)
	case TargetValue:
		if cur == nil {
			return false
		}
		return relate(bytes.Compare(cur[8:], c.Value), c.Op)
	}
	return false
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func relate(c int, op CmpOp) bool {
	switch op {
	case CmpEqual:
		return c == 0
	case CmpNotEqual:
		return c != 0
	case CmpLess:
		return c < 0
	case CmpGreater:
		return c > 0
	}
	return false
}

// KV is one key with its value and version, as read from the store. Key is
// the stored key (with its key-space prefix).
type KV struct {
	Key     []byte
	Value   []byte
	Version uint64
}

// view runs fn in a read transaction that sees every applied batch.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	s.commitPending()
	return s.db.View(fn)
}

// Get returns the value and version of key, and whether it exists.
func (s *Store) Get(key []byte) (KV, bool, error) {
	kv, found, _, err := s.GetAt(key)
	return kv, found, err
}

// Range returns up to limit keys starting with prefix, in key order, starting
// after the key after (if not nil), and whether more keys follow.
func (s *Store) Range(prefix, after []byte, limit int) ([]KV, bool, error) {
	kvs, more, _, err := s.RangeAt(prefix, after, limit)
	return kvs, more, err
}

// RangeAt is Range, also returning the applied index the read is
// consistent with (one transaction).
func (s *Store) RangeAt(prefix, after []byte, limit int) ([]KV, bool, uint64, error) {
	var out []KV
	more := false
	var applied uint64
	err := s.view(func(tx *bolt.Tx) error {
		applied = u64(tx.Bucket(bucketMeta).Get(keyApplied))
		c := tx.Bucket(bucketKV).Cursor()
		k, v := c.Seek(prefix)
		if after != nil && bytes.Compare(after, prefix) >= 0 {
			k, v = c.Seek(after)
			if bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if limit > 0 && len(out) == limit {
				more = true
				break
			}
			out = append(out, KV{Key: bytes.Clone(k), Value: bytes.Clone(v[8:]), Version: binary.BigEndian.Uint64(v[:8])})
		}
		return nil
	})
	return out, more, applied, err
}

// ScanShards returns up to limit user keys of the given shards, in key
// order, after the key after (nil: from the start), and whether more follow.
func (s *Store) ScanShards(shards map[int]bool, after []byte, limit int) ([]KV, bool, error) {
	var out []KV
	more := false
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketKV).Cursor()
		k, v := c.Seek([]byte{spaceUser})
		if after != nil {
			k, v = c.Seek(after)
			if bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		for ; k != nil && k[0] == spaceUser; k, v = c.Next() {
			if !shards[ShardOf(k)] {
				continue
			}
			if len(out) == limit {
				more = true
				break
			}
			out = append(out, KV{Key: bytes.Clone(k), Value: bytes.Clone(v[8:]), Version: binary.BigEndian.Uint64(v[:8])})
		}
		return nil
	})
	return out, more, err
}

// Digest returns the applied index and a hash-free digest of the whole
// contents: every key, version and value in order, for comparing replicas.
// It is meant for tests and checkers.
func (s *Store) Digest(w io.Writer) (uint64, error) {
	var applied uint64
	err := s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyApplied); len(v) == 8 {
			applied = binary.BigEndian.Uint64(v)
		}
		return tx.Bucket(bucketKV).ForEach(func(k, v []byte) error {
			var hdr [binary.MaxVarintLen64 * 2]byte
			n := binary.PutUvarint(hdr[:], uint64(len(k)))
			n += binary.PutUvarint(hdr[n:], uint64(len(v)))
			if _, err := w.Write(hdr[:n]); err != nil {
				return err
			}
			if _, err := w.Write(k); err != nil {
				return err
			}
			_, err := w.Write(v)
			return err
		})
	})
	return applied, err
}

// Snapshot starts a bbolt read transaction: the snapshot is the database as of
// this moment, written out by Persist while applies go on.
func (s *Store) Snapshot() (raft.FSMSnapshot, error) {
	s.mu.RLock()
	if s.db == nil {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	s.commitPending()
	tx, err := s.db.Begin(false)
	if err != nil {
		s.mu.RUnlock()
		return nil, fmt.Errorf("store: snapshot: %w", err)
	}
	return &snapshot{tx: tx, unlock: s.mu.RUnlock}, nil
}

type snapshot struct {
	tx     *bolt.Tx
	unlock func()
	once   sync.Once
}

func (sn *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sn.tx.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("store: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (sn *snapshot) Release() {
	sn.once.Do(func() {
		sn.tx.Rollback()
		sn.unlock()
	})
}

// Restore replaces the database with the snapshot in rc: it is written to a
// temporary file, checked, and renamed over the live file.
func (s *Store) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := s.path + ".restore"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("store: restore: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("store: restore: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: restore: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		os.Remove(tmp)
		return ErrClosed
	}
	s.commitPending() // should the rename fail, the old file goes on with all it applied
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: restore: close: %w", err)
	}
	s.db = nil
	if err := os.Rename(tmp, s.path); err != nil {
		// Reopen what we had so the replica stays readable.
		if oerr := s.open(); oerr != nil {
			return errors.Join(err, oerr)
		}
		return fmt.Errorf("store: restore: %w", err)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		d.Sync() // make the rename durable
		d.Close()
	}
	if err := s.open(); err != nil {
		return err
	}
	s.notifyApplied(s.applied.Load())
	return nil
}

// GetAt returns key like Get, together with the applied index the read is
// consistent with (both from one transaction).
// With batches waiting to commit, it reads them in their open transaction
// rather than commit them.
func (s *Store) GetAt(key []byte) (KV, bool, uint64, error) {
	var kv KV
	var found bool
	var applied uint64
	get := func(tx *bolt.Tx) error {
		applied = u64(tx.Bucket(bucketMeta).Get(keyApplied))
		v := tx.Bucket(bucketKV).Get(key)
		if v == nil {
			return nil
		}
		found = true
		kv = KV{Key: bytes.Clone(key), Value: bytes.Clone(v[8:]), Version: binary.BigEndian.Uint64(v[:8])}
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return kv, false, 0, ErrClosed
	}
	s.wmu.Lock()
	if s.wtx != nil {
		err := get(s.wtx)
		s.wmu.Unlock()
		return kv, found, applied, err
	}
	// Everything applied so far is committed: a read transaction begun
	// after this point sees it.
	s.wmu.Unlock()
	err := s.db.View(get)
	return kv, found, applied, err
}
