// Package jepsen is ldcd's Jepsen-style harness: it builds the real ldcd
// binary, runs clusters of real processes, injects faults, records what
// clients saw, and checks the histories.
//
//   - cluster.go controls processes: start, kill -9, SIGSTOP/SIGCONT, stop,
//     restart, and fingerprints of every replica (the node's digest
//     endpoint) to check that replicas agree.
//   - net.go makes partitions on one machine: every node binds its own
//     loopback address and runs as its own system user, and iptables rules
//     matching the sender's user and the receiver's address drop the
//     traffic between them.
//   - nemesis.go schedules faults from a seed; workload.go drives the
//     register, bank and set workloads through the Go client; checker.go
//     checks histories (porcupine for linearizability, set and monotonic
//     read checkers); runner.go puts a run together and writes its
//     directory under jepsen/store/.
//
// The tests in this package are the node's and the placement's acceptance
// tests against real processes, and TestJepsen, the matrix (LDCD_JEPSEN=
// quick or full; see docs/JEPSEN.md).
package jepsen
