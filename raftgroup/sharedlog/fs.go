package sharedlog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// logFS is the shared log's only way to touch files: the operating
// system's in production (osFS), a fault-injecting one in tests
// (faultFS, faultfs_test.go) that remembers what was synced and can lose,
// tear or flip what was not.
//
// Its contract is the one a crash leaves: a file's bytes are durable only
// once its Sync returned nil, and a name made by OpenFile with O_CREATE,
// Rename or Remove only once SyncDir of its directory returned nil. The
// methods may be called from several goroutines at once; a logFile is used
// by one writer at a time (the commit loop, recovery, or the spare's
// writer), and ReadAt may run concurrently with anything.
type logFS interface {
	MkdirAll(dir string) error
	// OpenFile opens name with os.OpenFile's flags (O_RDWR, O_CREATE,
	// O_EXCL, O_TRUNC).
	OpenFile(name string, flag int) (logFile, error)
	Rename(oldname, newname string) error
	Remove(name string) error
	// ReadDir lists the names of dir's entries.
	ReadDir(dir string) ([]string, error)
	SyncDir(dir string) error
}

// logFile is an open file of a logFS.
type logFile interface {
	ReadAt(b []byte, off int64) (int, error)
	WriteAt(b []byte, off int64) (int, error)
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
	// Allocate reserves size bytes (reading as zeros past the end) where
	// the file system can; errors mean only that it could not.
	Allocate(size int64) error
	Close() error
}

// osFS is logFS on the operating system's files.
type osFS struct{}

var _ logFS = osFS{}

func (osFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o700) }

func (osFS) OpenFile(name string, flag int) (logFile, error) {
	f, err := os.OpenFile(name, flag, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }
func (osFS) Remove(name string) error             { return os.Remove(name) }
func (osFS) SyncDir(dir string) error             { return syncDir(dir) }

func (osFS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (f osFile) Allocate(size int64) error { return preallocate(f.File, size) }

// syncDir makes the names in dir durable: what was created, renamed or
// removed in it.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sharedlog: sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sharedlog: sync directory %s: %w", dir, err)
	}
	return nil
}

// removeIfExists removes name from fsys, and says nothing if it is not
// there.
func removeIfExists(fsys logFS, name string) error {
	if err := fsys.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
