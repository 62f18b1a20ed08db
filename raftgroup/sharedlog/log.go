package sharedlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Log, a shared log, keeps the Raft logs and stable state of every group of
// a node that uses it in one sequence of append-only segment files, and writes what
// groups append at the same time with one write and one fsync (group
// commit), where a log per group syncs once per group and batch.
//
// A write is running or none: what arrives meanwhile waits and goes into the
// next one, so batches grow with the load and a lone append waits for no
// timer. Each group's entries are found through an index in memory, rebuilt
// by reading the segments when the node starts.
//
// A segment is a sequence of records: a 4-byte length of what follows the
// checksum, a 4-byte CRC-32C of it, a type byte, the group id behind a
// uvarint length, and the type's payload. Each write is one batch: a
// header record (its segment, offset and length) and the records it
// carries, replayed whole or not at all. A batch of the last segment that
// is cut short or fails a checksum, with no intact batch header after it,
// ends the log (the tail of a write that a crash cut off, never
// acknowledged); the file is truncated there. Anything else that is
// damaged is corruption, and opening fails with a *CorruptionError
// (replaySegment says why this is sound).
//
// Segment files are written into space already allocated and zeroed where
// possible: an fsync that must also record a file's new size and newly
// allocated blocks cost this machine's ext4 about 110-135 µs of CPU, one
// into blocks already written about 47 µs (and half the wait). Once the
// active segment is half full, a spare segment of zeros is written and
// synced in the background (spareName), and the next rotation renames it
// into place. A segment made without one (the first, or when rotation
// outruns the spare) is allocated with fallocate where the system has it.
// Zeros past the last record read as a torn tail (below), so a crash
// anywhere leaves a log that opens; a clean close cuts the active
// segment's unused tail off.
//
// Segments are recycled oldest first. When the active segment is full, a new
// one begins with every group's stable state, and with the live entries of
// the idle groups (none of their entries in the segment just filled) whose
// oldest entry is in a segment more than keepSegments old (an idle group
// would otherwise pin every segment after its own; a busy one's old entries
// go when raft compacts its log after a snapshot). Then the
// segments older than every group's oldest live entry are deleted. Since
// deletion is oldest first, a record that deletes entries always outlives
// them, and replay from the first segment left gives the same logs.
type Log struct {
	fs      logFS // the only way it touches files
	dir     string
	segSize int64

	mu      sync.Mutex // guards queue, running, failed, groups and recovered
	queue   []*writeOp
	running bool
	// failed is set once a write, an fsync or a rotation failed (wrapping
	// ErrFailed and the cause), and never cleared: see fail.
	failed error
	groups map[string]*GroupLog
	// recovered holds what the segments held for groups not opened yet.
	recovered map[string]*GroupLog

	// segMu guards segs; reads hold it for reading across the read, so a
	// segment is never closed under one.
	segMu sync.RWMutex
	segs  map[uint64]logFile
	// The commit loop's (and recovery's): the active segment and where
	// the next record goes in it.
	active uint64
	end    int64

	spareMu   sync.Mutex // guards spare, preparing and closed
	spare     logFile    // a zero-filled segment at spareName, ready for the next rotation
	preparing bool
	closed    bool
	stop      chan struct{} // closed by close: a spare being written stops
	spareWG   sync.WaitGroup
	opened    bool // recovery succeeded: close may trim the active segment
	// syncSpare (tests) writes the spare on the commit loop, so that a
	// run's file operations come in an order its script fixes.
	syncSpare bool
}

// spareName is the next segment being prepared; not a "*.seg" name, so a
// crash that leaves one behind leaves no segment that is not one.
const spareName = "spare.tmp"

// DefaultSegmentSize is the size of a segment file a node uses.
const DefaultSegmentSize = 64 << 20

// Groups whose oldest entry is more than keepSegments segments old are
// copied forward.
const keepSegments = 3

const (
	recEntries = 1 // count, then each entry behind a uvarint length
	recDelete  = 2 // min, max
	recStable  = 3 // key and value behind uvarint lengths
	recDrop    = 4 // the group is gone
	// recReplace is a group's whole state, which replaces what it had: its
	// stable values (a count, then keys and values behind uvarint
	// lengths), then its entries as in recEntries. The copy-forward writes
	// it: one record, so a crash leaves the group as it was or as it is
	// after, never dropped and not yet written again (two records, a
	// delete and the entries, lost a group's log to a crash between them).
	recReplace = 5
	// recBatch begins each write (putBatchHeader): replay takes what it
	// covers whole or not at all, and recovery tells a torn tail from
	// corruption by it (replaySegment).
	recBatch = 6
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var errKeyNotFound = errors.New("not found") // hashicorp/raft compares the message

// errClosed stops a spare being written when the log closes.
var errClosed = errors.New("sharedlog: closed")

type writeOp struct {
	rec   []byte
	apply func(seq uint64, off int64) // where rec landed; after the sync, in order
	done  chan error
}

// Open opens the shared log in directory dir (made if missing), whose
// segments are segSize bytes, and recovers what it holds: a torn tail of
// the last write is cut off, and damaged data that was synced fails the
// open with a *CorruptionError.
func Open(dir string, segSize int64) (*Log, error) {
	return openFS(defaultFS(), dir, segSize)
}

// openFS opens the shared log in dir of fsys.
func openFS(fsys logFS, dir string, segSize int64) (*Log, error) {
	if err := fsys.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("sharedlog: %w", err)
	}
	l := &Log{fs: fsys, dir: dir, segSize: segSize, segs: map[uint64]logFile{},
		groups: map[string]*GroupLog{}, recovered: map[string]*GroupLog{},
		stop: make(chan struct{})}
	// A spare a crash interrupted may be partly written: make it again.
	if err := removeIfExists(fsys, filepath.Join(dir, spareName)); err != nil {
		return nil, fmt.Errorf("sharedlog: %w", err)
	}
	if err := l.recover(); err != nil {
		l.Close()
		return nil, err
	}
	l.opened = true
	return l, nil
}

func segName(seq uint64) string { return fmt.Sprintf("%020d.seg", seq) }

// recover opens the segments in order and replays their records.
func (l *Log) recover() error {
	names, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("sharedlog: %w", err)
	}
	var seqs []uint64
	for _, n := range names {
		if !strings.HasSuffix(n, ".seg") {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(n, ".seg"), 10, 64)
		if err != nil || n != segName(seq) {
			return fmt.Errorf("sharedlog: unexpected file %s", n)
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	if len(seqs) == 0 {
		return l.createSegment(1)
	}
	// Segments are made one after another and removed oldest first, so
	// they are consecutive: a gap is a segment lost (its entries would be
	// skipped without a word), not anything a crash leaves.
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			return &CorruptionError{File: filepath.Join(l.dir, segName(seqs[i-1]+1)), Offset: 0,
				Reason: fmt.Sprintf("missing: segments %d and %d are there, not the ones between", seqs[i-1], seqs[i])}
		}
	}
	for i, seq := range seqs {
		f, err := l.fs.OpenFile(filepath.Join(l.dir, segName(seq)), os.O_RDWR)
		if err != nil {
			return fmt.Errorf("sharedlog: %w", err)
		}
		l.segs[seq] = f
		end, err := l.replaySegment(seq, f, i == len(seqs)-1)
		if err != nil {
			return err
		}
		l.active, l.end = seq, end
	}
	return nil
}

// createSegment makes segment seq the active one: the spare, if one is
// ready, else a new file.
func (l *Log) createSegment(seq uint64) error {
	name := filepath.Join(l.dir, segName(seq))
	// seq is past every segment recovery found (and it found them all), so
	// the rename below replaces nothing.
	l.spareMu.Lock()
	f := l.spare
	l.spare = nil
	l.spareMu.Unlock()
	if f != nil {
		if err := l.fs.Rename(filepath.Join(l.dir, spareName), name); err != nil {
			f.Close()
			f = nil
		}
	}
	if f == nil {
		var err error
		f, err = l.fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL)
		if err != nil {
			return fmt.Errorf("sharedlog: %w", err)
		}
		f.Allocate(l.segSize) // best effort: a file that grows is slower, not wrong
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		f.Close()
		return fmt.Errorf("sharedlog: %w", err)
	}
	l.segMu.Lock()
	l.segs[seq] = f
	l.segMu.Unlock()
	l.active, l.end = seq, 0
	return nil
}

// replaySegment replays segment seq and returns where its records end.
//
// Only a torn tail may be cut off: the tail of the last write, which a
// crash interrupted before its fsync returned and which was therefore never
// acknowledged. Anything else that fails its checksum is data that was
// synced, perhaps acknowledged, and then damaged: opening fails with a
// *CorruptionError naming the file and offset, and nothing is truncated.
//
// Telling the two apart. The commit loop issues one write at a time, each
// one batch (a recBatch header, then the records), and issues the next only
// after the last one's fsync returned; a batch's header names its segment,
// its own offset and its length. Replay takes batches whole: a batch
// is applied only if its header and every record in it are intact, so a
// crash that tears a write (at any byte, or with a page in its middle lost
// and a later one kept, as disks may persist the pages of one write in any
// order) takes all of it away. Let X be where the first batch that is not
// intact begins. In an older segment the only thing allowed at X is zeros
// to the end (space allocated and never written): no write ever went past
// a segment that was followed by another. In the last segment, if an
// intact batch header with this segment's number and its own offset P > X
// exists, a write began at P after the write at X had been synced: X was
// durable and is corrupt. If none exists, everything from X on may be the
// last write (torn, or zeros from preallocation): it is cut off, and the
// cut is synced before anything is written after it, so no bytes of the
// torn write can come back behind a later one and pass for such a header.
//
// What this cannot tell: a flipped bit in the last batch of the last
// segment, with nothing synced after it, looks like a torn write and is
// cut off. A clean close appends an empty batch (closeLog) so that this
// window is open only for the last batch before a crash. Records from
// before batches (a data directory of an older version) are checked one by
// one as they were: in the last segment, a bad one with no batch after it
// ends the log. A forged header inside an entry's data (a client's value
// that holds one, at exactly the offset where it lands) could only make
// opening fail, never hide data.
func (l *Log) replaySegment(seq uint64, f logFile, last bool) (int64, error) {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return 0, fmt.Errorf("sharedlog: %w", err)
	}
	name := filepath.Join(l.dir, segName(seq))
	corrupt := func(off int64, format string, args ...any) error {
		return &CorruptionError{File: name, Offset: off, Reason: fmt.Sprintf(format, args...)}
	}
	var off int64
	type rec struct {
		body []byte
		off  int64
	}
	var recs []rec
replay:
	for {
		body, size, ok := parseRecord(data, off)
		if !ok {
			break
		}
		if body[0] != recBatch {
			// A record written before batches: a unit of its own.
			if err := l.replay(body, seq, off); err != nil {
				return 0, corrupt(off, "%v", err)
			}
			off += size
			continue
		}
		n, ok := batchLen(body, seq, off)
		if !ok || n > int64(len(data))-off {
			break
		}
		recs = recs[:0]
		for p := off + size; p < off+n; {
			body, size, ok := parseRecord(data[:off+n], p)
			if !ok || body[0] == recBatch {
				break replay
			}
			recs = append(recs, rec{body, p})
			p += size
		}
		for _, r := range recs {
			if err := l.replay(r.body, seq, r.off); err != nil {
				return 0, corrupt(r.off, "%v", err)
			}
		}
		off += n
	}
	if off == int64(len(data)) {
		return off, nil
	}
	if !last {
		// Space allocated for the segment and never used (a crash
		// before a clean close trimmed it, then a rotation) is zeros.
		if !allZero(data[off:]) {
			return 0, corrupt(off, "a damaged record in a segment followed by another")
		}
		return off, nil
	}
	if p := findBatch(data, off+1, seq); p >= 0 {
		return 0, corrupt(off, "a damaged record followed by a write synced after it (at offset %d)", p)
	}
	// Invariant: only a torn tail after the last intact batch is cut off
	// (no write began after it, see above). The cut is synced before the
	// log writes after it.
	if err := f.Truncate(off); err != nil {
		return 0, fmt.Errorf("sharedlog: truncate torn tail: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sharedlog: truncate torn tail: %w", err)
	}
	f.Allocate(l.segSize)
	return off, nil
}

// parseRecord returns the body of the record at off in data (its type,
// group id and payload) and its size; ok is false if it is cut short or
// fails its checksum.
func parseRecord(data []byte, off int64) (body []byte, size int64, ok bool) {
	rest := data[off:]
	if len(rest) < 8 {
		return nil, 0, false
	}
	n := int64(binary.BigEndian.Uint32(rest))
	// Every record has a type and a group id's length (n ≥ 2). Zeros (n =
	// 0, and the checksum of nothing is 0) are what a power cut leaves
	// when a file's new size reached the disk before the data written
	// into it.
	if n < 2 || n > int64(len(rest)-8) || crc32.Checksum(rest[8:8+n], crcTable) != binary.BigEndian.Uint32(rest[4:]) {
		return nil, 0, false
	}
	return rest[8 : 8+n], 8 + n, true
}

// A batch header is a record of type recBatch for no group whose payload
// is the segment's number, the batch's offset in it, and its length (the
// header's included): batchHeaderLen bytes.
const (
	batchBodyLen   = 1 + 1 + 8 + 8 + 4
	batchHeaderLen = 8 + batchBodyLen
)

// putBatchHeader fills in the header at the start of b, a batch to be
// written at off of segment seq.
func putBatchHeader(b []byte, seq uint64, off int64) {
	h := b[:8:batchHeaderLen]
	h = append(h, recBatch, 0)
	h = binary.BigEndian.AppendUint64(h, seq)
	h = binary.BigEndian.AppendUint64(h, uint64(off))
	h = binary.BigEndian.AppendUint32(h, uint32(len(b)))
	sealRecord(h)
}

// batchLen is the length of the batch whose header's body is body, if the
// header says it was written at off of segment seq.
func batchLen(body []byte, seq uint64, off int64) (int64, bool) {
	if len(body) != batchBodyLen || body[1] != 0 ||
		binary.BigEndian.Uint64(body[2:]) != seq || binary.BigEndian.Uint64(body[10:]) != uint64(off) {
		return 0, false
	}
	n := int64(binary.BigEndian.Uint32(body[18:]))
	return n, n >= batchHeaderLen
}

// findBatch returns the offset of the first intact batch header of segment
// seq at or after from in data, or -1.
func findBatch(data []byte, from int64, seq uint64) int64 {
	for p := from; p+batchHeaderLen <= int64(len(data)); p++ {
		if data[p+3] != batchBodyLen || data[p+8] != recBatch || data[p] != 0 || data[p+1] != 0 || data[p+2] != 0 {
			continue
		}
		if body, _, ok := parseRecord(data, p); ok {
			if _, ok := batchLen(body, seq, p); ok {
				return p
			}
		}
	}
	return -1
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (l *Log) replay(body []byte, seq uint64, off int64) error {
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
		g = &GroupLog{l: l, id: id, stable: map[string][]byte{}}
		l.recovered[id] = g
	}
	return g.applyRecord(typ, payload, seq, off+8+int64(len(body)-len(payload)))
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

// Close closes the segments, cutting the active one's unused space off,
// and drops a spare. Nothing may write meanwhile; a second call does
// nothing more.
func (l *Log) Close() error {
	l.spareMu.Lock()
	first := !l.closed
	if first {
		l.closed = true
		close(l.stop)
	}
	l.spareMu.Unlock()
	l.spareWG.Wait()
	var errs []error
	if err := l.Err(); first && err != nil {
		// A failed log writes nothing, not even the trim below.
		errs = append(errs, err)
	}
	if first && l.opened && l.Err() == nil {
		// An empty batch after the last: a bit that flips in the last
		// batch while the node is down is then found (replaySegment).
		if err := l.append(make([]byte, batchHeaderLen)); err != nil {
			errs = append(errs, l.fail(err))
		}
	}
	l.spareMu.Lock()
	if l.spare != nil {
		errs = append(errs, l.spare.Close(), l.fs.Remove(filepath.Join(l.dir, spareName)))
		l.spare = nil
	}
	l.spareMu.Unlock()
	l.segMu.Lock()
	defer l.segMu.Unlock()
	failed := l.Err() != nil
	for seq, f := range l.segs {
		if seq == l.active && l.opened && !failed {
			// Invariant: only space after l.end, the end of the last
			// batch synced (the empty one above), is cut: preallocated
			// zeros, never a record.
			if size, err := f.Size(); err == nil && size > l.end {
				errs = append(errs, f.Truncate(l.end))
			}
		}
		errs = append(errs, f.Close())
		delete(l.segs, seq)
	}
	return errors.Join(errs...)
}

// prepareSpare starts writing a spare segment unless one is ready or being
// written.
func (l *Log) prepareSpare() {
	l.spareMu.Lock()
	if l.spare != nil || l.preparing || l.closed {
		l.spareMu.Unlock()
		return
	}
	l.preparing = true
	l.spareWG.Add(1)
	l.spareMu.Unlock()
	if l.syncSpare {
		l.writeSpare()
		return
	}
	go l.writeSpare()
}

func (l *Log) writeSpare() {
	defer l.spareWG.Done()
	f, err := writeZeros(l.fs, filepath.Join(l.dir, spareName), l.segSize, l.stop)
	l.spareMu.Lock()
	defer l.spareMu.Unlock()
	l.preparing = false
	if err != nil {
		// The next rotation makes a segment without it; the one after
		// tries again.
		return
	}
	l.spare = f
}

// writeZeros creates name holding size zero bytes, synced; it gives up
// when stop is closed.
func writeZeros(fsys logFS, name string, size int64, stop <-chan struct{}) (logFile, error) {
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return nil, err
	}
	// A mebibyte at a time, each synced: 64 MiB of dirty pages written
	// back at once would hold up the active segment's fsyncs behind them.
	zeros := make([]byte, min(1<<20, size))
	for off := int64(0); off < size && err == nil; off += int64(len(zeros)) {
		select {
		case <-stop:
			err = errClosed
		default:
			if _, err = f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err == nil {
				err = f.Sync()
			}
		}
	}
	if err != nil {
		f.Close()
		fsys.Remove(name)
		return nil, err
	}
	return f, nil
}

// record frames a record of type typ for group id with payload.
func record(typ byte, id string, payload []byte) []byte {
	b := startRecord(make([]byte, 0, 8+1+binary.MaxVarintLen64+len(id)+len(payload)), typ, id)
	return sealRecord(append(b, payload...))
}

// startRecord appends the start of a record of type typ for group id to b
// (which must be empty): room for its length and checksum, its type and
// id. The payload follows, at payloadAt(id); sealRecord finishes it.
func startRecord(b []byte, typ byte, id string) []byte {
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, typ)
	b = binary.AppendUvarint(b, uint64(len(id)))
	return append(b, id...)
}

// sealRecord fills in the length and checksum of a record startRecord began.
func sealRecord(b []byte) []byte {
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
func (l *Log) write(rec []byte, apply func(seq uint64, off int64)) error {
	op := &writeOp{rec: rec, apply: apply, done: make(chan error, 1)}
	l.mu.Lock()
	if l.failed != nil {
		l.mu.Unlock()
		return l.failed
	}
	l.queue = append(l.queue, op)
	start := !l.running
	l.running = true
	l.mu.Unlock()
	if start {
		go l.commitLoop()
	}
	return <-op.done
}

func (l *Log) commitLoop() {
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
		err := l.failed
		l.mu.Unlock()
		if err == nil && l.end >= l.segSize {
			err = l.rotate()
		}
		buf = append(buf[:0], make([]byte, batchHeaderLen)...)
		offs := make([]int64, len(ops))
		for i, op := range ops {
			offs[i] = l.end + int64(len(buf))
			buf = append(buf, op.rec...)
		}
		if err == nil {
			err = l.append(buf)
		}
		if err == nil && l.end >= l.segSize/2 {
			l.prepareSpare()
		}
		if err != nil {
			err = l.fail(err)
		}
		for i, op := range ops {
			if err == nil && op.apply != nil {
				op.apply(l.active, offs[i])
			}
			op.done <- err
		}
	}
}

// append writes the batch buf (its first batchHeaderLen bytes left for
// the header) at the end of the active segment and syncs it. Only the
// commit loop calls it, one write at a time: the next write is issued
// after this one's sync returned (replaySegment relies on it).
func (l *Log) append(buf []byte) error {
	l.segMu.RLock()
	f := l.segs[l.active]
	l.segMu.RUnlock()
	putBatchHeader(buf, l.active, l.end)
	_, err := f.WriteAt(buf, l.end)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		// Nothing more is written (the caller fails the log): what this
		// write left, whole, torn or nothing, is the log's tail, as a
		// crash would leave it.
		return fmt.Errorf("sharedlog: segment %s at offset %d: %w", segName(l.active), l.end, err)
	}
	l.end += int64(len(buf))
	return nil
}

// ErrFailed is what every write to a shared log returns, wrapped with
// the first error's cause, once a write, an fsync or a rotation of it
// failed. The log then writes nothing more until the node restarts and
// recovers it from what the disk holds.
var ErrFailed = errors.New("sharedlog: failed")

// fail stops l for good after err: the commit loop answers the writes
// waiting and every later one with the error it returns, and touches no
// file again. A failed write may have reached the disk in part, and after a
// failed fsync the pages it was to write may be marked clean and their
// data lost, while reads still see them: another fsync that succeeds proves
// nothing (PostgreSQL's fsync lesson), so nothing is retried and nothing
// more acknowledged. Restarting reopens the log from what the disk holds,
// which recovery treats as after a crash.
func (l *Log) fail(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed == nil {
		l.failed = fmt.Errorf("%w: %w", ErrFailed, err)
	}
	return l.failed
}

// Err returns nil while the log takes writes, and the error every write
// gets (wrapping ErrFailed) once it has failed: its groups' replicas
// can then neither append nor vote, and the node should take them out of
// service.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// rotate starts the next segment with every group's stable state and the
// live entries of the groups that pin old segments, then deletes the
// segments no group needs. It runs on the commit loop, between writes.
func (l *Log) rotate() error {
	l.mu.Lock()
	groups := make([]*GroupLog, 0, len(l.groups)+len(l.recovered))
	for _, g := range l.groups {
		groups = append(groups, g)
	}
	for _, g := range l.recovered {
		groups = append(groups, g)
	}
	l.mu.Unlock()
	// In a fixed order, so that a run's bytes are too (the crash tests).
	slices.SortFunc(groups, func(a, b *GroupLog) int { return strings.Compare(a.id, b.id) })
	if err := l.createSegment(l.active + 1); err != nil {
		return err
	}
	type moved struct {
		g       *GroupLog
		first   uint64
		payload []byte
		off     int64
	}
	buf := make([]byte, batchHeaderLen)
	var moves []moved
	for _, g := range groups {
		g.mu.RLock()
		keys := slices.Sorted(maps.Keys(g.stable))
		// Only an idle group's entries move: one still appending wrote
		// into the segment just filled, and raft's own compaction after
		// its next snapshot frees its old segments. Copying a busy group's
		// trailing entries (tens of MiB) here stalled every group's
		// writes behind this loop for seconds.
		pinned := len(g.locs) > 0 && g.locs[0].seg+keepSegments < l.active &&
			g.locs[len(g.locs)-1].seg+1 < l.active // l.active is the new segment already
		var locs []entryLoc
		var first uint64
		if pinned {
			locs, first = slices.Clone(g.locs), g.first
		}
		stable := make([][]byte, len(keys))
		for i, k := range keys {
			stable[i] = g.stable[k]
		}
		g.mu.RUnlock()
		if !pinned {
			for i, k := range keys {
				buf = append(buf, record(recStable, g.id, stablePayload([]byte(k), stable[i]))...)
			}
			continue
		}
		// A group's log and stable store change only through writes that
		// wait behind this commit loop: locs and stable stay what they
		// were.
		payload := binary.AppendUvarint(nil, uint64(len(keys)))
		for i, k := range keys {
			payload = append(payload, stablePayload([]byte(k), stable[i])...)
		}
		payload = binary.AppendUvarint(payload, uint64(len(locs)))
		for i, loc := range locs {
			e := make([]byte, loc.n)
			if err := l.readAt(e, loc); err != nil {
				return fmt.Errorf("sharedlog: copy entry %d of %s forward: %w", first+uint64(i), g.id, err)
			}
			payload = binary.AppendUvarint(payload, uint64(len(e)))
			payload = append(payload, e...)
		}
		off := int64(len(buf))
		buf = append(buf, record(recReplace, g.id, payload)...)
		moves = append(moves, moved{g: g, first: first, payload: payload, off: off})
	}
	base := l.end // 0: the segment is new
	if len(buf) > batchHeaderLen {
		if err := l.append(buf); err != nil {
			return err
		}
	}
	for _, m := range moves {
		m.g.mu.Lock()
		// One swap: readers see the old places or the new.
		err := m.g.applyLocked(recReplace, m.payload, l.active, base+m.off+payloadAt(m.g.id))
		m.g.mu.Unlock()
		if err != nil {
			return err
		}
	}
	// Delete the segments older than every group's oldest live entry.
	// Invariant: a segment goes only once the batch above, which holds
	// every moved group's state, is synced, and no group's index points
	// into it (a busy group's oldest entry keeps its segment).
	oldest := l.active
	for _, g := range groups {
		g.mu.RLock()
		if len(g.locs) > 0 {
			oldest = min(oldest, g.locs[0].seg)
		}
		g.mu.RUnlock()
	}
	l.segMu.Lock()
	var gone []uint64
	for seq, f := range l.segs {
		if seq < oldest {
			f.Close()
			delete(l.segs, seq)
			gone = append(gone, seq)
		}
	}
	l.segMu.Unlock()
	slices.Sort(gone)
	// Oldest first, each removal synced before the next (a directory's
	// changes may otherwise reach the disk in any order): a crash leaves
	// a suffix of the segments, with no gap, which recovery checks.
	for _, seq := range gone {
		if err := l.fs.Remove(filepath.Join(l.dir, segName(seq))); err != nil {
			return fmt.Errorf("sharedlog: %w", err)
		}
		if err := l.fs.SyncDir(l.dir); err != nil {
			return fmt.Errorf("sharedlog: %w", err)
		}
	}
	return nil
}

func (l *Log) readAt(b []byte, loc entryLoc) error {
	l.segMu.RLock()
	defer l.segMu.RUnlock()
	f := l.segs[loc.seg]
	if f == nil {
		return fmt.Errorf("segment %s is gone", segName(loc.seg))
	}
	_, err := f.ReadAt(b, loc.off)
	return err
}

// Group returns the log and stable store of group id in l.
func (l *Log) Group(id string) (*GroupLog, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.groups[id]; g != nil {
		return g, nil
	}
	g := l.recovered[id]
	delete(l.recovered, id)
	if g == nil {
		g = &GroupLog{l: l, id: id, stable: map[string][]byte{}}
	}
	l.groups[id] = g
	return g, nil
}

// Drop forgets group id's log and stable state.
func (l *Log) Drop(id string) error {
	// The group leaves the maps on the commit loop, right after the drop
	// is synced: a rotation that ran later with the group still there
	// (removed once drop returned, before) wrote its state back after the
	// drop record, and the next start found the group again.
	return l.write(record(recDrop, id, nil), func(uint64, int64) {
		l.mu.Lock()
		delete(l.groups, id)
		delete(l.recovered, id)
		l.mu.Unlock()
	})
}

// GroupLog is one group's raft.LogStore and raft.StableStore in a
// shared log.
type GroupLog struct {
	l  *Log
	id string

	mu     sync.RWMutex // guards the fields below
	first  uint64       // index of locs[0]
	locs   []entryLoc
	stable map[string][]byte
}

type entryLoc struct {
	seg uint64
	off int64
	n   int32
}

// FirstIndex, LastIndex, GetLog, StoreLog, StoreLogs and DeleteRange
// implement raft.LogStore; Set, Get, SetUint64 and GetUint64
// raft.StableStore. A write returns once it is synced, and fails with
// ErrFailed for good once the log has failed.
var (
	_ raft.LogStore          = (*GroupLog)(nil)
	_ raft.StableStore       = (*GroupLog)(nil)
	_ raft.MonotonicLogStore = (*GroupLog)(nil)
)

// FirstIndex implements raft.LogStore.
func (g *GroupLog) FirstIndex() (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if len(g.locs) == 0 {
		return 0, nil
	}
	return g.first, nil
}

// LastIndex implements raft.LogStore.
func (g *GroupLog) LastIndex() (uint64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if len(g.locs) == 0 {
		return 0, nil
	}
	return g.first + uint64(len(g.locs)) - 1, nil
}

// GetLog implements raft.LogStore.
func (g *GroupLog) GetLog(index uint64, log *raft.Log) error {
	// segMu first, so that no rotation moves or deletes the entry between
	// finding and reading it.
	g.l.segMu.RLock()
	defer g.l.segMu.RUnlock()
	g.mu.RLock()
	if len(g.locs) == 0 || index < g.first || index >= g.first+uint64(len(g.locs)) {
		g.mu.RUnlock()
		return raft.ErrLogNotFound
	}
	loc := g.locs[index-g.first]
	g.mu.RUnlock()
	f := g.l.segs[loc.seg]
	if f == nil {
		return fmt.Errorf("sharedlog: entry %d of %s: segment %s is gone", index, g.id, segName(loc.seg))
	}
	b := make([]byte, loc.n)
	if _, err := f.ReadAt(b, loc.off); err != nil {
		return fmt.Errorf("sharedlog: read entry %d: %w", index, err)
	}
	return decodeLog(b, log)
}

// StoreLog implements raft.LogStore.
func (g *GroupLog) StoreLog(log *raft.Log) error {
	return g.StoreLogs([]*raft.Log{log})
}

// StoreLogs implements raft.LogStore.
func (g *GroupLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	// Each entry is encoded straight into the record, sized up front:
	// this is every write's path.
	at := payloadAt(g.id)
	n := int(at) + binary.MaxVarintLen64
	for _, l := range logs {
		n += binary.MaxVarintLen64 + logLen(l)
	}
	rec := startRecord(make([]byte, 0, n), recEntries, g.id)
	rec = binary.AppendUvarint(rec, uint64(len(logs)))
	for _, l := range logs {
		rec = binary.AppendUvarint(rec, uint64(logLen(l)))
		rec = appendLog(rec, l)
	}
	rec = sealRecord(rec)
	payload := rec[at:]
	return g.l.write(rec, func(seq uint64, off int64) {
		if err := g.applyRecord(recEntries, payload, seq, off+at); err != nil {
			panic(err) // we just encoded it
		}
	})
}

// DeleteRange implements raft.LogStore.
func (g *GroupLog) DeleteRange(min, max uint64) error {
	payload := deletePayload(min, max)
	return g.l.write(record(recDelete, g.id, payload), func(uint64, int64) {
		g.applyRecord(recDelete, payload, 0, 0)
	})
}

func deletePayload(min, max uint64) []byte {
	payload := binary.BigEndian.AppendUint64(nil, min)
	return binary.BigEndian.AppendUint64(payload, max)
}

func stablePayload(key, val []byte) []byte {
	payload := binary.AppendUvarint(nil, uint64(len(key)))
	payload = append(payload, key...)
	payload = binary.AppendUvarint(payload, uint64(len(val)))
	return append(payload, val...)
}

// applyRecord applies a record of g's whose payload starts at offset at of
// segment seq.
func (g *GroupLog) applyRecord(typ byte, payload []byte, seq uint64, at int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.applyLocked(typ, payload, seq, at)
}

func (g *GroupLog) applyLocked(typ byte, payload []byte, seq uint64, at int64) error {
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
			loc := entryLoc{seg: seq, off: at + int64(p), n: int32(n)}
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
				// Not adjacent to what is kept (raft does not do this: the
				// log says it is monotonic, so raft empties it after
				// installing a snapshot): the log starts again here.
				g.first, g.locs = index, append(g.locs[:0], loc)
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
	case recReplace:
		n, k := binary.Uvarint(payload)
		if k <= 0 || n > uint64(len(payload)) {
			return errBadLog
		}
		stable := make(map[string][]byte, n)
		rest := payload[k:]
		for i := uint64(0); i < n; i++ {
			key, r, err := lenBytes(rest, true)
			if err != nil {
				return err
			}
			val, r, err := lenBytes(r, true)
			if err != nil {
				return err
			}
			stable[string(key)] = val
			rest = r
		}
		p := len(payload) - len(rest)
		// Validate the entries before anything changes: a malformed
		// record leaves the group as it was.
		probe := &GroupLog{}
		if err := probe.applyLocked(recEntries, rest, seq, at+int64(p)); err != nil {
			return err
		}
		g.stable, g.first, g.locs = stable, probe.first, probe.locs
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
		return fmt.Errorf("sharedlog: record type %d", typ)
	}
	return nil
}

// Set implements raft.StableStore.
func (g *GroupLog) Set(key, val []byte) error {
	payload := stablePayload(key, val)
	return g.l.write(record(recStable, g.id, payload), func(uint64, int64) {
		g.applyRecord(recStable, payload, 0, 0)
	})
}

// Get implements raft.StableStore.
func (g *GroupLog) Get(key []byte) ([]byte, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	v, ok := g.stable[string(key)]
	if !ok {
		return nil, errKeyNotFound
	}
	return append([]byte(nil), v...), nil
}

// SetUint64 implements raft.StableStore.
func (g *GroupLog) SetUint64(key []byte, val uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], val)
	return g.Set(key, b[:])
}

// GetUint64 implements raft.StableStore.
func (g *GroupLog) GetUint64(key []byte) (uint64, error) {
	v, err := g.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("sharedlog: stable key %q holds %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// IsMonotonic implements raft.MonotonicLogStore: after installing a
// snapshot raft deletes the whole log rather than leave a gap before the
// entries that follow it.
func (g *GroupLog) IsMonotonic() bool { return true }

// Close implements io.Closer; the shared log outlives its groups.
func (g *GroupLog) Close() error { return nil }

// appendLog appends l to b: index, term, type, appended-at (Unix ns), then
// data and extensions, each behind a uvarint length; logLen bytes.
func appendLog(b []byte, l *raft.Log) []byte {
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

// logLen is how many bytes appendLog appends for l.
func logLen(l *raft.Log) int {
	return 25 + uvarintLen(uint64(len(l.Data))) + len(l.Data) + uvarintLen(uint64(len(l.Extensions))) + len(l.Extensions)
}

var errBadLog = errors.New("sharedlog: malformed record")

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

// ErrCorrupt is what a shared log's open returns (in a *CorruptionError)
// when a segment holds damaged data that was synced before: not the torn
// tail of a write a crash cut off, which is never acknowledged and is cut
// off, but data a replica may have acknowledged. The replica cannot vouch
// for its log and must be rebuilt from its group's other replicas.
var ErrCorrupt = errors.New("sharedlog: corrupt")

// CorruptionError says which segment file is damaged and where.
type CorruptionError struct {
	File   string // the segment's path
	Offset int64  // where the damaged write begins in it
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("sharedlog: %s is corrupt at offset %d: %s", e.File, e.Offset, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) hold.
func (e *CorruptionError) Unwrap() error { return ErrCorrupt }
