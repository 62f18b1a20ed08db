package raftgroup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// A shared log keeps the Raft logs and stable state of every group of a node
// that uses it in one append-only file, and writes what groups append at the
// same time with one write and one fdatasync (group commit), where a log per
// group syncs once per group and batch.
//
// A write is running or none: what arrives meanwhile waits and goes into the
// next one, so batches grow with the load and a lone append waits for no
// timer. Each group's entries are found through an index in memory, rebuilt
// by reading the file when the node starts.
//
// The file is a sequence of records: a 4-byte length of what follows the
// checksum, a 4-byte CRC-32C of it, a type byte, the group id behind a
// uvarint length, and the type's payload. A record that is cut short or
// fails its checksum ends the log (the tail of a write that a crash cut off,
// never acknowledged); the file is truncated there.
//
// EXPERIMENT: no segment files and no garbage collection yet: the file only
// grows.
type sharedLog struct {
	f *os.File

	mu      sync.Mutex // guards queue, running, groups and recovered
	queue   []*sharedOp
	running bool
	end     int64 // where the next record goes; the commit loop's
	groups  map[string]*sharedGroupLog
	// recovered holds what the file held for groups not opened yet.
	recovered map[string]*sharedGroupLog

	commits, ops uint64 // under mu
}

const (
	recEntries = 1 // count, then each entry behind a uvarint length
	recDelete  = 2 // min, max
	recStable  = 3 // key and value behind uvarint lengths
	recDrop    = 4 // the group is gone
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var errKeyNotFound = errors.New("not found") // hashicorp/raft compares the message

type sharedOp struct {
	rec   []byte
	apply func(off int64) // where rec landed; after the sync, in order
	done  chan error
}

func openSharedLog(path string) (*sharedLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raftgroup: shared log: %w", err)
	}
	l := &sharedLog{f: f, groups: map[string]*sharedGroupLog{}, recovered: map[string]*sharedGroupLog{}}
	if err := l.recover(); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// recover reads every record and truncates a torn tail.
func (l *sharedLog) recover() error {
	data, err := io.ReadAll(io.NewSectionReader(l.f, 0, 1<<62))
	if err != nil {
		return fmt.Errorf("raftgroup: shared log: %w", err)
	}
	var off int64
	for {
		rest := data[off:]
		if len(rest) < 8 {
			break
		}
		n := int64(binary.BigEndian.Uint32(rest))
		if n > int64(len(rest)-8) || crc32.Checksum(rest[8:8+n], crcTable) != binary.BigEndian.Uint32(rest[4:]) {
			break
		}
		if err := l.replay(rest[8:8+n], off); err != nil {
			return err
		}
		off += 8 + n
	}
	if off < int64(len(data)) {
		if err := l.f.Truncate(off); err != nil {
			return fmt.Errorf("raftgroup: shared log: truncate torn tail: %w", err)
		}
	}
	l.end = off
	return nil
}

func (l *sharedLog) replay(body []byte, off int64) error {
	typ, id, payload, err := splitRecord(body)
	if err != nil {
		return err
	}
	if typ == recDrop {
		delete(l.recovered, id)
		return nil
	}
	g := l.recovered[id]
	if g == nil {
		g = &sharedGroupLog{l: l, id: id, stable: map[string][]byte{}}
		l.recovered[id] = g
	}
	return g.applyRecord(typ, payload, off+8+int64(len(body)-len(payload)))
}

func splitRecord(body []byte) (typ byte, id string, payload []byte, err error) {
	if len(body) < 1 {
		return 0, "", nil, errBadLog
	}
	typ = body[0]
	idb, rest, err := lenBytes(body[1:], false)
	if err != nil {
		return 0, "", nil, err
	}
	return typ, string(idb), rest, nil
}

func (l *sharedLog) close() error { return l.f.Close() }

// record frames a record of type typ for group id with payload.
func record(typ byte, id string, payload []byte) []byte {
	b := make([]byte, 8, 8+1+binary.MaxVarintLen64+len(id)+len(payload))
	b = append(b, typ)
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = append(b, payload...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-8))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[8:], crcTable))
	return b
}

// payloadAt is where the payload of a record for id starts, from the
// record's start.
func payloadAt(id string) int64 {
	return int64(8 + 1 + uvarintLen(uint64(len(id))) + len(id))
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

// write appends rec in the next group commit and returns once it is synced
// and apply has run.
func (l *sharedLog) write(rec []byte, apply func(off int64)) error {
	op := &sharedOp{rec: rec, apply: apply, done: make(chan error, 1)}
	l.mu.Lock()
	l.queue = append(l.queue, op)
	start := !l.running
	l.running = true
	l.mu.Unlock()
	if start {
		go l.commitLoop()
	}
	return <-op.done
}

func (l *sharedLog) commitLoop() {
	var buf []byte
	for {
		l.mu.Lock()
		ops := l.queue
		l.queue = nil
		if len(ops) == 0 {
			l.running = false
			l.mu.Unlock()
			return
		}
		l.commits++
		l.ops += uint64(len(ops))
		l.mu.Unlock()
		buf = buf[:0]
		offs := make([]int64, len(ops))
		for i, op := range ops {
			offs[i] = l.end + int64(len(buf))
			buf = append(buf, op.rec...)
		}
		_, err := l.f.WriteAt(buf, l.end)
		if err == nil {
			err = l.f.Sync()
		}
		if err != nil {
			// What was written may be on disk or not: the file is no longer
			// trustworthy past l.end. Cut it back, and fail these writes.
			l.f.Truncate(l.end)
			err = fmt.Errorf("raftgroup: shared log: %w", err)
		} else {
			l.end += int64(len(buf))
		}
		for i, op := range ops {
			if err == nil && op.apply != nil {
				op.apply(offs[i])
			}
			op.done <- err
		}
	}
}

// group returns the log and stable store of group id in l.
func (l *sharedLog) group(id string) (*sharedGroupLog, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.groups[id]; g != nil {
		return g, nil
	}
	g := l.recovered[id]
	delete(l.recovered, id)
	if g == nil {
		g = &sharedGroupLog{l: l, id: id, stable: map[string][]byte{}}
	}
	l.groups[id] = g
	return g, nil
}

// drop forgets group id's log and stable state.
func (l *sharedLog) drop(id string) error {
	err := l.write(record(recDrop, id, nil), nil)
	l.mu.Lock()
	delete(l.groups, id)
	delete(l.recovered, id)
	l.mu.Unlock()
	return err
}

// sharedGroupLog is one group's raft.LogStore and raft.StableStore in a
// shared log.
type sharedGroupLog struct {
	l  *sharedLog
	id string

	mu     sync.RWMutex // guards the fields below
	first  uint64       // index of locs[0]
	locs   []entryLoc
	stable map[string][]byte
}

type entryLoc struct {
	off int64
	n   int32
}

func (g *sharedGroupLog) FirstIndex() (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if len(g.locs) == 0 {
		return 0, nil
	}
	return g.first, nil
}

func (g *sharedGroupLog) LastIndex() (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if len(g.locs) == 0 {
		return 0, nil
	}
	return g.first + uint64(len(g.locs)) - 1, nil
}

func (g *sharedGroupLog) GetLog(index uint64, log *raft.Log) error {
	g.mu.RLock()
	if len(g.locs) == 0 || index < g.first || index >= g.first+uint64(len(g.locs)) {
		g.mu.RUnlock()
		return raft.ErrLogNotFound
	}
	loc := g.locs[index-g.first]
	g.mu.RUnlock()
	b := make([]byte, loc.n)
	if _, err := g.l.f.ReadAt(b, loc.off); err != nil {
		return fmt.Errorf("raftgroup: shared log: read entry %d: %w", index, err)
	}
	return decodeLog(b, log)
}

func (g *sharedGroupLog) StoreLog(log *raft.Log) error {
	return g.StoreLogs([]*raft.Log{log})
}

func (g *sharedGroupLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	payload := binary.AppendUvarint(nil, uint64(len(logs)))
	for _, l := range logs {
		e := encodeLog(l)
		payload = binary.AppendUvarint(payload, uint64(len(e)))
		payload = append(payload, e...)
	}
	rec := record(recEntries, g.id, payload)
	return g.l.write(rec, func(off int64) {
		if err := g.applyRecord(recEntries, payload, off+payloadAt(g.id)); err != nil {
			panic(err) // we just encoded it
		}
	})
}

func (g *sharedGroupLog) DeleteRange(min, max uint64) error {
	payload := binary.BigEndian.AppendUint64(nil, min)
	payload = binary.BigEndian.AppendUint64(payload, max)
	return g.l.write(record(recDelete, g.id, payload), func(int64) {
		g.applyRecord(recDelete, payload, 0)
	})
}

// applyRecord applies a record of g's whose payload starts at file offset
// at.
func (g *sharedGroupLog) applyRecord(typ byte, payload []byte, at int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch typ {
	case recEntries:
		count, k := binary.Uvarint(payload)
		if k <= 0 {
			return errBadLog
		}
		p := k
		for i := uint64(0); i < count; i++ {
			n, k := binary.Uvarint(payload[p:])
			if k <= 0 || uint64(len(payload)-p-k) < n || n < 8 {
				return errBadLog
			}
			p += k
			index := binary.BigEndian.Uint64(payload[p:])
			loc := entryLoc{off: at + int64(p), n: int32(n)}
			p += int(n)
			switch {
			case len(g.locs) == 0:
				g.first, g.locs = index, append(g.locs[:0], loc)
			case index == g.first+uint64(len(g.locs)):
				g.locs = append(g.locs, loc)
			case index >= g.first && index < g.first+uint64(len(g.locs)):
				// raft overwrites only after deleting; keep the newest.
				g.locs = append(g.locs[:index-g.first], loc)
			default:
				return fmt.Errorf("raftgroup: shared log: group %s: entry %d does not follow %d..%d", g.id, index, g.first, g.first+uint64(len(g.locs))-1)
			}
		}
	case recDelete:
		if len(payload) < 16 {
			return errBadLog
		}
		min, max := binary.BigEndian.Uint64(payload), binary.BigEndian.Uint64(payload[8:])
		if len(g.locs) == 0 {
			return nil
		}
		last := g.first + uint64(len(g.locs)) - 1
		switch {
		case min <= g.first && max >= last:
			g.locs = nil
		case min <= g.first && max >= g.first:
			g.locs = append([]entryLoc(nil), g.locs[max-g.first+1:]...)
			g.first = max + 1
		case max >= last && min <= last:
			g.locs = g.locs[:min-g.first]
		}
	case recStable:
		key, rest, err := lenBytes(payload, true)
		if err != nil {
			return err
		}
		val, _, err := lenBytes(rest, true)
		if err != nil {
			return err
		}
		g.stable[string(key)] = val
	default:
		return fmt.Errorf("raftgroup: shared log: record type %d", typ)
	}
	return nil
}

func (g *sharedGroupLog) Set(key, val []byte) error {
	payload := binary.AppendUvarint(nil, uint64(len(key)))
	payload = append(payload, key...)
	payload = binary.AppendUvarint(payload, uint64(len(val)))
	payload = append(payload, val...)
	return g.l.write(record(recStable, g.id, payload), func(int64) {
		g.applyRecord(recStable, payload, 0)
	})
}

func (g *sharedGroupLog) Get(key []byte) ([]byte, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	v, ok := g.stable[string(key)]
	if !ok {
		return nil, errKeyNotFound
	}
	return append([]byte(nil), v...), nil
}

func (g *sharedGroupLog) SetUint64(key []byte, val uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], val)
	return g.Set(key, b[:])
}

func (g *sharedGroupLog) GetUint64(key []byte) (uint64, error) {
	v, err := g.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raftgroup: shared log: stable key %q holds %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Close implements io.Closer; the shared log outlives its groups.
func (g *sharedGroupLog) Close() error { return nil }

// encodeLog is index, term, type, appended-at (Unix ns), then data and
// extensions, each behind a uvarint length.
func encodeLog(l *raft.Log) []byte {
	b := make([]byte, 0, 25+2*binary.MaxVarintLen64+len(l.Data)+len(l.Extensions))
	b = binary.BigEndian.AppendUint64(b, l.Index)
	b = binary.BigEndian.AppendUint64(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	return append(b, l.Extensions...)
}

var errBadLog = errors.New("raftgroup: shared log: malformed record")

func decodeLog(b []byte, l *raft.Log) error {
	if len(b) < 25 {
		return errBadLog
	}
	l.Index = binary.BigEndian.Uint64(b)
	l.Term = binary.BigEndian.Uint64(b[8:])
	l.Type = raft.LogType(b[16])
	l.AppendedAt = time.Time{}
	if at := int64(binary.BigEndian.Uint64(b[17:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	b = b[25:]
	var err error
	if l.Data, b, err = lenBytes(b, true); err != nil {
		return err
	}
	if l.Extensions, _, err = lenBytes(b, true); err != nil {
		return err
	}
	return nil
}

// lenBytes splits a uvarint length and that many bytes off b, copied if
// copied is set.
func lenBytes(b []byte, copied bool) (v, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, errBadLog
	}
	b = b[k:]
	if n == 0 {
		return nil, b, nil
	}
	if !copied {
		return b[:n], b[n:], nil
	}
	return append([]byte(nil), b[:n]...), b[n:], nil
}
