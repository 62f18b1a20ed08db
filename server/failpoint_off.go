//go:build !failpoints

package server

import "time"

// failpointDelay is zero in a release build: see failpoint_on.go.
func failpointDelay(string) time.Duration { return 0 }
