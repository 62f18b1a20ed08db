//go:build failpoints

package server

import (
	"os"
	"strings"
	"time"
)

// failpointDelay returns how long the failpoint name holds its caller up,
// in a binary built with -tags failpoints (the Jepsen harness builds one for
// the tests that must widen a window). The failpoints are read at each call
// from the file LDCD_FAILPOINTS_FILE names, "name=duration" separated by
// commas or lines, so a test turns them on and off while nodes run. Release
// builds have no failpoints.
func failpointDelay(name string) time.Duration {
	path := os.Getenv("LDCD_FAILPOINTS_FILE")
	if path == "" {
		return 0
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, fp := range strings.FieldsFunc(string(b), func(r rune) bool { return r == ',' || r == '\n' }) {
		k, v, ok := strings.Cut(strings.TrimSpace(fp), "=")
		if !ok || k != name {
			continue
		}
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return 0
}
