//go:build !linux

package sharedlog

import (
	"errors"
	"os"
)

// preallocate does nothing where fallocate is not at hand: the file grows
// as it is written.
func preallocate(*os.File, int64) error { return errors.ErrUnsupported }
