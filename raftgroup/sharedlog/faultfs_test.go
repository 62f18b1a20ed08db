package sharedlog

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// faultFS is a logFS in memory that models what a machine crash keeps, for
// the shared log's crash tests:
//
//   - A file's bytes are durable once Sync returned nil on it. What was
//     written, truncated or allocated after its last Sync is lost in a
//     crash, or torn: crashImage keeps a random prefix of those
//     operations, the last one cut at a random byte, and may revert a page
//     in the middle of what it kept (pages of one write reach the disk in
//     any order).
//   - A name (a file created, renamed or removed) is durable once SyncDir
//     of its directory returned nil.
//   - The Nth mutating call (failAt) can fail with failErr. A failed Sync
//     loses what it was to write, while reads still see it, as Linux does
//     (the page is marked clean): a log that syncs again and carries on
//     builds on lost data.
//   - crashAt stops it after the Nth mutating call: that call happens,
//     every later one fails with errCrashed, and crashImage gives what the
//     disk holds.
//   - flip changes a bit at rest (in what reads see and what is durable).
//
// The mutating calls counted are WriteAt, Sync, Truncate, Allocate,
// OpenFile with O_CREATE, Rename, Remove and SyncDir.
type faultFS struct {
	mu      sync.Mutex // guards everything below and every inode's fields
	names   map[string]*faultInode
	durable map[string]*faultInode // the names as their directories were last synced
	dirs    map[string]bool
	calls   int
	crashAt int // 0: never
	crashed bool
	failAt  int // 0: never
	failErr error
	trace   []string // the mutating calls, "op name"
}

type faultInode struct {
	name    string    // its last name, for traces
	data    []byte    // what reads see (the page cache)
	synced  []byte    // what the disk holds
	pending []faultOp // what happened to data since synced, in order
	// syncedWrites are where the writes that reached the disk began, in
	// order (the shared log's batches).
	syncedWrites []int64
}

type faultOp struct {
	off  int64
	b    []byte // a write of b at off, unless size
	size bool   // a resize to off
}

var errCrashed = errors.New("faultfs: crashed")

func newFaultFS() *faultFS {
	return &faultFS{names: map[string]*faultInode{}, durable: map[string]*faultInode{}, dirs: map[string]bool{}}
}

var _ logFS = (*faultFS)(nil)

// call counts a mutating call and says whether it may go ahead.
func (f *faultFS) call(op, name string) error {
	if f.crashed {
		return errCrashed
	}
	f.calls++
	f.trace = append(f.trace, op+" "+filepath.Base(name))
	if f.calls == f.failAt {
		return f.failErr
	}
	return nil
}

// after ends a mutating call: the crash comes after it.
func (f *faultFS) after() {
	if f.calls == f.crashAt {
		f.crashed = true
	}
}

func (f *faultFS) MkdirAll(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dirs[dir] = true // directories are durable from the start
	return nil
}

func (f *faultFS) OpenFile(name string, flag int) (logFile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.dirs[filepath.Dir(name)] {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	ino := f.names[name]
	if flag&os.O_CREATE == 0 {
		if ino == nil || f.crashed {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return &faultFile{fs: f, ino: ino, name: name}, nil
	}
	if ino != nil && flag&os.O_EXCL != 0 {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	}
	if err := f.call("create", name); err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer f.after()
	if ino == nil {
		ino = &faultInode{name: name}
		f.names[name] = ino
	} else if flag&os.O_TRUNC != 0 {
		ino.resize(0)
	}
	return &faultFile{fs: f, ino: ino, name: name}, nil
}

func (f *faultFS) Rename(oldname, newname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ino := f.names[oldname]
	if ino == nil {
		return &fs.PathError{Op: "rename", Path: oldname, Err: fs.ErrNotExist}
	}
	if err := f.call("rename", newname); err != nil {
		return err
	}
	defer f.after()
	delete(f.names, oldname)
	f.names[newname] = ino
	ino.name = newname
	return nil
}

func (f *faultFS) Remove(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.names[name] == nil {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if err := f.call("remove", name); err != nil {
		return err
	}
	defer f.after()
	delete(f.names, name)
	return nil
}

func (f *faultFS) ReadDir(dir string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for n := range f.names {
		if filepath.Dir(n) == dir {
			names = append(names, filepath.Base(n))
		}
	}
	slices.Sort(names)
	return names, nil
}

func (f *faultFS) SyncDir(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("syncdir", dir); err != nil {
		return err
	}
	defer f.after()
	for n := range f.durable {
		if filepath.Dir(n) == dir {
			delete(f.durable, n)
		}
	}
	for n, ino := range f.names {
		if filepath.Dir(n) == dir {
			f.durable[n] = ino
		}
	}
	return nil
}

// tear says what a crash keeps of the operations not synced.
type tear int

const (
	tearDrop tear = iota // nothing
	tearAll              // everything (written back just before the crash)
	tearCut              // a random prefix, cut at a random byte
	tearHole             // a random prefix, and a page in the middle of it reverted
	tearFlip             // a random prefix, and a bit of it flipped
)

func (t tear) String() string {
	return [...]string{"drop", "all", "cut", "hole", "flip"}[t]
}

// crashImage is a new faultFS holding what the disk of f holds after a
// crash now, the unsynced operations of each file kept as t says.
func (f *faultFS) crashImage(t tear, rng *rand.Rand) *faultFS {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := newFaultFS()
	maps := []string{}
	for n := range f.durable {
		maps = append(maps, n)
	}
	slices.Sort(maps) // rng draws in a fixed order
	for d := range f.dirs {
		g.dirs[d] = true
	}
	for _, n := range maps {
		ino := f.durable[n]
		data := slices.Clone(ino.synced)
		keep := 0
		switch t {
		case tearAll:
			keep = len(ino.pending)
		case tearCut, tearHole, tearFlip:
			if len(ino.pending) > 0 {
				keep = rng.IntN(len(ino.pending) + 1)
			}
		}
		var lo, hi int64 = -1, -1 // the range the kept writes covered
		for i, op := range ino.pending {
			cut := i == keep && t != tearAll // the operation the crash cut
			if t == tearDrop || i > keep || (cut && op.size) {
				break
			}
			if op.size {
				data = resized(data, op.off)
				continue
			}
			b := op.b
			if cut {
				b = b[:rng.IntN(len(b)+1)]
			}
			if len(b) == 0 {
				continue
			}
			if end := op.off + int64(len(b)); int64(len(data)) < end {
				data = resized(data, end)
			}
			copy(data[op.off:], b)
			if lo < 0 || op.off < lo {
				lo = op.off
			}
			hi = max(hi, op.off+int64(len(b)))
		}
		if lo >= 0 && hi > lo {
			switch t {
			case tearHole:
				const page = 4096
				p := (lo + rng.Int64N(hi-lo)) / page * page
				for i := max(p, lo); i < min(p+page, hi, int64(len(data))); i++ {
					if i < int64(len(ino.synced)) {
						data[i] = ino.synced[i]
					} else {
						data[i] = 0
					}
				}
			case tearFlip:
				i := lo + rng.Int64N(hi-lo)
				if i < int64(len(data)) {
					data[i] ^= 1 << rng.IntN(8)
				}
			}
		}
		ino2 := &faultInode{name: n, data: data, synced: slices.Clone(data),
			syncedWrites: slices.DeleteFunc(slices.Clone(ino.syncedWrites), func(o int64) bool { return o >= int64(len(data)) })}
		g.names[n] = ino2
		g.durable[n] = ino2
	}
	return g
}

// clone is a copy of f at rest: its durable names and what they hold.
func (f *faultFS) clone() *faultFS {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := newFaultFS()
	maps.Copy(g.dirs, f.dirs)
	for n, ino := range f.durable {
		ino2 := &faultInode{name: n, data: slices.Clone(ino.synced), synced: slices.Clone(ino.synced),
			syncedWrites: slices.Clone(ino.syncedWrites)}
		g.names[n] = ino2
		g.durable[n] = ino2
	}
	return g
}

func resized(b []byte, size int64) []byte {
	if int64(len(b)) >= size {
		return b[:size]
	}
	return append(b, make([]byte, size-int64(len(b)))...)
}

// flip flips bit of the byte at off of file name, at rest.
func (f *faultFS) flip(name string, off int64, bit uint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ino := f.names[name]
	ino.data[off] ^= 1 << bit
	if off < int64(len(ino.synced)) {
		ino.synced[off] ^= 1 << bit
	}
}

// files lists the names in dir with suffix, sorted.
func (f *faultFS) files(dir, suffix string) []string {
	names, _ := f.ReadDir(dir)
	var out []string
	for _, n := range names {
		if strings.HasSuffix(n, suffix) {
			out = append(out, filepath.Join(dir, n))
		}
	}
	return out
}

func (ino *faultInode) resize(size int64) {
	ino.data = resized(ino.data, size)
	ino.pending = append(ino.pending, faultOp{off: size, size: true})
}

type faultFile struct {
	fs   *faultFS
	ino  *faultInode
	name string
}

func (f *faultFile) ReadAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(b, f.ino.data[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (f *faultFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.call("write", f.ino.name); err != nil {
		if errors.Is(err, syscall.ENOSPC) && len(b) > 1 {
			// A full disk may take part of a write.
			f.write(b[:len(b)/2], off)
			return len(b) / 2, err
		}
		return 0, err
	}
	defer f.fs.after()
	f.write(b, off)
	return len(b), nil
}

func (f *faultFile) write(b []byte, off int64) {
	ino := f.ino
	if end := off + int64(len(b)); int64(len(ino.data)) < end {
		ino.data = resized(ino.data, end)
	}
	copy(ino.data[off:], b)
	ino.pending = append(ino.pending, faultOp{off: off, b: slices.Clone(b)})
}

func (f *faultFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.call("sync", f.ino.name); err != nil {
		if !errors.Is(err, errCrashed) {
			// The pages are marked clean and their data lost for good;
			// reads still see them.
			f.ino.pending = nil
		}
		return err
	}
	defer f.fs.after()
	// What is pending reaches the disk; what a failed sync lost does not
	// come back (data and synced may differ for good).
	for _, op := range f.ino.pending {
		if op.size {
			f.ino.synced = resized(f.ino.synced, op.off)
			f.ino.syncedWrites = slices.DeleteFunc(f.ino.syncedWrites, func(o int64) bool { return o >= op.off })
			continue
		}
		f.ino.syncedWrites = append(f.ino.syncedWrites, op.off)
		if end := op.off + int64(len(op.b)); int64(len(f.ino.synced)) < end {
			f.ino.synced = resized(f.ino.synced, end)
		}
		copy(f.ino.synced[op.off:], op.b)
	}
	f.ino.pending = nil
	return nil
}

func (f *faultFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.call("truncate", f.ino.name); err != nil {
		return err
	}
	defer f.fs.after()
	f.ino.resize(size)
	return nil
}

func (f *faultFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return int64(len(f.ino.data)), nil
}

func (f *faultFile) Allocate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.call("allocate", f.ino.name); err != nil {
		return err
	}
	defer f.fs.after()
	if size > int64(len(f.ino.data)) {
		f.ino.resize(size)
	}
	return nil
}

func (f *faultFile) Close() error { return nil }

// TestFaultFS checks the model the crash tests rest on: synced bytes and
// synced names survive a crash, others do not, a tear keeps a prefix, and
// a failed sync loses its data for good.
func TestFaultFS(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	f := newFaultFS()
	f.MkdirAll("/d")
	a, err := f.OpenFile("/d/a", os.O_RDWR|os.O_CREATE|os.O_EXCL)
	if err != nil {
		t.Fatal(err)
	}
	a.WriteAt([]byte("synced"), 0)
	a.Sync()
	a.WriteAt([]byte(" not yet"), 6)
	if img := f.crashImage(tearAll, rng); len(img.names) != 0 {
		t.Fatalf("a name whose directory was not synced survived a crash: %v", img.names)
	}
	f.SyncDir("/d")
	read := func(g *faultFS, name string) string {
		t.Helper()
		h, err := g.OpenFile(name, os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := h.Size()
		b := make([]byte, n)
		h.ReadAt(b, 0)
		return string(b)
	}
	for _, c := range []struct {
		t    tear
		want func(string) bool
	}{
		{tearDrop, func(s string) bool { return s == "synced" }},
		{tearAll, func(s string) bool { return s == "synced not yet" }},
		{tearCut, func(s string) bool { return strings.HasPrefix("synced not yet", s) && len(s) >= 6 }},
	} {
		for i := 0; i < 20; i++ {
			if got := read(f.crashImage(c.t, rng), "/d/a"); !c.want(got) {
				t.Fatalf("%v: %q", c.t, got)
			}
		}
	}
	// A renamed file is under its new name only once the directory is
	// synced.
	f.Rename("/d/a", "/d/b")
	if img := f.crashImage(tearDrop, rng); img.names["/d/a"] == nil || img.names["/d/b"] != nil {
		t.Fatalf("a rename was durable before its directory was synced")
	}
	// A failed sync: reads see the data, a crash loses it even after a
	// later sync that succeeded.
	f.failAt, f.failErr = f.calls+2, syscall.EIO
	b, _ := f.OpenFile("/d/b", os.O_RDWR)
	b.WriteAt([]byte("LOST"), 0)
	if err := b.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("sync: %v, want EIO", err)
	}
	b.Sync()
	f.SyncDir("/d")
	if got := read(f, "/d/b"); !strings.HasPrefix(got, "LOST") {
		t.Fatalf("reads after a failed sync: %q", got)
	}
	if got := read(f.crashImage(tearAll, rng), "/d/b"); !strings.HasPrefix(got, "synced") {
		t.Fatalf("after a failed sync and a crash: %q, want the data before it", got)
	}
	// A crash after the Nth call: that call happens, the next fails.
	f.crashAt = f.calls + 1
	b.WriteAt([]byte("x"), 0)
	if _, err := b.WriteAt([]byte("y"), 0); !errors.Is(err, errCrashed) {
		t.Fatalf("a write after the crash: %v", err)
	}
	if fmt.Sprint(f.trace[len(f.trace)-1]) != "write b" {
		t.Fatalf("trace: %v", f.trace)
	}
}
