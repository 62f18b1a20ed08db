// Package jepsen is ldcd's Jepsen-style harness: it builds the real ldcd
// binary, runs clusters of real processes, injects faults and checks what
// clients saw.
//
// This first part controls processes on 127.0.0.1: start, kill -9, stop,
// restart, and fingerprint every replica through the node's digest endpoint.
// The acceptance tests of the node (jepsen/node_test.go) use it.
package jepsen
