package sharedlog

import (
	"os"
	"syscall"
)

// preallocate allocates size bytes for f (reading as zeros), so that
// writes within them need not grow it. An error means only that it could
// not: a file system without fallocate grows the file as it is written.
func preallocate(f *os.File, size int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}
