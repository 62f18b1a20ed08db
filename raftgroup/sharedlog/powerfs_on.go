//go:build failpoints

package sharedlog

import (
	"io"
	"os"
	"sync"
)

// defaultFS is the operating system's files, or, in a failpoints build
// with LDCD_POWER_LOSS set, powerFS: the Jepsen harness's power nemesis
// (etcd's robustness tests use LazyFS for the same).
func defaultFS() logFS {
	if os.Getenv("LDCD_POWER_LOSS") != "" {
		return powerFS{}
	}
	return osFS{}
}

// powerFS keeps what was written to a file and not yet synced in the
// process's memory, and hands it to the operating system only when Sync is
// called: a kill -9 then loses exactly what a power cut would, every byte
// not synced, where a plain kill -9 leaves it in the page cache. Names
// (create, rename, remove) go to the operating system at once.
type powerFS struct{ osFS }

func (p powerFS) OpenFile(name string, flag int) (logFile, error) {
	f, err := p.osFS.OpenFile(name, flag)
	if err != nil {
		return nil, err
	}
	return &powerFile{osFile: f.(osFile)}, nil
}

type pendingWrite struct {
	off int64
	b   []byte
}

type powerFile struct {
	osFile
	mu      sync.Mutex // guards pending
	pending []pendingWrite
}

func (f *powerFile) WriteAt(b []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = append(f.pending, pendingWrite{off, append([]byte(nil), b...)})
	return len(b), nil
}

// ReadAt reads the file and lays the writes not yet synced over it.
func (f *powerFile) ReadAt(b []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.osFile.ReadAt(b, off)
	end := off + int64(n) // b[:end-off] holds data
	for _, w := range f.pending {
		lo, hi := max(w.off, off), min(w.off+int64(len(w.b)), off+int64(len(b)))
		if lo >= hi {
			continue
		}
		if lo > end { // a hole between the file's end and this write
			clear(b[end-off : lo-off])
		}
		copy(b[lo-off:hi-off], w.b[lo-w.off:hi-w.off])
		end = max(end, hi)
	}
	if end-off == int64(len(b)) {
		return len(b), nil
	}
	if err == nil {
		err = io.EOF
	}
	return int(end - off), err
}

// flush hands the pending writes to the operating system.
func (f *powerFile) flush() error {
	for _, w := range f.pending {
		if _, err := f.osFile.WriteAt(w.b, w.off); err != nil {
			return err
		}
	}
	f.pending = nil
	return nil
}

func (f *powerFile) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.flush(); err != nil {
		return err
	}
	return f.osFile.Sync()
}

func (f *powerFile) Truncate(size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.flush(); err != nil {
		return err
	}
	return f.osFile.Truncate(size)
}

func (f *powerFile) Size() (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.osFile.Size()
	for _, w := range f.pending {
		n = max(n, w.off+int64(len(w.b)))
	}
	return n, err
}
