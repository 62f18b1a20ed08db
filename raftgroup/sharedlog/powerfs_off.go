//go:build !failpoints

package sharedlog

// defaultFS is the operating system's files (see powerfs_on.go for the
// failpoints build).
func defaultFS() logFS { return osFS{} }
