//go:build race

package server

// raceEnabled: the race detector's instrumentation inflates the heap
// figures that memory-bound tests compare.
const raceEnabled = true
